// The read-only page of a shared conversation, <base>/s/<share id>. It needs no token and
// loads nothing of the chat page's sign-in: it reads the share id from its own address,
// fetches GET api/shares/<id> and shows the messages as the chat page does, replies as
// Markdown made safe by markdown.js, the user's words as plain text.

import { MarkdownView } from "./markdown.js";
import { copyButton } from "./copy.js";

export const MISSING = "This shared conversation does not exist or was revoked.";
const UNTITLED = "Untitled";
const STATUS_TEXT = { cancelled: "Reply cancelled", error: "Reply failed" };
const WHEN = new Intl.DateTimeFormat(undefined, { dateStyle: "long", timeStyle: "short" });

const $ = (id) => document.getElementById(id);

function element(tag, className, text) {
  const node = document.createElement(tag);
  node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** The share id: the last part of the page's path, /s/<id>. */
export function shareIdOf(pathname) {
  const last = pathname.split("/").pop() || "";
  try {
    return decodeURIComponent(last);
  } catch {
    return last;
  }
}

/** One message, read only, with the chat page's look. */
function messageNode(message) {
  const user = message.role === "user";
  const node = element("article", "message " + (user ? "user" : "assistant"));
  const meta = element("div", "message-meta");
  meta.append(element("span", "message-role", user ? "You" : "Assistant"));
  if (!user && message.model) meta.append(element("span", "message-detail muted", message.model));
  const label = STATUS_TEXT[message.status];
  if (label) meta.append(element("span", "badge " + message.status, label));
  const body = element("div", user ? "message-body plain" : "message-body markdown");
  if (user) body.textContent = message.content;
  else new MarkdownView(body).render(message.content, true);
  const actions = element("div", "message-actions");
  actions.append(copyButton(() => message.content, user ? "Copy message" : "Copy reply"));
  node.append(meta, body, actions);
  return node;
}

function show(share) {
  const title = share.title || UNTITLED;
  document.title = title + " · Shared chat";
  $("share-title").textContent = title;
  const when = new Date(share.created_at);
  const count = share.messages.length === 1 ? "1 message" : `${share.messages.length} messages`;
  $("share-meta").textContent = Number.isNaN(when.getTime())
    ? count
    : `Shared ${WHEN.format(when)} · ${count}`;
  $("share-messages").replaceChildren(...share.messages.map(messageNode));
  $("loading").hidden = true;
  $("share").hidden = false;
}

function problem(text) {
  document.title = "Shared chat";
  $("share-problem-text").textContent = text;
  $("loading").hidden = true;
  $("share").hidden = true;
  $("share-problem").hidden = false;
}

async function start() {
  const id = shareIdOf(location.pathname);
  let response;
  try {
    // Relative to /s/<id>: the API is beside the page's parent, wherever the app is mounted.
    response = await fetch("../api/shares/" + encodeURIComponent(id), {
      cache: "no-store",
      credentials: "omit",
    });
  } catch {
    problem("The server cannot be reached; reload the page to try again.");
    return;
  }
  if (response.status === 404) {
    problem(MISSING);
    return;
  }
  if (!response.ok) {
    problem(`The server answered ${response.status}; reload the page to try again.`);
    return;
  }
  show(await response.json());
}

start();

// Search across the user's conversations: a box at the top of the sidebar whose results
// take the place of the sessions list while it holds text. The server sends each excerpt as
// plain text with the [start, end) offsets of the hits; the hits become <mark> elements made
// here, and the text goes in as text, never as HTML.

import { api, AuthRequired } from "./api.js";

/** Wait this long after the last keystroke before asking the server. */
const DEBOUNCE_MS = 250;
const PAGE_SIZE = 20;
/** The name shown for a result whose session has no title. */
export const UNTITLED = "Untitled";
const ROLE_NAMES = { user: "You", assistant: "Assistant" };
const THIS_YEAR = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric" });
const OTHER_YEAR = new Intl.DateTimeFormat(undefined, { dateStyle: "medium" });

/** `snippet` as DOM nodes: text, with each `[start, end)` range of `matches` in a <mark>.
 * Offsets count code points, as the server counts characters, so an emoji before a hit
 * does not shift it. Ranges out of order are sorted; overlapping or out-of-range ones are
 * skipped rather than trusted. */
export function highlighted(snippet, matches) {
  const chars = Array.from(String(snippet));
  const ranges = (Array.isArray(matches) ? matches : [])
    .filter((r) => Array.isArray(r) && Number.isInteger(r[0]) && Number.isInteger(r[1]))
    .sort((a, b) => a[0] - b[0]);
  const nodes = [];
  let at = 0;
  for (const [start, end] of ranges) {
    if (start < at || end <= start || end > chars.length) continue;
    if (start > at) nodes.push(document.createTextNode(chars.slice(at, start).join("")));
    const mark = document.createElement("mark");
    mark.textContent = chars.slice(start, end).join("");
    nodes.push(mark);
    at = end;
  }
  if (at < chars.length) nodes.push(document.createTextNode(chars.slice(at).join("")));
  return nodes;
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** A short date: "Mar 4" this year, "Mar 4, 2023" before. */
function dateOf(text) {
  const date = new Date(text);
  if (Number.isNaN(date.getTime())) return "";
  return (date.getFullYear() === new Date().getFullYear() ? THIS_YEAR : OTHER_YEAR).format(date);
}

/** The search box and its results. `parts`: the box (`input`), the results' `panel`, its
 * `list`, `status` line and `more` button, and the `sessions` list the panel stands in for.
 * `handlers.open(sessionId, messageId)` is called when a result is chosen;
 * `handlers.error(error)` when the user must sign in again. */
export class Search {
  constructor(parts, handlers) {
    Object.assign(this, parts);
    this.handlers = handlers;
    this.query = "";
    this.cursor = null;
    this.generation = 0;
    this.timer = 0;
    this.input.addEventListener("input", () => this.typed());
    this.input.form?.addEventListener("submit", (event) => {
      event.preventDefault();
      this.typed(0);
    });
    this.input.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && this.input.value) {
        // Only the search: not the reply in progress, nor the sidebar on a phone.
        event.preventDefault();
        event.stopPropagation();
        this.clear();
      }
    });
    this.more.addEventListener("click", () => this.run(this.query, this.cursor));
  }

  /** The box changed: search for its text once the user pauses typing. */
  typed(delay = DEBOUNCE_MS) {
    clearTimeout(this.timer);
    this.generation += 1; // an answer to an older text is not shown
    const query = this.input.value.trim();
    if (!query) {
      this.close();
      return;
    }
    this.sessions.hidden = true;
    this.panel.hidden = false;
    if (this.list.children.length === 0) this.setStatus("Searching…");
    this.timer = setTimeout(() => this.run(query), delay);
  }

  /** Empty the box and show the sessions again. */
  clear() {
    this.input.value = "";
    this.close();
  }

  close() {
    clearTimeout(this.timer);
    this.generation += 1;
    this.query = "";
    this.cursor = null;
    this.list.replaceChildren();
    this.setStatus("");
    this.more.hidden = true;
    this.panel.hidden = true;
    this.sessions.hidden = false;
  }

  /** Ask for the results of `query`: the first page, or the one at `cursor`. */
  async run(query, cursor = null) {
    const generation = ++this.generation;
    const params = new URLSearchParams({ q: query, limit: String(PAGE_SIZE) });
    if (cursor) params.set("cursor", cursor);
    this.more.disabled = true;
    let page;
    try {
      page = await api("GET", "api/search?" + params);
    } catch (error) {
      if (generation !== this.generation) return;
      if (error instanceof AuthRequired) {
        this.handlers.error(error);
        return;
      }
      // A query the server refuses (422, too long) is said here, where it was typed.
      if (!cursor) this.list.replaceChildren();
      this.more.hidden = true;
      this.setStatus(error.message, true);
      return;
    } finally {
      this.more.disabled = false;
    }
    if (generation !== this.generation) return;
    if (!cursor) this.list.replaceChildren();
    this.query = query;
    this.cursor = page.next_cursor;
    this.list.append(...page.results.map((result) => this.item(result)));
    this.more.hidden = !page.next_cursor;
    this.setStatus(this.list.children.length ? "" : `No messages match “${query}”.`);
  }

  item(result) {
    const item = element("li", "search-item");
    const link = element("a", "search-result");
    link.href = "#session=" + encodeURIComponent(result.session_id);
    link.addEventListener("click", (event) => {
      // A click with a modifier opens the session in another tab, as links do.
      if (event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) {
        return;
      }
      event.preventDefault();
      for (const other of this.list.querySelectorAll("[aria-current]")) {
        other.removeAttribute("aria-current");
      }
      link.setAttribute("aria-current", "true");
      this.handlers.open(result.session_id, result.message_id);
    });
    const head = element("span", "search-head");
    head.append(
      element("span", "search-title", result.title || UNTITLED),
      element("span", "search-date muted", dateOf(result.created_at)),
    );
    const text = element("span", "search-text");
    text.append(...highlighted(result.snippet, result.matches));
    const snippet = element("span", "search-snippet");
    const role = element("span", "search-role", ROLE_NAMES[result.role] || result.role);
    snippet.append(role, text);
    link.append(head, snippet);
    item.append(link);
    return item;
  }

  setStatus(text, error = false) {
    this.status.textContent = text;
    this.status.hidden = !text;
    this.status.classList.toggle("error-text", error);
  }
}

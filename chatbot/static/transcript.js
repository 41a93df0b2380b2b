// The conversation on screen: messages from the history and from the socket, replies
// streamed into place, following the newest text unless the user scrolled up.

import { MarkdownView } from "./markdown.js";
import { copyButton } from "./copy.js";

// Nearer the bottom than this counts as "at the bottom": following resumes.
const BOTTOM_SLACK_PX = 40;
// Older history is fetched when the user scrolls this near the top.
const TOP_SLACK_PX = 160;

const STATUS_TEXT = {
  cancelled: "Reply cancelled",
  error: "Reply failed",
};

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** One message on screen. */
class Entry {
  constructor(role) {
    this.role = role;
    this.text = "";
    this.status = "complete";
    this.messageId = null;
    this.clientId = null;
    this.node = element("article", "message " + role);
    const meta = element("div", "message-meta");
    this.who = element("span", "message-role", role === "user" ? "You" : "Assistant");
    this.detail = element("span", "message-detail muted");
    this.badge = element("span", "badge");
    this.badge.hidden = true;
    meta.append(this.who, this.detail, this.badge);
    this.body = element("div", role === "user" ? "message-body plain" : "message-body markdown");
    this.actions = element("div", "message-actions");
    this.actions.append(copyButton(() => this.text, role === "user" ? "Copy your message" : "Copy reply"));
    this.error = element("div", "message-error");
    this.error.hidden = true;
    this.node.append(meta, this.body, this.error, this.actions);
    this.view = role === "assistant" ? new MarkdownView(this.body) : null;
    this.frame = 0;
  }

  /** Show `text`; while streaming, at most once per animation frame. */
  setText(text, { now = false, final = false } = {}) {
    this.text = text;
    if (this.view === null) {
      this.body.textContent = text;
      return;
    }
    if (now) {
      cancelAnimationFrame(this.frame);
      this.frame = 0;
      this.view.render(text, final);
      return;
    }
    if (this.frame === 0) {
      this.frame = requestAnimationFrame(() => {
        this.frame = 0;
        this.view.render(this.text);
        this.onRendered?.();
      });
    }
  }

  setStatus(status) {
    this.status = status;
    const label = STATUS_TEXT[status];
    this.badge.hidden = !label;
    this.badge.textContent = label || "";
    this.badge.className = "badge " + status;
    this.node.classList.toggle("streaming", status === "streaming");
  }

  setDetail(text) {
    this.detail.textContent = text;
  }

  /** Show an error under the message; `retry` adds a button that sends it again. */
  setError(message, retry) {
    this.error.hidden = false;
    this.error.replaceChildren(element("span", "error-text", message));
    if (retry) {
      const button = element("button", "button small", "Retry");
      button.type = "button";
      button.addEventListener("click", () => {
        this.clearError();
        retry();
      });
      this.error.append(button);
    }
  }

  clearError() {
    this.error.hidden = true;
    this.error.replaceChildren();
  }
}

export class Transcript {
  constructor(log, list, historyStatus, empty, jumpButton) {
    this.log = log;
    this.list = list;
    this.historyStatus = historyStatus;
    this.empty = empty;
    this.jump = jumpButton;
    this.following = true;
    this.lastTop = 0;
    this.onNearTop = null;
    this.reset();
    log.addEventListener("scroll", () => this.scrolled(), { passive: true });
    // A wheel or key turned up says "stop following" before the scroll itself lands (it is
    // smooth, over several frames, and a reply's next frame would snap it back).
    log.addEventListener("wheel", (event) => {
      if (event.ctrlKey) return;
      if (event.deltaY < 0) this.stopFollowing();
      // Already at the very bottom, a turn down moves nothing and fires no scroll: follow.
      else if (event.deltaY > 0 && this.fromBottom() <= BOTTOM_SLACK_PX) this.resumeFollowing();
    }, { passive: true });
    log.addEventListener("keydown", (event) => {
      if (["ArrowUp", "PageUp", "Home"].includes(event.key)) this.stopFollowing();
    });
    jumpButton.addEventListener("click", () => {
      this.following = true;
      this.toBottom();
    });
  }

  reset() {
    this.list.replaceChildren();
    this.entries = [];
    this.replies = new Map();
    this.messageIds = new Set();
    this.clientIds = new Set();
    this.following = true;
    this.lastTop = 0;
    this.jump.hidden = true;
    this.setHistoryStatus("");
    this.setBusy(false);
    this.updateEmpty();
  }

  updateEmpty(showWhenEmpty = this.showEmpty) {
    this.showEmpty = showWhenEmpty;
    this.empty.hidden = !(showWhenEmpty && this.entries.length === 0);
  }

  setBusy(busy) {
    this.log.setAttribute("aria-busy", busy ? "true" : "false");
  }

  setHistoryStatus(text) {
    this.historyStatus.hidden = !text;
    this.historyStatus.textContent = text;
  }

  stopFollowing() {
    // Nothing to scroll yet: keep following, or the reply would not be followed once it is.
    if (this.log.scrollHeight <= this.log.clientHeight) return;
    this.following = false;
    this.jump.hidden = false;
  }

  fromBottom() {
    return this.log.scrollHeight - this.log.scrollTop - this.log.clientHeight;
  }

  resumeFollowing() {
    this.following = true;
    this.jump.hidden = true;
  }

  scrolled() {
    const top = this.log.scrollTop;
    const fromBottom = this.fromBottom();
    if (top < this.lastTop - 1 && fromBottom > 1) {
      // Moved up, and not by a clamp (shorter content leaves the view at its very bottom).
      this.following = false;
    } else if (top > this.lastTop && fromBottom <= BOTTOM_SLACK_PX) {
      // Moved down to the bottom: follow again. Only a move down counts: the scroll event of
      // our own jump to the bottom arrives a frame late, after a wheel turned up may already
      // have said "stop following", and must not undo it.
      this.following = true;
    }
    this.lastTop = top;
    this.jump.hidden = this.following;
    if (top <= TOP_SLACK_PX && this.onNearTop) this.onNearTop();
  }

  /** Scroll to the newest text if the user has not scrolled away from it. */
  follow() {
    if (this.following) this.toBottom();
    else this.jump.hidden = false;
  }

  toBottom() {
    this.log.scrollTop = this.log.scrollHeight;
    this.lastTop = this.log.scrollTop;
    this.jump.hidden = true;
  }

  add(entry, { before = null } = {}) {
    entry.onRendered = () => this.follow();
    if (before) {
      this.list.insertBefore(entry.node, before.node);
      this.entries.splice(this.entries.indexOf(before), 0, entry);
    } else {
      this.list.append(entry.node);
      this.entries.push(entry);
    }
    this.updateEmpty();
    return entry;
  }

  /** A message the user just sent. */
  addUser(text, clientId) {
    const entry = new Entry("user");
    entry.clientId = clientId;
    this.clientIds.add(clientId);
    entry.setText(text);
    entry.node.classList.add("pending");
    this.add(entry);
    this.toBottom();
    this.following = true;
    return entry;
  }

  /** A page of stored messages (oldest first), above the ones shown, or below if none. */
  addHistory(messages, { older = false } = {}) {
    const first = older ? this.entries[0] ?? null : null;
    const height = this.log.scrollHeight;
    const top = this.log.scrollTop;
    for (const message of messages) {
      if (this.messageIds.has(message.id)) continue;
      if (message.role === "user" && message.client_id && this.clientIds.has(message.client_id)) continue;
      const entry = new Entry(message.role === "user" ? "user" : "assistant");
      entry.messageId = message.id;
      this.messageIds.add(message.id);
      if (message.client_id) {
        entry.clientId = message.client_id;
        this.clientIds.add(message.client_id);
      }
      if (message.role !== "user") entry.setDetail(message.model || message.backend || "");
      this.add(entry, { before: first });
      entry.setText(message.content, { now: true, final: true });
      entry.setStatus(message.status);
    }
    if (older) {
      // Keep what the user was looking at in place.
      this.log.scrollTop = top + (this.log.scrollHeight - height);
      this.lastTop = this.log.scrollTop;
    } else {
      this.toBottom();
    }
  }

  /** The oldest stored message's id, for `before=` paging. */
  oldestId() {
    for (const entry of this.entries) if (entry.messageId !== null) return entry.messageId;
    return null;
  }

  replyFor(key) {
    let entry = this.replies.get(key);
    if (!entry) {
      entry = this.add(new Entry("assistant"));
      entry.setStatus("streaming");
      this.replies.set(key, entry);
    }
    return entry;
  }

  /** A delta: more of the reply to `key` (the client id, "" for others' messages). */
  delta(key, text, replace) {
    const entry = this.replyFor(key);
    entry.setText(replace ? text : entry.text + text);
  }

  /** The final frame of a reply. */
  final(frame) {
    const key = frame.reply_to ?? "";
    if (frame.message_id !== undefined && this.messageIds.has(frame.message_id)) {
      // Already shown from the history: drop a streaming copy, if any.
      const streaming = this.replies.get(key);
      if (streaming) this.remove(streaming);
      this.replies.delete(key);
      return;
    }
    const entry = this.replyFor(key);
    this.replies.delete(key);
    if (frame.message_id !== undefined) {
      entry.messageId = frame.message_id;
      this.messageIds.add(frame.message_id);
    }
    entry.setDetail(frame.model || frame.backend || "");
    entry.setText(frame.message, { now: true, final: true });
    entry.setStatus(frame.status || "complete");
    this.sent(key);
    this.follow();
  }

  /** An error frame; attached to the message it answers when there is one. */
  error(frame, retry) {
    const error = frame.error || {};
    let message = error.message || error.code || "something went wrong";
    if (typeof error.retry_after === "number" && !message.includes(`${error.retry_after} s`)) {
      message += ` (wait ${error.retry_after} s before sending again)`;
    }
    const key = frame.reply_to ?? "";
    const streaming = this.replies.get(key);
    this.replies.delete(key);
    if (streaming) streaming.setStatus("error");
    const target = streaming || this.userEntry(key) || this.add(new Entry("assistant"));
    if (!streaming && !this.userEntry(key)) {
      target.who.textContent = "Error";
      target.node.classList.add("notice");
    }
    target.setError(message, error.retryable && retry ? retry : null);
    this.sent(key);
    this.follow();
  }

  userEntry(clientId) {
    if (!clientId) return null;
    return this.entries.find((e) => e.role === "user" && e.clientId === clientId) || null;
  }

  /** The message `clientId` was answered (or refused): no longer pending. */
  sent(clientId) {
    this.userEntry(clientId)?.node.classList.remove("pending");
  }

  remove(entry) {
    entry.node.remove();
    this.entries.splice(this.entries.indexOf(entry), 1);
    this.updateEmpty();
  }

  /** Whether a reply is streaming into the transcript now. */
  get streaming() {
    return this.replies.size > 0;
  }
}

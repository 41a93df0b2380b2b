// The conversation on screen: messages from the history and from the socket, replies
// streamed into place, following the newest text unless the user scrolled up. It shows one
// branch of the conversation's tree; a user message can be edited (a new branch from it), a
// reply regenerated, and a message with other versions carries arrows to switch to them.

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

/** A wait in words: "45 s", "12 min", "4 h 59 min", "17 d 3 h"; rounded up. */
export function duration(seconds) {
  if (seconds < 120) return `${seconds} s`;
  const minutes = Math.ceil(seconds / 60);
  if (minutes < 120) return `${minutes} min`;
  if (minutes < 48 * 60) {
    const rest = minutes % 60;
    return rest ? `${Math.floor(minutes / 60)} h ${rest} min` : `${minutes / 60} h`;
  }
  const hours = Math.ceil(minutes / 60);
  const rest = hours % 24;
  return rest ? `${Math.floor(hours / 24)} d ${rest} h` : `${hours / 24} d`;
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function button(className, text, label) {
  const node = element("button", className, text);
  node.type = "button";
  if (label) node.setAttribute("aria-label", label);
  return node;
}

/** One message on screen; `owner` is the Transcript, whose hooks its buttons call. */
class Entry {
  constructor(role, owner) {
    this.role = role;
    this.owner = owner;
    this.text = "";
    this.status = "complete";
    this.messageId = null;
    this.clientId = null;
    // What the server says of it once known: its parent (null for a first message; undefined
    // while unknown) and its versions, the ids of all messages with the same parent.
    this.parentId = undefined;
    this.siblings = null;
    // For a reply streamed here: the client id it answers ("" for another client's message).
    this.replyKey = null;
    this.locked = false;
    this.form = null;
    this.node = element("article", "message " + role);
    const meta = element("div", "message-meta");
    this.who = element("span", "message-role", role === "user" ? "You" : "Assistant");
    this.detail = element("span", "message-detail muted");
    this.badge = element("span", "badge");
    this.badge.hidden = true;
    meta.append(this.who, this.detail, this.badge);
    this.body = element("div", role === "user" ? "message-body plain" : "message-body markdown");
    this.actions = element("div", "message-actions");
    this.versions = this.versionArrows();
    this.actions.append(this.versions);
    this.actions.append(copyButton(() => this.text, role === "user" ? "Copy your message" : "Copy reply"));
    if (role === "user") {
      this.editButton = button("message-action", "Edit", "Edit your message");
      this.editButton.addEventListener("click", () => this.edit());
      this.actions.append(this.editButton);
    } else {
      this.regenerateButton = button("message-action", "Regenerate", "Regenerate reply");
      this.regenerateButton.addEventListener("click", () => {
        if (!this.locked) this.owner.onRegenerate?.(this);
      });
      this.actions.append(this.regenerateButton);
    }
    this.error = element("div", "message-error");
    this.error.hidden = true;
    this.node.append(meta, this.body, this.error, this.actions);
    this.view = role === "assistant" ? new MarkdownView(this.body) : null;
    this.frame = 0;
    this.updateControls();
  }

  /** "‹ 2 / 3 ›": the other versions of this message, shown when it has some. */
  versionArrows() {
    const group = element("span", "versions");
    group.hidden = true;
    this.previous = button("version-button", "‹", "Previous version");
    this.counter = element("span", "version-count");
    this.next = button("version-button", "›", "Next version");
    this.previous.addEventListener("click", () => this.switchVersion(-1));
    this.next.addEventListener("click", () => this.switchVersion(1));
    group.append(this.previous, this.counter, this.next);
    return group;
  }

  switchVersion(step) {
    const index = this.siblings ? this.siblings.indexOf(this.messageId) : -1;
    const target = index < 0 ? undefined : this.siblings[index + step];
    if (target !== undefined && !this.locked) this.owner.onSwitch?.(target);
  }

  /** The stored message `message` (from the HTTP API) is what this entry shows. */
  show(message) {
    this.messageId = message.id;
    if (message.client_id) this.clientId = message.client_id;
    // Unknown unless the server says: an edit of a message with no parent starts a new root.
    this.parentId = "parent_id" in message ? message.parent_id : undefined;
    this.siblings = Array.isArray(message.siblings) ? message.siblings : [message.id];
    if (this.role !== "user") this.setDetail(message.model || message.backend || "");
    if (message.content !== this.text || this.status === "streaming") {
      this.setText(message.content, { now: true, final: true });
    }
    if (message.status !== this.status) this.setStatus(message.status);
    this.updateControls();
  }

  /** Whether the server has told all it knows of this message (id, parent, versions). */
  get settled() {
    return this.messageId !== null && this.parentId !== undefined && this.siblings !== null;
  }

  /** While a reply is awaited, nothing may start another: edit, regenerate, switch. */
  setLocked(locked) {
    if (this.locked === locked) return;
    this.locked = locked;
    this.updateControls();
  }

  updateControls() {
    const siblings = this.siblings || [];
    const index = siblings.indexOf(this.messageId);
    this.versions.hidden = !(siblings.length > 1 && index >= 0);
    this.counter.textContent = `${index + 1} / ${siblings.length}`;
    this.previous.disabled = this.locked || index <= 0;
    this.next.disabled = this.locked || index >= siblings.length - 1;
    if (this.editButton) {
      // Only a stored message whose parent is known can be edited.
      this.editButton.hidden = this.messageId === null || this.parentId === undefined;
      this.editButton.disabled = this.locked;
    }
    if (this.regenerateButton) {
      this.regenerateButton.hidden = this.messageId === null;
      this.regenerateButton.disabled = this.locked;
    }
    if (this.form) this.form.querySelector("[type=submit]").disabled = this.locked;
  }

  /** Edit in place: the message becomes a text box; Enter or Save sends the new text as a
   * new version of it, Escape or Cancel puts it back. */
  edit() {
    if (this.form || this.locked) return;
    const form = element("form", "edit-form");
    const box = element("textarea", "edit-box");
    box.value = this.text;
    box.rows = 2;
    box.setAttribute("aria-label", "Edit message");
    const buttons = element("div", "edit-buttons");
    const cancel = button("button small", "Cancel");
    const save = element("button", "button small primary", "Save");
    save.type = "submit";
    buttons.append(cancel, save);
    form.append(box, buttons);
    this.form = form;
    this.node.classList.add("editing");
    this.body.hidden = true;
    this.actions.hidden = true;
    this.node.insertBefore(form, this.error);
    const close = () => {
      form.remove();
      this.form = null;
      this.node.classList.remove("editing");
      this.body.hidden = false;
      this.actions.hidden = false;
    };
    const abandon = () => {
      close();
      this.editButton.focus();
    };
    const commit = () => {
      const text = box.value;
      if (!text.trim() || this.locked) return;
      close();
      this.owner.onEdit?.(this, text);
    };
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      commit();
    });
    cancel.addEventListener("click", abandon);
    box.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        commit();
      } else if (event.key === "Escape") {
        // Not the page's Escape (which stops a reply): this one only leaves the edit.
        event.preventDefault();
        event.stopPropagation();
        abandon();
      }
    });
    this.updateControls();
    box.focus();
    box.setSelectionRange(box.value.length, box.value.length);
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
    this.locked = false;
    this.onNearTop = null;
    // What the user asked for, for the page to send: onEdit(entry, text), onRegenerate(entry)
    // and onSwitch(messageId), the version to show.
    this.onEdit = null;
    this.onRegenerate = null;
    this.onSwitch = null;
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
      if (event.target.closest?.(".edit-form")) return; // moving the caret in an edit
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

  /** A new entry, not shown yet. */
  entry(role) {
    const entry = new Entry(role, this);
    entry.onRendered = () => this.follow();
    entry.setLocked(this.locked);
    return entry;
  }

  add(entry, { before = null } = {}) {
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
    const entry = this.entry("user");
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
      const entry = this.entry(message.role === "user" ? "user" : "assistant");
      this.messageIds.add(message.id);
      if (message.client_id) this.clientIds.add(message.client_id);
      this.add(entry, { before: first });
      entry.show(message);
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
      entry = this.add(this.entry("assistant"));
      entry.replyKey = key;
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
      this.sent(key);
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
    entry.updateControls();
    this.sent(key);
    this.follow();
  }

  /** An error frame; attached to the message it answers when there is one. True when it
   * ended a reply that was streaming (which the server stored, with what it had). */
  error(frame, retry) {
    const error = frame.error || {};
    let message = error.message || error.code || "something went wrong";
    if (typeof error.retry_after === "number" && !message.includes(`${error.retry_after} s`)) {
      message += ` (wait ${duration(error.retry_after)} before sending again)`;
    }
    const key = frame.reply_to ?? "";
    const streaming = this.replies.get(key);
    this.replies.delete(key);
    if (streaming) streaming.setStatus("error");
    const target = streaming || this.userEntry(key) || this.add(this.entry("assistant"));
    if (!streaming && !this.userEntry(key)) {
      target.who.textContent = "Error";
      target.node.classList.add("notice");
    }
    target.setError(message, error.retryable && retry ? retry : null);
    this.sent(key);
    this.follow();
    return Boolean(streaming);
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

  // Branches -------------------------------------------------------------------------------

  /** No edit, regenerate or switch while `locked` (a reply is awaited). */
  setLocked(locked) {
    this.locked = locked;
    for (const entry of this.entries) entry.setLocked(locked);
  }

  /** The id of the newest stored message shown: the leaf of the branch on screen. */
  leafId() {
    for (let i = this.entries.length - 1; i >= 0; i -= 1) {
      if (this.entries[i].messageId !== null) return this.entries[i].messageId;
    }
    return null;
  }

  /** How many messages at the end the server has not yet described (ids, versions). */
  unsettled() {
    let count = 0;
    for (let i = this.entries.length - 1; i >= 0 && !this.entries[i].settled; i -= 1) count += 1;
    return count;
  }

  /** Whether the stored `message` is on screen. */
  shows(message) {
    return this.entries.some(
      (e) =>
        e.messageId === message.id ||
        (e.messageId === null && e.role === "user" && Boolean(message.client_id) && e.clientId === message.client_id),
    );
  }

  /** Take `entry` and everything below it off the screen (a new version replaces them). */
  truncate(entry) {
    const index = this.entries.indexOf(entry);
    if (index < 0) return;
    for (const gone of this.entries.splice(index)) {
      gone.node.remove();
      cancelAnimationFrame(gone.frame);
    }
    this.reindex();
    this.updateEmpty();
  }

  /**
   * Show `messages`, the newest messages of the current branch (root to leaf, from the HTTP
   * API), keeping on screen what is already there. `complete`: they are the whole branch;
   * otherwise they continue what is shown above their first message, or, when that is not
   * shown, replace everything (`fromRoot` in the result: the older pages are to be read
   * again). A stored message shown that is not on the branch goes. Of the messages the server
   * does not hold: with `keepLocal`, all stay where they were (one refused, with its error);
   * without, a message waiting for its answer and a reply streaming stay, at the end.
   */
  showBranch(messages, { complete, keepLocal }) {
    const old = this.entries;
    const anchor = complete || messages.length === 0 ? -1 : old.findIndex((e) => this.sameMessage(e, messages[0]));
    const prefix = anchor > 0 ? old.slice(0, anchor) : [];
    const region = old.slice(prefix.length);
    const byId = new Map();
    const byClient = new Map();
    const byReply = new Map();
    for (const entry of region) {
      if (entry.messageId !== null) byId.set(entry.messageId, entry);
      else if (entry.role === "user" && entry.clientId) byClient.set(entry.clientId, entry);
      else if (entry.role === "assistant" && entry.replyKey) byReply.set(entry.replyKey, entry);
    }
    // A stored reply answers a client id: its own (a regeneration) or its user message's.
    const clientOf = new Map(messages.map((m) => [m.id, m.client_id]));
    const used = new Set();
    const shown = messages.map((message) => {
      let entry = byId.get(message.id);
      if (!entry && message.role === "user" && message.client_id) entry = byClient.get(message.client_id);
      if (!entry && message.role === "assistant") {
        entry = byReply.get(message.client_id || clientOf.get(message.in_reply_to));
      }
      if (!entry || used.has(entry)) entry = this.entry(message.role === "user" ? "user" : "assistant");
      used.add(entry);
      entry.show(message);
      return entry;
    });
    // The messages the server does not hold, placed after what they followed, or at the end.
    const after = new Map();
    const leading = [];
    const trailing = [];
    let previous = null;
    for (const entry of region) {
      if (used.has(entry)) {
        previous = entry;
      } else if (entry.messageId === null) {
        if (keepLocal) {
          if (previous === null) leading.push(entry);
          else after.set(previous, [...(after.get(previous) || []), entry]);
        } else if (this.live(entry)) {
          trailing.push(entry);
        }
      }
    }
    const next = [...prefix, ...leading];
    for (const entry of shown) next.push(entry, ...(after.get(entry) || []));
    next.push(...trailing);
    this.replace(next);
    return { fromRoot: anchor <= 0 };
  }

  sameMessage(entry, message) {
    if (entry.messageId !== null) return entry.messageId === message.id;
    return entry.role === "user" && Boolean(message.client_id) && entry.clientId === message.client_id;
  }

  /** A message still waiting for its answer, or a reply still streaming. */
  live(entry) {
    return entry.node.classList.contains("pending") || [...this.replies.values()].includes(entry);
  }

  /** Show `next` in place of the entries, moving as few elements as it can. */
  replace(next) {
    const keep = new Set(next);
    for (const entry of this.entries) {
      if (!keep.has(entry)) {
        entry.node.remove();
        cancelAnimationFrame(entry.frame);
      }
    }
    let cursor = this.list.firstChild;
    for (const entry of next) {
      if (entry.node === cursor) cursor = cursor.nextSibling;
      else this.list.insertBefore(entry.node, cursor);
    }
    this.entries = next;
    this.reindex();
    this.updateEmpty();
    if (this.following) this.toBottom();
  }

  /** The ids shown, and the replies streaming, after entries came or went. */
  reindex() {
    this.messageIds = new Set(this.entries.filter((e) => e.messageId !== null).map((e) => e.messageId));
    this.clientIds = new Set(this.entries.filter((e) => e.role === "user" && e.clientId).map((e) => e.clientId));
    for (const [key, entry] of this.replies) {
      // Gone, or now a stored message: no longer streaming.
      if (!this.entries.includes(entry) || entry.status !== "streaming") this.replies.delete(key);
    }
  }
}

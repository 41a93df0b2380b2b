// The sidebar: the user's sessions, most recent first, more as the list scrolls; rename
// and delete in place. Every title goes in as text, never as HTML.

import { api } from "./api.js";
import { icon } from "./icons.js";

const PAGE_SIZE = 30;
/** The name shown for a session without a title. */
export const UNTITLED = "New chat";

export function titleOf(session) {
  return session && session.title ? session.title : UNTITLED;
}

export class Sidebar {
  constructor(list, status, dialog, handlers) {
    this.list = list;
    this.status = status;
    this.dialog = dialog;
    this.handlers = handlers;
    this.sessions = new Map();
    this.items = new Map();
    this.cursor = null;
    this.loading = false;
    this.activeId = null;
    this.sentinel = document.createElement("li");
    this.sentinel.className = "sentinel";
    this.sentinel.setAttribute("aria-hidden", "true");
    this.observer = new IntersectionObserver(
      (entries) => {
        if (entries.some((e) => e.isIntersecting)) this.loadMore();
      },
      { root: list.parentElement, rootMargin: "0px 0px 200px 0px" },
    );
  }

  /** Load the first page, replacing what is shown. */
  async load() {
    this.clear();
    await this.loadMore();
  }

  /** Show nothing (signed out). */
  clear() {
    this.list.replaceChildren();
    this.sessions.clear();
    this.items.clear();
    this.cursor = null;
    this.done = false;
    this.setStatus("");
  }

  async loadMore() {
    if (this.loading || this.done) return;
    this.loading = true;
    this.setStatus(this.sessions.size ? "Loading more…" : "Loading…");
    try {
      const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
      if (this.cursor) query.set("cursor", this.cursor);
      const page = await api("GET", "api/sessions?" + query);
      for (const session of page.sessions) {
        if (!this.sessions.has(session.session_id)) this.append(session);
      }
      this.cursor = page.next_cursor;
      this.done = !page.next_cursor;
      this.setStatus(this.sessions.size ? "" : "No chats yet.");
    } catch (error) {
      this.setStatus("Could not load the chats: " + error.message);
      this.handlers.error(error);
    } finally {
      this.loading = false;
    }
    this.sentinel.remove();
    if (!this.done) {
      this.list.append(this.sentinel);
      // Observe again: a sentinel still in view after this page fires once more.
      this.observer.unobserve(this.sentinel);
      this.observer.observe(this.sentinel);
    }
  }

  setStatus(text) {
    this.status.textContent = text;
    this.status.hidden = !text;
  }

  /** A session created or changed: show it first (most recent). */
  upsert(session) {
    this.sessions.set(session.session_id, session);
    const item = this.items.get(session.session_id) || this.item(session);
    this.fill(item, session);
    this.list.prepend(item);
    this.setStatus("");
  }

  /** Move a session to the top after it got a new message. */
  touch(sessionId) {
    const item = this.items.get(sessionId);
    if (item && item !== this.list.firstElementChild) this.list.prepend(item);
  }

  append(session) {
    this.sessions.set(session.session_id, session);
    const item = this.item(session);
    this.fill(item, session);
    this.list.insertBefore(item, this.sentinel.parentElement ? this.sentinel : null);
  }

  get(sessionId) {
    return this.sessions.get(sessionId) || null;
  }

  setActive(sessionId) {
    this.activeId = sessionId;
    for (const [id, item] of this.items) {
      const link = item.querySelector("a");
      if (id === sessionId) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
  }

  item(session) {
    const id = session.session_id;
    const item = document.createElement("li");
    item.className = "session";
    const link = document.createElement("a");
    link.href = "#session=" + encodeURIComponent(id);
    link.className = "session-link";
    link.addEventListener("click", () => this.handlers.select(id));
    const rename = document.createElement("button");
    rename.type = "button";
    rename.className = "icon-button small rename";
    rename.append(icon("edit"));
    rename.addEventListener("click", () => this.rename(id));
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "icon-button small delete";
    remove.append(icon("trash"));
    remove.addEventListener("click", () => this.remove(id));
    item.append(link, rename, remove);
    this.items.set(id, item);
    if (id === this.activeId) link.setAttribute("aria-current", "page");
    return item;
  }

  fill(item, session) {
    const title = titleOf(session);
    const link = item.querySelector("a");
    link.textContent = title;
    link.title = title;
    item.querySelector(".rename").setAttribute("aria-label", "Rename " + title);
    item.querySelector(".delete").setAttribute("aria-label", "Delete " + title);
  }

  /** Rename in place: the title becomes a text field; Enter saves, Escape cancels. */
  rename(sessionId) {
    const item = this.items.get(sessionId);
    const session = this.sessions.get(sessionId);
    if (!item || !session || item.querySelector("form")) return;
    const link = item.querySelector("a");
    const form = document.createElement("form");
    form.className = "rename-form";
    const input = document.createElement("input");
    input.type = "text";
    input.value = session.title || "";
    input.maxLength = 200;
    input.setAttribute("aria-label", "Title");
    input.placeholder = UNTITLED;
    form.append(input);
    link.hidden = true;
    item.insertBefore(form, link);
    input.focus();
    input.select();
    let finished = false;
    const finish = async (save) => {
      if (finished) return;
      finished = true;
      const title = input.value.trim() || null;
      form.remove();
      link.hidden = false;
      if (!save || title === (session.title || null)) return;
      try {
        const updated = await api("PATCH", "api/sessions/" + encodeURIComponent(sessionId), { title });
        this.sessions.set(sessionId, updated);
        this.fill(item, updated);
        this.handlers.renamed(updated);
      } catch (error) {
        this.handlers.error(error);
      }
    };
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      finish(true);
    });
    input.addEventListener("keydown", (event) => {
      if (event.key === "Escape") {
        event.preventDefault();
        event.stopPropagation();
        finish(false);
        link.focus();
      }
    });
    input.addEventListener("blur", () => finish(true));
  }

  /** Delete after the user confirmed it in a dialog. */
  remove(sessionId) {
    const session = this.sessions.get(sessionId);
    if (!session) return;
    this.dialog.querySelector("#confirm-delete-text").textContent =
      `“${titleOf(session)}” and all its messages will be deleted. This cannot be undone.`;
    this.dialog.returnValue = "";
    this.dialog.addEventListener(
      "close",
      async () => {
        if (this.dialog.returnValue !== "delete") return;
        try {
          await api("DELETE", "api/sessions/" + encodeURIComponent(sessionId));
        } catch (error) {
          if (error.status !== 404) {
            this.handlers.error(error);
            return;
          }
        }
        this.drop(sessionId);
        this.handlers.deleted(sessionId);
      },
      { once: true },
    );
    this.dialog.showModal();
  }

  /** Take a session off the list (deleted here or elsewhere). */
  drop(sessionId) {
    this.items.get(sessionId)?.remove();
    this.items.delete(sessionId);
    this.sessions.delete(sessionId);
    if (this.sessions.size === 0 && this.done) this.setStatus("No chats yet.");
  }
}

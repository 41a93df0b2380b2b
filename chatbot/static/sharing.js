// Shared links of the open session: "Share" makes a read-only link to the conversation as
// it is now, and the dialog lists the session's links, each of which can be revoked.

import { api, AuthRequired } from "./api.js";
import { copyButton } from "./copy.js";

const WHEN = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });

function element(tag, className, text) {
  const node = document.createElement(tag);
  node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function whenOf(text) {
  const date = new Date(text);
  return Number.isNaN(date.getTime()) ? "" : WHEN.format(date);
}

function sharesPath(sessionId) {
  return `api/sessions/${encodeURIComponent(sessionId)}/shares`;
}

/** The "Share this chat" dialog. `currentSession()` says which session is open;
 * `report(error)` shows what went wrong outside the dialog. */
export class ShareDialog {
  constructor(dialog, currentSession, report) {
    this.dialog = dialog;
    this.currentSession = currentSession;
    this.report = report;
    this.sessionId = null;
    this.linkRow = dialog.querySelector(".share-link-row");
    this.input = dialog.querySelector("#share-link");
    this.list = dialog.querySelector("#share-list");
    this.status = dialog.querySelector("#share-status");
    this.linkRow.append(copyButton(() => this.input.value, "Copy link"));
  }

  /** Make a new link to the open session and show it, with the session's other links. */
  async share() {
    const sessionId = this.currentSession();
    if (sessionId === null) return;
    let share;
    try {
      share = await api("POST", sharesPath(sessionId));
    } catch (error) {
      this.report(error);
      return;
    }
    if (sessionId !== this.currentSession()) return;
    this.sessionId = sessionId;
    this.input.value = share.url;
    this.linkRow.hidden = false;
    this.list.replaceChildren();
    this.setStatus("Loading the links…");
    if (!this.dialog.open) this.dialog.showModal();
    this.input.focus();
    this.input.select();
    await this.load(sessionId);
  }

  async load(sessionId) {
    let shares;
    try {
      shares = (await api("GET", sharesPath(sessionId))).shares;
    } catch (error) {
      if (error instanceof AuthRequired) {
        this.dialog.close();
        this.report(error);
      } else {
        this.setStatus("Could not list the links: " + error.message);
      }
      return;
    }
    if (sessionId !== this.sessionId) return;
    // Newest first, as the server lists them: the link just made at the top.
    this.list.replaceChildren(...shares.map((share) => this.item(share)));
    this.updateEmpty();
  }

  item(share) {
    const item = element("li", "share-item");
    const about = element("div", "share-about");
    const count = share.message_count === 1 ? "1 message" : `${share.message_count} messages`;
    const current = share.url === this.input.value ? " · this link" : "";
    about.append(
      element("span", "share-when", `${whenOf(share.created_at)} · ${count}${current}`),
      element("span", "share-url muted small", share.url),
    );
    const revoke = element("button", "button small", "Revoke");
    revoke.type = "button";
    revoke.addEventListener("click", () => this.revoke(share, item, revoke));
    item.append(about, revoke);
    return item;
  }

  async revoke(share, item, button) {
    const sessionId = this.sessionId;
    button.disabled = true;
    try {
      await api("DELETE", `${sharesPath(sessionId)}/${encodeURIComponent(share.share_id)}`);
    } catch (error) {
      // Revoked already (elsewhere): gone all the same.
      if (error.status !== 404) {
        button.disabled = false;
        if (error instanceof AuthRequired) {
          this.dialog.close();
          this.report(error);
        } else {
          this.setStatus("Could not revoke the link: " + error.message);
        }
        return;
      }
    }
    item.remove();
    if (share.url === this.input.value) {
      this.input.value = "";
      this.linkRow.hidden = true;
    }
    this.updateEmpty(share.url);
  }

  updateEmpty(revoked = null) {
    if (this.list.children.length === 0) {
      this.setStatus("No links to this chat: nobody can read it without signing in.");
    } else if (revoked !== null) {
      this.setStatus("Revoked: that link no longer opens the chat.");
    } else {
      this.setStatus("");
    }
  }

  setStatus(text) {
    this.status.textContent = text;
    this.status.hidden = !text;
  }
}

// Export and import: the open session downloaded as JSON or Markdown, and conversations
// uploaded from a file (this server's export, or ChatGPT's conversations.json).

import { request } from "./api.js";

/** The file name a Content-Disposition header gives (RFC 6266: `filename*=UTF-8''...` is
 * preferred to `filename="..."`), or `fallback` when it gives none. */
export function filenameFrom(disposition, fallback) {
  const header = disposition || "";
  const extended = /filename\*\s*=\s*UTF-8''([^;]+)/i.exec(header);
  let name = null;
  if (extended) {
    try {
      name = decodeURIComponent(extended[1].trim());
    } catch {
      name = null;
    }
  }
  if (name === null) {
    const plain = /filename\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;\s]+))/i.exec(header);
    if (plain) name = plain[1] !== undefined ? plain[1].replace(/\\(.)/g, "$1") : plain[2];
  }
  // A name is a name, not a path.
  name = name ? name.replace(/[/\\]/g, "_").trim() : "";
  return name || fallback;
}

/** Save `blob` as a file named `name`, as a link with `download` would. */
function save(blob, name) {
  const url = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = url;
  link.download = name;
  link.hidden = true;
  document.body.append(link);
  link.click();
  link.remove();
  // Not at once: the browser reads the blob after this click returns.
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

/** Download session `sessionId` as `format`, "json" or "markdown". The request carries the
 * token, so a plain link cannot do it: the file is fetched, then saved from memory. */
export async function download(sessionId, format) {
  const extension = format === "markdown" ? "md" : "json";
  const id = encodeURIComponent(sessionId);
  const response = await request("GET", `api/sessions/${id}/export?format=${format}`);
  const blob = await response.blob();
  const fallback = `chatbot-${sessionId}.${extension}`;
  save(blob, filenameFrom(response.headers.get("Content-Disposition"), fallback));
}

/** The "Export" menu (a <details> element) of the open session. `currentSession()` says
 * which one is open; `report(error)` shows what went wrong. */
export class ExportMenu {
  constructor(menu, currentSession, report) {
    this.menu = menu;
    for (const button of menu.querySelectorAll("button[data-format]")) {
      button.addEventListener("click", async () => {
        menu.open = false;
        const id = currentSession();
        if (id === null) return;
        try {
          await download(id, button.dataset.format);
        } catch (error) {
          report(error);
        }
      });
    }
    // Closes as menus do: on Escape, and on a click anywhere else.
    menu.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && menu.open) {
        event.preventDefault();
        menu.open = false;
        menu.querySelector("summary").focus();
      }
    });
    document.addEventListener("click", (event) => {
      if (menu.open && !menu.contains(event.target)) menu.open = false;
    });
  }
}

/** Upload `file` to be imported; resolves to the new sessions, in the file's order. */
export async function importFile(file) {
  const response = await request("POST", "api/sessions/import", {
    body: file,
    type: "application/json",
  });
  const body = await response.json();
  return body.sessions;
}

/** The "Import" button and its file input. `handlers.imported(sessions)` receives the new
 * sessions; `handlers.error(error)` what went wrong, in the server's words. */
export class Importer {
  constructor(button, input, handlers) {
    this.button = button;
    this.input = input;
    this.handlers = handlers;
    button.addEventListener("click", () => input.click());
    input.addEventListener("change", () => {
      const file = input.files && input.files[0];
      // Cleared, so that choosing the same file again is a change too.
      input.value = "";
      if (file) this.upload(file);
    });
  }

  async upload(file) {
    const label = this.button.textContent;
    this.button.disabled = true;
    this.button.textContent = "Importing…";
    try {
      this.handlers.imported(await importFile(file));
    } catch (error) {
      this.handlers.error(error);
    } finally {
      this.button.disabled = false;
      this.button.textContent = label;
    }
  }
}

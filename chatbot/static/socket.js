// The chat socket of one session: it reconnects with backoff when the connection drops,
// picks up the reply in progress (?stream=1 sends the text so far), and keeps an outbox:
// every message carries a client id and is sent again, with that id, after a reconnect
// until its answer arrives. The server answers each id once, so nothing runs twice.
// It asks for the conversation's branch and title frames too (?conversation_events=1).

const BACKOFF_MS = [250, 500, 1000, 2000, 4000, 8000];
const MAX_BACKOFF_MS = 10_000;
const TOO_MANY_BACKOFF_MS = 15_000;
// The server closes sockets on which the client sends nothing for a while (default 300 s);
// a ping while a long reply is generated keeps them open.
const KEEPALIVE_MS = 60_000;

/** A client id: unique, and random enough to be unguessable. */
export function newClientId() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return "c-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** The socket URL for a session, relative to the page, so a mount prefix is kept. */
export function socketUrl(sessionId) {
  const url = new URL("ws/chat/", location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  const query = { session_id: sessionId, stream: "1", conversation_events: "1" };
  url.search = new URLSearchParams(query).toString();
  url.hash = "";
  return url.href;
}

function jitter(ms) {
  return Math.round(ms * (0.8 + Math.random() * 0.4));
}

/**
 * Events, as methods of `handlers`:
 * - frame(frame, {replace}): a frame from the server; `replace` is true for the first delta
 *   of a reply since the socket opened (the text so far, which replaces what is shown);
 * - state(name, detail): "connecting", "open" (detail: {again}, true when the socket was
 *   open before: frames may have been missed meanwhile), "reconnecting" (detail: {attempt,
 *   reason}), "idle" (closed by the server for inactivity; reopens on the next send) or
 *   "closed";
 * - auth(): the token was refused or expired and no fresher one exists; call resume() once
 *   the user has signed in again;
 * - gone(): the session does not exist (any more);
 * - fatal(message): the server will never accept this page's socket (origin refused).
 */
export class Connection {
  constructor(sessionId, getToken, handlers) {
    this.sessionId = sessionId;
    this.getToken = getToken;
    this.handlers = handlers;
    this.outbox = new Map();
    this.socket = null;
    this.attempt = 0;
    this.timer = null;
    this.keepalive = null;
    this.stopped = false;
    this.waitingForAuth = false;
    this.idle = false;
    this.seen = new Set();
    // Why the connection was lost (the server's close reason), while reconnecting.
    this.outage = "";
    // How many times a socket opened, to tell a reopening from the first.
    this.openings = 0;
    this.cancelOnOpen = false;
  }

  /** Open the socket. */
  start() {
    this.open();
  }

  /** Whether a message is still waiting for its answer. */
  get pending() {
    return this.outbox.size > 0;
  }

  /** Send a message or a regenerate frame (`payload` has an `id`); it stays in the outbox
   * until answered. */
  send(payload) {
    this.outbox.set(payload.id, payload);
    if (this.isOpen) this.write(payload);
    else if (this.idle) this.open();
    this.updateKeepalive();
  }

  /** Stop the reply in progress; while reconnecting, as soon as the socket is back. */
  cancel() {
    if (this.isOpen) this.write({ type: "cancel" });
    else this.cancelOnOpen = true;
  }

  /** Stop waiting for an answer to `id` (the user gave up on it). */
  forget(id) {
    this.outbox.delete(id);
    this.updateKeepalive();
  }

  /** Reconnect after the user signed in again. */
  resume() {
    if (this.stopped) return;
    this.waitingForAuth = false;
    this.attempt = 0;
    if (!this.isOpen) this.open();
  }

  /** Reconnect now rather than at the end of the backoff (the network came back). */
  retryNow() {
    if (this.stopped || this.waitingForAuth || this.isOpen || this.timer === null) return;
    clearTimeout(this.timer);
    this.timer = null;
    this.open();
  }

  /** Close for good (switching to another session, signing out). */
  close() {
    this.stopped = true;
    clearTimeout(this.timer);
    clearInterval(this.keepalive);
    if (this.socket !== null) {
      const socket = this.socket;
      this.socket = null;
      socket.close(1000);
    }
    this.handlers.state("closed");
  }

  get isOpen() {
    return this.socket !== null && this.socket.readyState === WebSocket.OPEN;
  }

  write(payload) {
    this.socket.send(JSON.stringify(payload));
  }

  open() {
    if (this.stopped) return;
    this.timer = null;
    this.idle = false;
    const token = this.getToken();
    if (token === null) {
      this.waitingForAuth = true;
      this.handlers.auth();
      return;
    }
    this.handlers.state(this.attempt === 0 ? "connecting" : "reconnecting", {
      attempt: this.attempt,
      reason: this.outage,
    });
    const socket = new WebSocket(socketUrl(this.sessionId), ["chatbot.v1", "bearer." + token]);
    this.socket = socket;
    this.usedToken = token;
    let opened = false;
    socket.addEventListener("open", () => {
      if (socket !== this.socket) return;
      opened = true;
      this.attempt = 0;
      this.seen.clear();
      this.handlers.state("open", { again: this.openings > 0 });
      this.openings += 1;
      // Unanswered messages again, with their ids: the server answers each id once.
      for (const payload of this.outbox.values()) this.write(payload);
      if (this.cancelOnOpen) this.write({ type: "cancel" });
      this.cancelOnOpen = false;
      this.updateKeepalive();
    });
    socket.addEventListener("message", (event) => {
      if (socket !== this.socket || typeof event.data !== "string") return;
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      this.receive(frame);
    });
    socket.addEventListener("close", (event) => {
      if (socket !== this.socket) return;
      this.socket = null;
      clearInterval(this.keepalive);
      this.keepalive = null;
      this.closed(event, opened);
    });
  }

  receive(frame) {
    const type = frame.type || ("message" in frame ? "message" : null);
    const key = frame.reply_to ?? "";
    let replace = false;
    if (type === "delta") {
      replace = !this.seen.has(key);
      this.seen.add(key);
    } else if ((type === "message" || type === "error") && frame.reply_to !== undefined) {
      this.outbox.delete(frame.reply_to);
      this.seen.delete(key);
      this.updateKeepalive();
    } else if (type === "message") {
      this.seen.delete(key);
    }
    this.handlers.frame({ ...frame, type }, { replace });
  }

  closed(event, opened) {
    if (this.stopped) return;
    const { code, reason } = event;
    if (code === 4401) {
      const fresh = this.getToken();
      if (fresh !== null && fresh !== this.usedToken) {
        this.open();
        return;
      }
      this.waitingForAuth = true;
      this.handlers.auth();
      return;
    }
    if (code === 4404) {
      this.stopped = true;
      this.handlers.gone();
      return;
    }
    if (code === 4403) {
      this.stopped = true;
      this.handlers.fatal(
        "The server does not accept chat connections from this page's address (" +
          location.origin + "); add it to CHATBOT_ALLOWED_ORIGINS on the server.",
      );
      return;
    }
    if (code === 1000 && reason === "idle timeout" && this.outbox.size === 0) {
      this.idle = true;
      this.handlers.state("idle");
      return;
    }
    const delay =
      code === 4429
        ? jitter(TOO_MANY_BACKOFF_MS)
        : jitter(BACKOFF_MS[Math.min(this.attempt, BACKOFF_MS.length - 1)] ?? MAX_BACKOFF_MS);
    if (this.attempt === 0) this.outage = opened ? reason : "";
    this.attempt += 1;
    this.handlers.state("reconnecting", { attempt: this.attempt, reason: this.outage });
    this.timer = setTimeout(() => this.open(), delay);
  }

  updateKeepalive() {
    const wanted = this.isOpen && this.outbox.size > 0;
    if (wanted && this.keepalive === null) {
      this.keepalive = setInterval(() => {
        if (this.isOpen) this.write({ type: "ping" });
      }, KEEPALIVE_MS);
    } else if (!wanted && this.keepalive !== null) {
      clearInterval(this.keepalive);
      this.keepalive = null;
    }
  }
}

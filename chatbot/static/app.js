// The chat page: signs in, lists the sessions, shows one, and sends messages over its socket.

import * as auth from "./auth.js";
import { api, ApiError, AuthRequired } from "./api.js";
import { icon } from "./icons.js";
import { Connection, newClientId } from "./socket.js";
import { Sidebar, titleOf, UNTITLED } from "./sidebar.js";
import { Transcript } from "./transcript.js";
import { Search } from "./search.js";
import { ShareDialog } from "./sharing.js";
import { ExportMenu, Importer } from "./transfer.js";

const $ = (id) => document.getElementById(id);
const HISTORY_PAGE = 50;
const TOAST_MS = 8000;

const box = $("message");
const transcript = new Transcript($("transcript"), $("messages"), $("history-status"), $("empty"), $("jump"));
const sidebar = new Sidebar($("session-list"), $("sessions-status"), $("confirm-delete"), {
  select: () => closeSidebar(),
  renamed: (session) => {
    if (session.session_id === sessionId) setTitle(titleOf(session));
  },
  deleted: (id) => {
    if (id === sessionId) newChat();
  },
  error: (error) => report(error),
});

let entered = false;
let sessionId = null;
let connection = null;
let buffered = null;
let historyMore = false;
let loadingOlder = false;
let creating = false;
let backends = null;
let toastTimer = 0;
// Each message (or regenerate frame) sent, by client id, for "Retry".
const sent = new Map();

// Signing in -------------------------------------------------------------------------------

function showSignIn(reason) {
  $("loading").hidden = true;
  $("app").hidden = true;
  $("signin").hidden = false;
  $("signin-reason").textContent = reason || "Paste a token to start chatting.";
  $("signin-error").textContent = "";
  if (auth.hasOidc()) {
    const button = $("oidc-signin");
    button.textContent = "Sign in with " + auth.oidcHost();
    button.hidden = false;
    $("oidc-or").hidden = false;
    button.focus();
  } else {
    $("token-input").focus();
  }
}

function signedIn() {
  $("signin").hidden = true;
  $("app").hidden = false;
  $("user-name").textContent = auth.userName() ? "Signed in as " + auth.userName() : "";
  if (!entered) {
    enter();
    return;
  }
  if (connection) connection.resume();
  else route();
  if (sidebar.sessions.size === 0) sidebar.load();
  if (backends === null) loadBackends();
}

$("token-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const input = $("token-input");
  if (!input.value.trim()) return;
  auth.setToken(input.value);
  if (auth.currentToken() === null) {
    auth.forgetToken();
    $("signin-error").textContent =
      "This token has expired, or is not a token. Get a new one with: chatbot token --sub you";
    return;
  }
  try {
    await api("GET", "api/sessions?limit=1");
  } catch (error) {
    if (error instanceof AuthRequired) auth.forgetToken();
    $("signin-error").textContent =
      error instanceof AuthRequired
        ? error.message.replace("sign in again", "check that you pasted all of it, or get a new one")
        : error.message;
    return;
  }
  input.value = "";
  signedIn();
});

$("oidc-signin").addEventListener("click", async () => {
  try {
    await auth.signInWithOidc();
  } catch (error) {
    $("signin-error").textContent = error.message;
  }
});

$("sign-out").addEventListener("click", async () => {
  closeConnection();
  sessionId = null;
  transcript.reset();
  updateBusy();
  sidebar.clear();
  search.clear();
  try {
    await auth.signOut();
  } catch (error) {
    report(error);
  }
  showSignIn("You signed out.");
});

// Errors and the connection banner --------------------------------------------------------

function report(error) {
  if (error instanceof AuthRequired) {
    showSignIn(error.message);
    return;
  }
  toast(error instanceof ApiError || error instanceof Error ? error.message : String(error));
}

function toast(text) {
  const node = $("toast");
  node.textContent = text;
  node.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => {
    node.hidden = true;
  }, TOAST_MS);
}

function banner(text) {
  const node = $("banner");
  node.textContent = text || "";
  node.hidden = !text;
}

// Sessions ---------------------------------------------------------------------------------

function setTitle(text) {
  $("chat-title").textContent = text;
  document.title = text === UNTITLED ? "Chat" : text + " · Chat";
}

function closeConnection() {
  if (connection) connection.close();
  connection = null;
  buffered = null;
  banner("");
  updateBusy();
}

function connect(id, { buffer = false } = {}) {
  buffered = buffer ? [] : null;
  const conn = new Connection(id, auth.currentToken, {
    frame: (frame, options) => {
      if (conn !== connection) return;
      if (buffered) buffered.push([frame, options]);
      else onFrame(frame, options);
    },
    state: (name, detail) => {
      if (conn !== connection) return;
      if (name === "reconnecting" && detail.attempt > 0) {
        const why = detail.reason ? ` (${detail.reason})` : "";
        banner(`Connection lost${why}, reconnecting…`);
      } else if (name !== "connecting" && name !== "reconnecting") {
        banner("");
      }
      // Branch frames sent while the socket was closed were missed: read the branch again.
      // Not with a message on its way: it could show the branch that message replaces, and
      // the branch is read again once it is answered.
      if (name === "open" && detail.again && !conn.pending) readBranch(WHOLE_BRANCH);
    },
    auth: () => {
      if (conn === connection) showSignIn("Your sign-in has expired; sign in again to go on.");
    },
    gone: () => {
      if (conn !== connection) return;
      sidebar.drop(id);
      newChat();
      toast("That chat no longer exists; it may have been deleted.");
    },
    fatal: (message) => {
      if (conn === connection) banner(message);
    },
  });
  connection = conn;
  conn.start();
  return conn;
}

function onFrame(frame, { replace }) {
  // Frames handled late (after opening a session) wait too while the branch is read.
  if (buffered !== null && branches.reading === connection) {
    buffered.push([frame, { replace }]);
    return;
  }
  if (frame.type === "delta") {
    transcript.delta(frame.reply_to ?? "", frame.delta, replace);
  } else if (frame.type === "message") {
    transcript.final(frame);
    sidebar.touch(sessionId);
    branches.stale = connection;
  } else if (frame.type === "error") {
    const id = frame.reply_to;
    if (transcript.error(frame, id && sent.has(id) ? () => resend(id) : null)) branches.stale = connection;
  } else if (frame.type === "branch") {
    if (frame.leaf_id !== transcript.leafId()) readBranch(WHOLE_BRANCH);
  } else if (frame.type === "title" && typeof frame.title === "string") {
    const session = sidebar.get(sessionId);
    if (session) sidebar.upsert({ ...session, title: frame.title });
    setTitle(frame.title);
  }
  updateBusy();
}

function updateBusy() {
  const busy = transcript.streaming || Boolean(connection && connection.pending);
  // Once the replies are over, learn the ids and versions of what was said.
  if (!busy && branches.stale !== null && branches.stale === connection) readBranch(NEW_MESSAGES);
  const reading = branchBusy();
  transcript.setBusy(busy || reading);
  transcript.setLocked(busy || reading);
  $("stop").hidden = !busy;
}

async function openSession(id) {
  closeConnection();
  sessionId = id;
  historyMore = false;
  transcript.reset();
  updateBusy();
  transcript.updateEmpty(false);
  showChooser(false);
  sidebar.setActive(id);
  showSessionActions();
  setTitle(titleOf(sidebar.get(id)));
  closeSidebar();
  // The socket first, so no reply is missed; its frames wait until the history is shown.
  const conn = connect(id, { buffer: true });
  const path = "api/sessions/" + encodeURIComponent(id);
  try {
    const [session, page] = await Promise.all([
      api("GET", path),
      api("GET", `${path}/messages?limit=${HISTORY_PAGE}`),
    ]);
    if (conn !== connection) return;
    setTitle(titleOf(session));
    transcript.addHistory(page.messages);
    historyMore = page.has_more;
  } catch (error) {
    if (conn !== connection) return;
    if (error instanceof ApiError && error.status === 404) {
      closeConnection();
      sidebar.drop(id);
      newChat();
      toast("That chat does not exist, or is not yours.");
      return;
    }
    report(error);
  }
  const waiting = buffered || [];
  buffered = null;
  for (const [frame, options] of waiting) onFrame(frame, options);
  transcript.updateEmpty(true);
  await fillView();
}

/** Older pages until the transcript can scroll (a short window shows little per page). */
async function fillView() {
  const log = $("transcript");
  while (historyMore && log.scrollHeight <= log.clientHeight && (await loadOlder())) {
    // loadOlder() made progress; look again.
  }
}

async function loadOlder() {
  const id = sessionId;
  const before = transcript.oldestId();
  if (!historyMore || loadingOlder || id === null || before === null) return false;
  loadingOlder = true;
  transcript.setHistoryStatus("Loading older messages…");
  try {
    const page = await api(
      "GET",
      `api/sessions/${encodeURIComponent(id)}/messages?limit=${HISTORY_PAGE}&before=${before}`,
    );
    if (id !== sessionId) return false;
    transcript.addHistory(page.messages, { older: true });
    historyMore = page.has_more;
    return true;
  } catch (error) {
    report(error);
    return false;
  } finally {
    loadingOlder = false;
    transcript.setHistoryStatus("");
  }
}
transcript.onNearTop = () => loadOlder();

function newChat({ push = true } = {}) {
  closeConnection();
  sessionId = null;
  historyMore = false;
  transcript.reset();
  updateBusy();
  transcript.updateEmpty(true);
  sidebar.setActive(null);
  showSessionActions();
  setTitle(UNTITLED);
  showChooser(true);
  closeSidebar();
  if (push && location.hash) history.pushState(null, "", location.pathname + location.search);
  box.focus();
}

function route() {
  const match = /(?:^#|&)session=([^&]+)/.exec(location.hash);
  const id = match ? decodeURIComponent(match[1]) : null;
  if (id === null) newChat({ push: false });
  else if (id !== sessionId) openSession(id);
}

window.addEventListener("hashchange", route);
window.addEventListener("online", () => connection?.retryNow());
$("new-chat").addEventListener("click", () => newChat());

// The backend and model of a new chat -------------------------------------------------------

async function loadBackends() {
  try {
    const data = await api("GET", "api/backends");
    backends = data.backends;
  } catch (error) {
    report(error);
    return;
  }
  const select = $("backend");
  select.replaceChildren(
    ...backends.map((backend) => {
      const option = new Option(backend.name, backend.name, backend.default, backend.default);
      return option;
    }),
  );
  showModels();
  showChooser(sessionId === null);
}

function showModels() {
  const backend = backends?.find((b) => b.name === $("backend").value);
  const select = $("model");
  const free = $("model-free");
  if (!backend) return;
  if (backend.models.length) {
    select.replaceChildren(...backend.models.map((m) => new Option(m, m, m === backend.default_model, m === backend.default_model)));
    select.hidden = false;
    free.hidden = true;
  } else {
    // Any model name goes: an empty field means the backend's default.
    free.value = "";
    free.placeholder = backend.default_model || "default";
    select.hidden = true;
    free.hidden = false;
  }
}
$("backend").addEventListener("change", showModels);

function showChooser(show) {
  $("chooser").hidden = !(show && backends !== null && backends.length > 0);
}

function chosen() {
  const backend = $("backend").value;
  if (!backend) return {};
  const model = $("model").hidden ? $("model-free").value.trim() : $("model").value;
  return model ? { backend, model } : { backend };
}

// Sending ----------------------------------------------------------------------------------

async function send() {
  const text = box.value;
  if (!text.trim() || creating) return;
  if (sessionId === null) {
    creating = true;
    let session;
    try {
      // Untitled: the server titles it after the first reply, and says so in a title frame.
      session = await api("POST", "api/sessions", chosen());
    } catch (error) {
      report(error);
      return;
    } finally {
      creating = false;
    }
    sessionId = session.session_id;
    history.pushState(null, "", "#session=" + encodeURIComponent(sessionId));
    sidebar.upsert(session);
    sidebar.setActive(sessionId);
    showSessionActions();
    setTitle(titleOf(session));
    showChooser(false);
    connect(sessionId);
  }
  box.value = "";
  const id = newClientId();
  const payload = { message: text, id, stream: true };
  sent.set(id, payload);
  transcript.addUser(text, id);
  connection.send(payload);
  sidebar.touch(sessionId);
  updateBusy();
}

function resend(id) {
  const payload = sent.get(id);
  if (payload === undefined || connection === null) return;
  transcript.userEntry(id)?.node.classList.add("pending");
  connection.send(payload);
  updateBusy();
}

function stop() {
  if (connection) connection.cancel();
}

$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  send();
});
box.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    send();
  }
});
$("stop").addEventListener("click", stop);
document.addEventListener("keydown", (event) => {
  if (event.key !== "Escape" || event.defaultPrevented || $("confirm-delete").open) return;
  if ($("share-dialog").open) return;
  if (document.querySelector(".app.sidebar-open")) {
    closeSidebar();
    return;
  }
  if (!$("stop").hidden) {
    event.preventDefault();
    stop();
  }
});

// Branches: edit, regenerate, versions ------------------------------------------------------
// The transcript shows one branch of the conversation's tree. The page reads that branch
// again over HTTP whenever it may have changed (a branch frame, a switch between versions, a
// socket opened again) and, once the replies are over, reads the ids and versions of the
// messages just said, which reply frames do not carry. Socket frames wait while it reads, so
// that no reply is drawn into a transcript being replaced; a reply streaming stays at the end.

/** How much of the branch to read: the messages since the last read, or the newest page. */
const NEW_MESSAGES = 1;
const WHOLE_BRANCH = 2;
const branches = {
  // The connection whose branch is being read, and how much to read after that.
  reading: null,
  queued: 0,
  // The connection on which a reply ended since the branch was last read.
  stale: null,
  switching: false,
};

function branchBusy() {
  return (branches.reading !== null && branches.reading === connection) || branches.switching;
}

async function readBranch(level) {
  const conn = connection;
  if (conn === null || sessionId === null) return;
  if (branches.reading === conn) {
    branches.queued = Math.max(branches.queued, level);
    return;
  }
  // Still opening the session: its history is being read anyway.
  if (buffered !== null) return;
  branches.reading = conn;
  branches.stale = null;
  buffered = [];
  updateBusy();
  const path = `api/sessions/${encodeURIComponent(sessionId)}/messages`;
  let fromRoot = false;
  let page = null;
  try {
    if (level === NEW_MESSAGES) {
      const limit = Math.min(HISTORY_PAGE, transcript.unsettled() + 1);
      page = await api("GET", `${path}?limit=${limit}`);
      // Not joined to what is shown: the branch changed unseen, read a whole page.
      if (page.has_more && !transcript.shows(page.messages[0])) page = null;
    }
    if (page === null && conn === connection) page = await api("GET", `${path}?limit=${HISTORY_PAGE}`);
    if (conn === connection) {
      const keepLocal = level === NEW_MESSAGES;
      ({ fromRoot } = transcript.showBranch(page.messages, { complete: !page.has_more, keepLocal }));
      if (fromRoot) historyMore = page.has_more;
    }
  } catch (error) {
    if (conn === connection) report(error);
  } finally {
    if (branches.reading === conn) branches.reading = null;
  }
  if (conn !== connection) return;
  const waiting = buffered || [];
  buffered = null;
  // A branch frame among them starts another read: the rest wait for that one (onFrame).
  for (const [frame, options] of waiting) onFrame(frame, options);
  const next = branches.queued;
  branches.queued = 0;
  if (next) readBranch(next);
  updateBusy();
  if (fromRoot) fillView();
}

async function switchVersion(messageId) {
  const conn = connection;
  if (conn === null || branches.switching) return;
  branches.switching = true;
  updateBusy();
  try {
    const session = await api("PATCH", "api/sessions/" + encodeURIComponent(sessionId), { leaf_id: messageId });
    // The branch frame of this switch may have been read already.
    if (conn === connection && session.leaf_id !== transcript.leafId()) readBranch(WHOLE_BRANCH);
  } catch (error) {
    if (conn === connection) report(error);
  } finally {
    branches.switching = false;
    updateBusy();
  }
}

transcript.onSwitch = (messageId) => switchVersion(messageId);

transcript.onEdit = (entry, text) => {
  if (connection === null || entry.parentId === undefined) return;
  const id = newClientId();
  const payload = { message: text, parent_id: entry.parentId, id, stream: true };
  sent.set(id, payload);
  // The new version replaces the edited message and everything below it.
  transcript.truncate(entry);
  transcript.addUser(text, id);
  connection.send(payload);
  sidebar.touch(sessionId);
  updateBusy();
};

transcript.onRegenerate = (entry) => {
  if (connection === null || entry.messageId === null) return;
  const id = newClientId();
  const payload = { type: "regenerate", message_id: entry.messageId, id, stream: true };
  sent.set(id, payload);
  transcript.truncate(entry);
  connection.send(payload);
  sidebar.touch(sessionId);
  updateBusy();
};

// The sidebar on narrow screens -------------------------------------------------------------

function closeSidebar() {
  $("app").classList.remove("sidebar-open");
  $("toggle-sidebar").setAttribute("aria-expanded", "false");
  $("backdrop").hidden = true;
}

$("toggle-sidebar").append(icon("menu"));
$("toggle-sidebar").addEventListener("click", () => {
  const open = !$("app").classList.contains("sidebar-open");
  $("app").classList.toggle("sidebar-open", open);
  $("toggle-sidebar").setAttribute("aria-expanded", String(open));
  $("backdrop").hidden = !open;
  if (open) document.querySelector(".session-link[aria-current]")?.focus();
});
$("backdrop").addEventListener("click", closeSidebar);

// Search, export, import and shared links ----------------------------------------------------
// The parts live in search.js, transfer.js and sharing.js; this only ties them to the page.

const search = new Search(
  {
    input: $("search"),
    panel: $("search-results"),
    list: $("search-list"),
    status: $("search-status"),
    more: $("search-more"),
    sessions: $("sessions"),
  },
  { open: (id, messageId) => openAt(id, messageId), error: report },
);
new ExportMenu($("export-menu"), () => sessionId, report);
const shareDialog = new ShareDialog($("share-dialog"), () => sessionId, report);
$("share").addEventListener("click", () => shareDialog.share());
new Importer($("import"), $("import-file"), {
  imported: (sessions) => {
    if (sessions.length === 0) {
      toast("The file holds no conversation to import.");
      return;
    }
    for (const session of [...sessions].reverse()) sidebar.upsert(session);
    location.hash = "#session=" + encodeURIComponent(sessions[0].session_id);
  },
  error: report,
});

/** Share and Export apply to the open session: shown only when one is. */
function showSessionActions() {
  $("session-actions").hidden = sessionId === null;
}

/** Open session `id` at message `messageId` (a search result): page back through its history
 * to the message, or, when it is not on the branch shown, make its branch current first. */
async function openAt(id, messageId) {
  if (id !== sessionId) {
    history.pushState(null, "", "#session=" + encodeURIComponent(id));
    await openSession(id);
  }
  if (id !== sessionId) return;
  let entry = await findEntry(messageId);
  if (entry === null && id === sessionId) {
    try {
      await api("PATCH", "api/sessions/" + encodeURIComponent(id), { leaf_id: messageId });
    } catch (error) {
      report(error);
      return;
    }
    if (id !== sessionId) return;
    await openSession(id);
    entry = await findEntry(messageId);
  }
  if (id !== sessionId) return;
  if (entry === null) {
    toast("That message is no longer in the chat; it may have been deleted.");
    return;
  }
  for (const node of $("messages").querySelectorAll(".message.found")) {
    node.classList.remove("found");
  }
  void entry.node.offsetWidth; // a layout in between, so the highlight plays again
  entry.node.classList.add("found");
  entry.node.scrollIntoView({ block: "center" });
}

/** The transcript's entry of message `messageId`, loading older pages until it shows; null
 * when it is not on the branch shown. */
async function findEntry(messageId) {
  const id = sessionId;
  for (;;) {
    const entry = transcript.entries.find((e) => e.messageId === messageId);
    if (entry) return entry;
    // A reply's id is larger than its parent's: past an older one, it is not on this branch.
    const oldest = transcript.oldestId();
    if (!historyMore || oldest === null || oldest < messageId) return null;
    if (!(await loadOlder()) || id !== sessionId) return null;
  }
}

// Start ------------------------------------------------------------------------------------

function enter() {
  entered = true;
  $("loading").hidden = true;
  $("signin").hidden = true;
  $("app").hidden = false;
  $("user-name").textContent = auth.userName() ? "Signed in as " + auth.userName() : "";
  sidebar.load();
  loadBackends();
  route();
}

async function start() {
  let config = { oidc: null };
  try {
    const response = await fetch("config.json", { cache: "no-store" });
    if (response.ok) config = await response.json();
  } catch {
    // The server is down: the API calls below say so.
  }
  let problem = "";
  if (config.oidc) {
    try {
      const oidc = await import("./oidc.js");
      auth.useOidc(oidc, config.oidc);
      oidc.onRenew(() => {
        if (!$("signin").hidden) signedIn();
      });
      await oidc.completeSignIn(config.oidc);
    } catch (error) {
      problem = "Sign-in failed: " + error.message;
    }
  }
  if (auth.currentToken() === null) {
    showSignIn(problem || (auth.expired() ? "Your sign-in has expired; sign in again." : ""));
    return;
  }
  enter();
}

start();

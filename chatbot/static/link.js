// A sign-in link, http://host/#token=..., carries its token in the URL fragment, which no
// server or access log sees. This module runs before every other one: it moves the token to
// sessionStorage and takes it out of the address bar (and so out of the history) at once.
// It imports nothing, so that a module failing to load cannot leave the token in view.

const TOKEN_KEY = "chatbot.token";

/** Move a token in the fragment to sessionStorage; true when there was one. */
function takeToken() {
  const params = new URLSearchParams(location.hash.slice(1));
  const token = params.get("token");
  if (token === null) return false;
  params.delete("token");
  const rest = params.toString();
  history.replaceState(history.state, "", location.pathname + location.search + (rest ? "#" + rest : ""));
  try {
    sessionStorage.setItem(TOKEN_KEY, token.trim());
  } catch {
    // Storage disabled: the page then asks for a token; the link's token is still gone.
  }
  return true;
}

takeToken();

// A link opened in a tab that already shows the page (say, a fresh one from `chatbot open`
// after the token expired) changes only the fragment, so the page is not loaded again: take
// the token as well, and start over signed in with it. Registered before the page's own
// hashchange listener, which must not see the token.
window.addEventListener("hashchange", (event) => {
  if (!takeToken()) return;
  event.stopImmediatePropagation();
  location.reload();
});

// Where the page's bearer token comes from: a pasted token or a sign-in link's (kept in
// sessionStorage, so it dies with the tab), or OpenID Connect through ./oidc.js.

const TOKEN_KEY = "chatbot.token";
// A token this far past its exp is refused by any server (the largest leeway is 60 s), so
// the page asks for a new one without sending it; nearer the edge the server decides.
const EXPIRED_AFTER_MS = 60_000;

let oidc = null;
let oidcConfig = null;

/** Use the OpenID Connect module for tokens from now on. */
export function useOidc(module, config) {
  oidc = module;
  oidcConfig = config;
}

/** True when OpenID Connect sign-in is configured. */
export function hasOidc() {
  return oidc !== null;
}

/** The issuer's host, to name the provider on the sign-in button. */
export function oidcHost() {
  try {
    return new URL(oidcConfig.issuer).host;
  } catch {
    return "your identity provider";
  }
}

/** Go to the identity provider to sign in. */
export function signInWithOidc() {
  return oidc.signIn(oidcConfig);
}

/** The claims of a JWT, unverified (for display and expiry only), or null. */
export function claims(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const json = decodeURIComponent(
      Array.from(atob(part), (c) => "%" + c.charCodeAt(0).toString(16).padStart(2, "0")).join(""),
    );
    const value = JSON.parse(json);
    return value !== null && typeof value === "object" ? value : null;
  } catch {
    return null;
  }
}

function usable(token) {
  if (!token) return false;
  const exp = claims(token)?.exp;
  return typeof exp !== "number" || exp * 1000 + EXPIRED_AFTER_MS > Date.now();
}

function stored() {
  try {
    return sessionStorage.getItem(TOKEN_KEY);
  } catch {
    return null;
  }
}

/** The bearer to send now, or null when the user has to sign in (again). Asked afresh
 * before every request and socket, so a renewed token is used as soon as it exists. */
export function currentToken() {
  const fromOidc = oidc !== null ? oidc.currentToken() : null;
  if (usable(fromOidc)) return fromOidc;
  const token = stored();
  return usable(token) ? token : null;
}

/** True when a token is kept but has expired: the user signed in before, so say so. */
export function expired() {
  const fromOidc = oidc !== null ? oidc.currentToken() : null;
  return currentToken() === null && Boolean(fromOidc || stored());
}

/** Keep a token the user pasted; accepts "Bearer <token>" and a whole sign-in link too. */
export function setToken(text) {
  let token = text.trim();
  const fromLink = /#(?:.*&)?token=([^&\s]+)/.exec(token);
  if (fromLink) token = decodeURIComponent(fromLink[1]);
  token = token.replace(/^Bearer\s+/i, "");
  sessionStorage.setItem(TOKEN_KEY, token);
  return token;
}

/** Forget the pasted token (after the server refused it, or on sign-out). */
export function forgetToken() {
  try {
    sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    // Nothing stored.
  }
}

/** Who is signed in, for the sidebar: a name from the token's claims. */
export function userName() {
  const token = currentToken();
  const c = token ? claims(token) : null;
  if (!c) return "";
  for (const key of ["preferred_username", "name", "email", "sub"]) {
    if (typeof c[key] === "string" && c[key]) return c[key];
  }
  return "";
}

/** Sign out: forget every token; with OpenID Connect, also at the provider. */
export async function signOut() {
  forgetToken();
  if (oidc !== null) await oidc.signOut(oidcConfig);
}

// OpenID Connect sign-in for the chat page: the Authorization Code flow with PKCE (S256), as
// a public client (no client secret), against the provider the issuer's discovery document
// describes. Tokens live in sessionStorage (this tab only, gone when it closes) and never in
// the address bar: the code and state the provider sends back are removed from it at once.
//
// oidcConfig is the `oidc` object of the page's config.json:
//   {issuer, client_id, scopes: "openid profile email", token: "access" | "id"}
// The redirect URI is the page's own address without query or fragment; register exactly
// that at the provider, as the post-logout redirect URI too.

const STORE = "chatbot.oidc.tokens";
const PENDING = "chatbot.oidc.pending";
/** Renew this long before the bearer expires (less for tokens that live under 4 minutes). */
const RENEW_LEAD_MS = 60_000;
/** After a failed renewal, try again this much later while the bearer is still valid. */
const RETRY_MS = 15_000;
/** A sign-in started more than this long ago is not completed. */
const PENDING_MAX_AGE_MS = 15 * 60_000;
/** Query parameters the provider adds to the redirect URI (RFC 6749, RFC 9207, OIDC). */
const RESPONSE_PARAMS = ["code", "state", "iss", "session_state", "error", "error_description", "error_uri"];

const discoveries = new Map();
const renewCallbacks = new Set();
let renewTimer = null;

// -- small helpers ------------------------------------------------------------------------

function base64url(bytes) {
  let text = "";
  for (const byte of bytes) text += String.fromCharCode(byte);
  return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function randomString(size = 32) {
  return base64url(crypto.getRandomValues(new Uint8Array(size)));
}

async function s256(verifier) {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier));
  return base64url(new Uint8Array(digest));
}

/** The claims of a JWT, read without checking its signature (the server checks that). */
function jwtClaims(token) {
  const parts = typeof token === "string" ? token.split(".") : [];
  if (parts.length !== 3) return null;
  try {
    const text = atob(parts[1].replace(/-/g, "+").replace(/_/g, "/"));
    const bytes = Uint8Array.from(text, (c) => c.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    return claims && typeof claims === "object" ? claims : null;
  } catch {
    return null;
  }
}

function readJson(key) {
  try {
    const value = JSON.parse(sessionStorage.getItem(key) || "null");
    return value && typeof value === "object" ? value : null;
  } catch {
    return null;
  }
}

function redirectUri() {
  return location.origin + location.pathname;
}

function describe(error) {
  return error instanceof Error ? error.message : String(error);
}

/** The provider's words as the end of a sentence: one final full stop. */
function sentence(text) {
  return String(text).replace(/[\s.]+$/, "") + ".";
}

/** The provider's discovery document, checked against the configured issuer. */
async function discover(oidcConfig) {
  const issuer = oidcConfig.issuer;
  if (!discoveries.has(issuer)) {
    const url = issuer.replace(/\/+$/, "") + "/.well-known/openid-configuration";
    const pending = (async () => {
      let response;
      try {
        response = await fetch(url, { credentials: "omit", headers: { Accept: "application/json" } });
      } catch (error) {
        throw new Error(
          `Cannot reach the sign-in provider at ${issuer} (${describe(error)}). ` +
            "Check that it is up and allows this page's origin (CORS).",
        );
      }
      if (!response.ok) {
        throw new Error(`The sign-in provider's discovery document answered HTTP ${response.status}.`);
      }
      const document = await response.json();
      if (document.issuer !== issuer) {
        throw new Error(
          `The sign-in provider calls itself ${JSON.stringify(document.issuer)}, ` +
            `not ${JSON.stringify(issuer)}: set CHATBOT_OIDC_ISSUER to its exact issuer.`,
        );
      }
      for (const name of ["authorization_endpoint", "token_endpoint"]) {
        if (typeof document[name] !== "string") {
          throw new Error(`The sign-in provider's discovery document has no ${name}.`);
        }
      }
      return document;
    })();
    discoveries.set(issuer, pending);
    pending.catch(() => discoveries.delete(issuer)); // try again next time
  }
  return discoveries.get(issuer);
}

/** POST a form to the token endpoint; the provider's JSON answer, or a readable Error. */
async function tokenRequest(endpoint, form) {
  let response;
  try {
    response = await fetch(endpoint, {
      method: "POST",
      body: new URLSearchParams(form),
      credentials: "omit",
      headers: { Accept: "application/json" },
    });
  } catch (error) {
    throw new Error(`Cannot reach the sign-in provider's token endpoint (${describe(error)}).`);
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (!response.ok || !body || typeof body !== "object") {
    const reason = body && (body.error_description || body.error);
    throw new Error(
      `The sign-in provider refused the sign-in: ${sentence(reason || `HTTP ${response.status}`)}`,
    );
  }
  return body;
}

/** When the bearer expires, in ms since the epoch: its `exp`, else the response's expires_in. */
function expiryOf(token, expiresIn, now) {
  const claims = jwtClaims(token);
  if (claims && typeof claims.exp === "number") return claims.exp * 1000;
  if (typeof expiresIn === "number" && expiresIn > 0) return now + expiresIn * 1000;
  return null;
}

function bearerOf(record) {
  return record.kind === "id" ? record.id_token : record.access_token;
}

// -- renewal ------------------------------------------------------------------------------

function scheduleRenewal() {
  clearTimeout(renewTimer);
  renewTimer = null;
  const record = readJson(STORE);
  if (!record || !record.refresh_token || !record.expires_at) return;
  const lifetime = record.expires_at - record.obtained_at;
  const lead = Math.min(RENEW_LEAD_MS, Math.max(lifetime / 4, 0));
  const delay = Math.max(record.expires_at - lead - Date.now(), 0);
  renewTimer = setTimeout(renew, delay);
}

async function renew() {
  renewTimer = null;
  const record = readJson(STORE);
  if (!record || !record.refresh_token) return;
  let body;
  try {
    body = await tokenRequest(record.token_endpoint, {
      grant_type: "refresh_token",
      refresh_token: record.refresh_token,
      client_id: record.client_id,
    });
  } catch (error) {
    if (readJson(STORE) === null) return; // signed out meanwhile
    if (Date.now() + RETRY_MS < record.expires_at) {
      renewTimer = setTimeout(renew, RETRY_MS);
    } else {
      console.warn(`Could not renew the sign-in: ${describe(error)}`);
    }
    return;
  }
  if (readJson(STORE) === null) return;
  const now = Date.now();
  const next = {
    ...record,
    access_token: body.access_token || record.access_token,
    id_token: body.id_token || record.id_token,
    // Providers that rotate refresh tokens send a new one; the others keep the old valid.
    refresh_token: body.refresh_token || record.refresh_token,
    obtained_at: now,
  };
  const bearer = bearerOf(next);
  if (bearer === bearerOf(record)) {
    // No new bearer (e.g. no new ID token on refresh): nothing to renew it with; the page
    // asks for a sign-in when this one expires.
    sessionStorage.setItem(STORE, JSON.stringify({ ...next, refresh_token: null }));
    return;
  }
  next.expires_at = expiryOf(bearer, body.expires_in, now);
  sessionStorage.setItem(STORE, JSON.stringify(next));
  scheduleRenewal();
  for (const callback of renewCallbacks) {
    try {
      callback(bearer);
    } catch (error) {
      console.error(error);
    }
  }
}

// A background tab's timers are throttled: check again as soon as the page is shown.
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible" && renewTimer !== null) scheduleRenewal();
});

// -- the interface ------------------------------------------------------------------------

/**
 * Finish a sign-in when the provider sent the browser back here with ?code=&state=
 * (or ?error=). Returns true when it signed in, false when there was nothing to do, and
 * throws an Error with a readable message when the sign-in failed.
 */
export async function completeSignIn(oidcConfig) {
  const params = new URLSearchParams(location.search);
  if (!params.has("code") && !params.has("error")) return false;
  const pending = readJson(PENDING);
  sessionStorage.removeItem(PENDING); // a sign-in attempt is used once, whatever happens
  const clean = new URL(location.href);
  for (const name of RESPONSE_PARAMS) clean.searchParams.delete(name);
  history.replaceState(history.state, "", clean.pathname + clean.search + clean.hash);

  const ours =
    pending !== null &&
    typeof pending.state === "string" &&
    pending.issuer === oidcConfig.issuer &&
    Date.now() - pending.created <= PENDING_MAX_AGE_MS;
  // Some providers leave the state out of an error response (RFC 6749 says to send it); an
  // error is shown anyway when this tab was signing in, as it grants nothing.
  const errorWithoutState = params.has("error") && !params.has("state");
  if (!ours || (params.get("state") !== pending.state && !errorWithoutState)) {
    throw new Error(
      "This sign-in response does not belong to a sign-in started in this tab (state " +
        "mismatch). Sign in again.",
    );
  }
  if (params.has("error")) {
    const reason = params.get("error_description") || params.get("error");
    throw new Error(`The sign-in provider did not sign you in: ${sentence(reason)}`);
  }
  const issuerParam = params.get("iss");
  if (issuerParam !== null && issuerParam !== oidcConfig.issuer) {
    throw new Error("The sign-in response came from another provider than the configured one.");
  }
  const discovery = await discover(oidcConfig);
  const now = Date.now();
  const body = await tokenRequest(discovery.token_endpoint, {
    grant_type: "authorization_code",
    code: params.get("code"),
    redirect_uri: pending.redirect_uri,
    client_id: oidcConfig.client_id,
    code_verifier: pending.verifier,
  });
  const idClaims = jwtClaims(body.id_token);
  if (!idClaims) {
    throw new Error(
      "The sign-in provider sent no ID token: CHATBOT_OIDC_SCOPES must include openid.",
    );
  }
  const audiences = Array.isArray(idClaims.aud) ? idClaims.aud : [idClaims.aud];
  if (
    idClaims.nonce !== pending.nonce ||
    idClaims.iss !== oidcConfig.issuer ||
    !audiences.includes(oidcConfig.client_id)
  ) {
    throw new Error("The sign-in provider's ID token is not for this sign-in. Sign in again.");
  }
  const kind = oidcConfig.token === "id" ? "id" : "access";
  const record = {
    kind,
    issuer: oidcConfig.issuer,
    client_id: oidcConfig.client_id,
    token_endpoint: discovery.token_endpoint,
    access_token: typeof body.access_token === "string" ? body.access_token : null,
    id_token: body.id_token,
    refresh_token: typeof body.refresh_token === "string" ? body.refresh_token : null,
    obtained_at: now,
    expires_at: null,
  };
  const bearer = bearerOf(record);
  if (!bearer) {
    throw new Error(`The sign-in provider sent no ${kind} token.`);
  }
  record.expires_at = expiryOf(bearer, kind === "access" ? body.expires_in : undefined, now);
  sessionStorage.setItem(STORE, JSON.stringify(record));
  scheduleRenewal();
  return true;
}

/** Go to the provider's authorization endpoint to sign in; it sends the browser back here. */
export async function signIn(oidcConfig) {
  const discovery = await discover(oidcConfig);
  const verifier = randomString(32);
  const pending = {
    state: randomString(16),
    nonce: randomString(16),
    verifier,
    issuer: oidcConfig.issuer,
    redirect_uri: redirectUri(),
    created: Date.now(),
  };
  const scopes = oidcConfig.scopes.split(/\s+/).filter(Boolean);
  if (!scopes.includes("openid")) scopes.unshift("openid");
  // Some providers (Auth0...) grant a refresh token only for offline_access; ask for it
  // where the provider says it knows it, so that the sign-in can be renewed.
  const supported = Array.isArray(discovery.scopes_supported) ? discovery.scopes_supported : [];
  if (supported.includes("offline_access") && !scopes.includes("offline_access")) {
    scopes.push("offline_access");
  }
  const url = new URL(discovery.authorization_endpoint);
  const query = {
    response_type: "code",
    client_id: oidcConfig.client_id,
    redirect_uri: pending.redirect_uri,
    scope: scopes.join(" "),
    state: pending.state,
    nonce: pending.nonce,
    code_challenge: await s256(verifier),
    code_challenge_method: "S256",
  };
  for (const [name, value] of Object.entries(query)) url.searchParams.set(name, value);
  sessionStorage.setItem(PENDING, JSON.stringify(pending));
  location.assign(url.href);
}

/** The bearer token to send now (access or ID token as configured), or null if none is
 * valid: signed out, or expired without a renewal. */
export function currentToken() {
  const record = readJson(STORE);
  if (!record) return null;
  const bearer = bearerOf(record);
  if (typeof bearer !== "string" || !bearer) return null;
  if (record.expires_at && Date.now() >= record.expires_at) return null;
  return bearer;
}

/** Call callback(newToken) after each renewal; returns a function that stops the calls. */
export function onRenew(callback) {
  renewCallbacks.add(callback);
  if (renewTimer === null) scheduleRenewal();
  return () => renewCallbacks.delete(callback);
}

/** Forget the tokens, then end the session at the provider when it offers that (the
 * provider sends the browser back to this page). */
export async function signOut(oidcConfig) {
  const record = readJson(STORE);
  sessionStorage.removeItem(STORE);
  sessionStorage.removeItem(PENDING);
  clearTimeout(renewTimer);
  renewTimer = null;
  let discovery;
  try {
    discovery = await discover(oidcConfig);
  } catch {
    return; // the tokens are gone from this page, which is what signing out needs
  }
  if (record && record.refresh_token && typeof discovery.revocation_endpoint === "string") {
    // So that the refresh token cannot be used again if it was copied; best effort.
    try {
      await fetch(discovery.revocation_endpoint, {
        method: "POST",
        body: new URLSearchParams({
          token: record.refresh_token,
          token_type_hint: "refresh_token",
          client_id: oidcConfig.client_id,
        }),
        credentials: "omit",
      });
    } catch {
      // The provider forgets it when it expires.
    }
  }
  if (typeof discovery.end_session_endpoint !== "string") return;
  const url = new URL(discovery.end_session_endpoint);
  url.searchParams.set("client_id", oidcConfig.client_id);
  url.searchParams.set("post_logout_redirect_uri", redirectUri());
  if (record && record.id_token) url.searchParams.set("id_token_hint", record.id_token);
  location.assign(url.href);
}

scheduleRenewal();

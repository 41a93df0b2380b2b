// OpenID Connect sign-in for the chat page: Authorization Code flow with PKCE (S256),
// as a public client (no secret). Tokens live in sessionStorage, never in the address bar.
//
// oidcConfig is the page's `config.json` object: {issuer, client_id, scopes, token}.

/** Finish a sign-in when the provider redirected back here; true if it signed in. */
export async function completeSignIn(oidcConfig) {
  void oidcConfig;
  return false;
}

/** Go to the provider's authorization endpoint to sign in. */
export async function signIn(oidcConfig) {
  void oidcConfig;
  throw new Error("OpenID Connect sign-in is not available yet");
}

/** The bearer token to use now, or null when signed out or expired. */
export function currentToken() {
  return null;
}

/** Call callback(newToken) after each renewal. */
export function onRenew(callback) {
  void callback;
}

/** Forget the tokens and sign out at the provider when it offers that. */
export async function signOut(oidcConfig) {
  void oidcConfig;
}

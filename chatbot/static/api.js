// The HTTP API, by paths relative to the page (so it works wherever the app is mounted).

import { currentToken, expired } from "./auth.js";

/** The user has to sign in (again): no token, or the server refused it. */
export class AuthRequired extends Error {}

/** The server answered with an error; `message` is the server's, meant for people. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function errorOf(response) {
  try {
    const body = await response.json();
    if (body && body.error && typeof body.error.message === "string") return body.error;
  } catch {
    // Not our JSON shape: a proxy's page, for instance.
  }
  return { code: "http_" + response.status, message: `the server answered ${response.status}` };
}

/** Call the API: `api("GET", "api/sessions")`. Resolves to the JSON body (null for 204). */
export async function api(method, path, body) {
  const init = body === undefined ? {} : { body: JSON.stringify(body), type: "application/json" };
  const response = await request(method, path, init);
  return response.status === 204 ? null : response.json();
}

/** Call the API and resolve to its successful Response, for a body that is not JSON (a
 * download) or a request body that is not JSON built here (a file to import). */
export async function request(method, path, { body, type } = {}) {
  const token = currentToken();
  if (token === null) {
    throw new AuthRequired(expired() ? "Your sign-in has expired; sign in again." : "Sign in to chat.");
  }
  const init = { method, headers: { Authorization: "Bearer " + token }, cache: "no-store" };
  if (body !== undefined) {
    init.headers["Content-Type"] = type;
    init.body = body;
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError(0, "network", "The server cannot be reached; check that it runs, then try again.");
  }
  if (response.status === 401) {
    const error = await errorOf(response);
    throw new AuthRequired(
      error.code === "token_expired" ? "Your sign-in has expired; sign in again." : `The server refused the token (${error.message}); sign in again.`,
    );
  }
  if (!response.ok) {
    const error = await errorOf(response);
    throw new ApiError(response.status, error.code, error.message);
  }
  return response;
}

// The API client: fetch() with the bearer token, and one error type for every failed answer.

import { currentToken, requireToken } from "./auth.js";

/** A failed request: the HTTP status (0 when the server could not be reached) and the server's error code. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
  }
}

/** The server's `{"error": {"code", "message"}}` body as an ApiError (a generic one for any other body). */
async function errorFrom(response) {
  let code = "http_error";
  let message = `The server answered ${response.status}.`;
  try {
    const body = await response.json();
    if (body && body.error) {
      code = body.error.code || code;
      message = body.error.message || message;
    }
  } catch {
    // not our JSON error body
  }
  return new ApiError(response.status, code, message);
}

/** fetch() with the bearer token; throws ApiError for any non-2xx answer, and asks for a token on 401. */
export async function api(path, { method = "GET", body, signal, accept = "application/json", headers: extra = {} } = {}) {
  const headers = { ...extra, Accept: accept };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const token = currentToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
      cache: "no-store",
    });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, "network", "Could not reach the server. Check your connection and try again.");
  }
  if (response.status === 401) {
    const error = await errorFrom(response);
    requireToken(error.message);
    throw error;
  }
  if (!response.ok) throw await errorFrom(response);
  return response;
}

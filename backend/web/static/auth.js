// Authentication: the bearer token (kept in localStorage), the token dialog and the "sign in" banner.
//
// In local mode the server needs no token and none of this shows. With AUTH_SECRET set, the first 401 opens the
// dialog (`requireToken`); a token can also arrive in the URL as `#token=<jwt>`, which is taken out of the address bar
// at once.

import { announce, hashParams, setHash } from "./page.js";

const TOKEN_KEY = "chat.token";

const $ = (id) => document.getElementById(id);
const tokenButton = $("token-button");
const banner = $("auth-banner");
const bannerButton = $("auth-banner-button");
const dialog = $("token-dialog");
const form = $("token-form");
const input = $("token-input");
const reasonBox = $("token-reason");
const cancelButton = $("token-cancel");

let token = readStoredToken();
let needed = false; // the server asked for a token that we do not have (or rejected ours)
let hooks = { onNeeded: () => {}, onSaved: () => {} };

function readStoredToken() {
  try {
    return window.localStorage.getItem(TOKEN_KEY);
  } catch {
    return null;
  }
}

function storeToken(value) {
  token = value;
  try {
    if (value) window.localStorage.setItem(TOKEN_KEY, value);
    else window.localStorage.removeItem(TOKEN_KEY);
  } catch {
    // storage disabled: keep the token for this page only
  }
  tokenButton.hidden = !value;
}

/** The bearer token to send, or null. */
export function currentToken() {
  return token;
}

/** True after a 401, until a token is saved. */
export function authNeeded() {
  return needed;
}

/** The server answered 401: show the banner and ask for a token (`reason` is the server's message). */
export function requireToken(reason) {
  needed = true;
  banner.hidden = false;
  // Only a rejected token gets a reason; a first visit without one just gets the explanation in the dialog.
  reasonBox.textContent = token && reason ? `The saved token was not accepted: ${reason}` : "";
  reasonBox.hidden = !reasonBox.textContent;
  hooks.onNeeded();
  openTokenDialog();
}

export function openTokenDialog() {
  if (dialog.open) return;
  input.value = "";
  dialog.showModal();
  input.focus();
}

function takeTokenFromHash() {
  const params = hashParams();
  const value = params.get("token");
  if (value === null) return false;
  params.delete("token");
  setHash(params, { replace: true }); // the token must not stay in the address bar or the history
  if (value.trim()) storeToken(value.trim());
  return true;
}

/** On a hash change: take a `#token=` if there is one (closing the dialog and the banner). True if one was there. */
export function acceptTokenFromHash() {
  if (!takeTokenFromHash()) return false;
  if (dialog.open) dialog.close();
  needed = false;
  banner.hidden = true;
  return true;
}

function onSubmit(event) {
  event.preventDefault();
  const value = input.value.trim().replace(/^bearer\s+/i, "");
  if (!value) {
    input.focus();
    return;
  }
  storeToken(value);
  dialog.close();
  input.value = "";
  needed = false;
  banner.hidden = true;
  announce("Token saved.");
  hooks.onSaved();
}

/**
 * Wire the dialog and the banner, and take a token from the URL if the page was opened with one.
 * `onNeeded()` runs when a token is asked for, `onSaved()` when one was typed in.
 */
export function initAuth({ onNeeded, onSaved }) {
  hooks = { onNeeded, onSaved };
  form.addEventListener("submit", onSubmit);
  cancelButton.addEventListener("click", () => dialog.close());
  tokenButton.addEventListener("click", () => {
    reasonBox.hidden = true;
    openTokenDialog();
  });
  bannerButton.addEventListener("click", openTokenDialog);
}

/** At start-up: take a `#token=` from the URL, and show the token button when a token is saved. */
export function startAuth() {
  takeTokenFromHash();
  tokenButton.hidden = !token;
}

// Where the page is: the open conversation (in the URL as #c=<id>), the heading above it, and announcements for
// screen readers. The other modules read and change these through the functions below, never through shared objects.

const statusRegion = document.getElementById("status");
const heading = document.getElementById("chat-title");

/** Narrow screens: the sidebar becomes a drawer. */
export const MOBILE_QUERY = window.matchMedia("(max-width: 720px)");

let currentId = null; // the conversation shown, or null for a new chat
let viewSeq = 0; // bumped on every navigation, so that late responses for an old view are dropped

/** The id of the conversation shown, or null for a new chat. */
export function currentConversation() {
  return currentId;
}

export function setCurrentConversation(id) {
  currentId = id;
}

/** Start a new view (a navigation) and return its number; answers for an older number must be dropped. */
export function nextView() {
  viewSeq += 1;
  return viewSeq;
}

export function isCurrentView(seq) {
  return seq === viewSeq;
}

export function setHeading(text) {
  heading.textContent = text;
}

/** Say `message` in the polite live region (cleared first, so that a repeated message is read again). */
export function announce(message) {
  statusRegion.textContent = "";
  window.setTimeout(() => {
    statusRegion.textContent = message;
  }, 30);
}

export function hashParams() {
  return new URLSearchParams(window.location.hash.replace(/^#/, ""));
}

export function setHash(params, { replace }) {
  const hash = params.toString();
  const url = `${window.location.pathname}${window.location.search}${hash ? `#${hash}` : ""}`;
  if (replace) window.history.replaceState(null, "", url);
  else window.history.pushState(null, "", url);
}

/** Put the conversation `id` in the URL (`#c=<id>`), or take it out (null), keeping the other hash parameters. */
export function setConversationHash(id, { replace }) {
  const params = hashParams();
  if (id) params.set("c", id);
  else params.delete("c");
  setHash(params, { replace });
}

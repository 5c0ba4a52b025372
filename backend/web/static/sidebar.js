// The sidebar: the conversation list (paged, merged with local changes), rename and delete, and the drawer on
// narrow screens.

import { api } from "./api.js";
import { authNeeded } from "./auth.js";
import { el } from "./dom.js";
import { MOBILE_QUERY, announce, currentConversation, setHeading } from "./page.js";
import { flatten, icon } from "./reply.js";

const PAGE_SIZE = 20;
const SEARCH_DELAY_MS = 250; // typing pauses this long before a search is sent

const $ = (id) => document.getElementById(id);
const app = $("app");
const sidebar = $("sidebar");
const scrim = $("scrim");
const toggleButton = $("sidebar-toggle");
const closeButton = $("sidebar-close");
const newChatButton = $("new-chat");
const list = $("conversation-list");
const listEmpty = $("conversations-empty");
const listError = $("conversations-error");
const loadMoreButton = $("load-more");
const searchForm = $("search-form");
const searchInput = $("conversation-search");
const deleteDialog = $("delete-dialog");
const deleteText = $("delete-text");

let conversations = []; // summaries {id, title, preview, updated_at}, newest first
let nextCursor = null;
let loadingList = false;
let listGeneration = 0; // bumped by every reset of the list: an answer for an older generation is dropped
let listVersion = 0; // bumped by every local change to the list (a reply started, a rename, a delete)
const listChanges = new Map(); // id -> {version, deleted}: local changes a list response fetched earlier cannot know
let editingId = null;
let searchQuery = ""; // the words the list is filtered by ("" : the plain list)
let searchTimer = null;
let hooks = { streamingIn: () => false, beforeDelete: () => {}, afterDelete: () => {}, onNewChat: () => {} };

/** A one-line preview without the most common Markdown markers (the server stores replies as Markdown). */
function plainPreview(text) {
  if (!text) return "";
  return flatten(text.replace(/(\*\*|__|~~|`+)/g, "").replace(/(^|\s)(#{1,6}|[-*+]|>)\s+/g, "$1"));
}

/** The summary of a conversation in the list (a live object: changing its `preview` shows at the next render). */
export function conversationById(id) {
  return conversations.find((c) => c.id === id);
}

function noteListChange(id, { deleted = false } = {}) {
  listVersion += 1;
  listChanges.set(id, { version: listVersion, deleted });
}

/** Put a new or updated conversation on top of the list, and render (in search results: update it in place). */
export function upsertConversationOnTop(summary) {
  const existing = conversationById(summary.id);
  if (searchQuery) {
    if (existing) Object.assign(existing, summary);
    noteListChange(summary.id);
    renderConversations();
    return;
  }
  conversations = conversations.filter((c) => c.id !== summary.id);
  conversations.unshift({ ...existing, ...summary });
  noteListChange(summary.id);
  renderConversations();
}

/** Take a conversation out of the list (deleted, or found missing); the caller renders. */
export function removeConversation(id) {
  conversations = conversations.filter((c) => c.id !== id);
  noteListChange(id, { deleted: true });
}

/**
 * Merge a page of the list fetched when the list was at `since` into the current state. Conversations changed here
 * after that (a reply that just started, a rename, a delete) keep their local state: the page cannot know them.
 */
function mergeListPage(items, { reset, since }) {
  const local = new Map(conversations.map((c) => [c.id, c]));
  const newer = [...listChanges].filter(([, change]) => change.version > since);
  const changedHere = new Set(newer.map(([id]) => id));
  const merged = reset ? [] : conversations.slice();
  const seen = new Set(merged.map((c) => c.id));
  for (const item of items) {
    if (seen.has(item.id) || changedHere.has(item.id)) continue;
    seen.add(item.id);
    merged.push(item);
  }
  if (reset && !searchQuery) {
    // Newest local change first, on top: each was either just created/updated here or moved to the top by it.
    newer.sort((a, b) => b[1].version - a[1].version);
    const onTop = newer.filter(([id, change]) => !change.deleted && local.has(id)).map(([id]) => local.get(id));
    merged.unshift(...onTop);
    for (const [id, change] of listChanges) if (change.version <= since) listChanges.delete(id);
  }
  conversations = merged;
}

export function renderConversations() {
  if (editingId && list.querySelector('[data-testid="rename-input"]')) {
    return; // never rebuild the list under the rename box; commitRename renders afterwards
  }
  const focused = document.activeElement;
  const restore =
    focused && list.contains(focused) ? { id: focused.closest("li")?.dataset.id, testid: focused.dataset.testid } : null;
  list.replaceChildren(...conversations.map(renderConversationItem));
  listEmpty.hidden = conversations.length > 0 || loadingList || !listError.hidden;
  listEmpty.textContent = authNeeded()
    ? "Sign in with a token to see your conversations."
    : searchQuery
      ? "No conversation matches."
      : "No conversations yet.";
  loadMoreButton.hidden = !nextCursor;
  if (restore && restore.id && !editingId) focusConversationButton(restore.id, restore.testid);
}

function renderConversationItem(conversation) {
  const li = el("li", { className: "conversation", testid: "conversation-item" });
  li.dataset.id = conversation.id;
  const active = conversation.id === currentConversation();
  const streaming = hooks.streamingIn(conversation.id);
  li.classList.toggle("is-active", active);
  li.classList.toggle("is-streaming", Boolean(streaming));

  if (editingId === conversation.id) {
    li.append(renameForm(conversation));
    return li;
  }
  const link = el("a", { className: "conversation-link", testid: "conversation-link" });
  link.href = `#c=${encodeURIComponent(conversation.id)}`;
  if (active) link.setAttribute("aria-current", "page");
  const title = el("span", { className: "conversation-title", text: conversation.title, testid: "conversation-item-title" });
  link.append(title);
  if (searchQuery && conversation.snippet) {
    link.append(snippetOf(conversation.snippet, conversation.snippet_highlights || []));
  } else {
    const preview = plainPreview(conversation.preview);
    if (preview) link.append(el("span", { className: "conversation-preview", text: preview }));
  }
  if (streaming) {
    const dot = el("span", { className: "streaming-dot", testid: "conversation-streaming" });
    dot.append(el("span", { className: "sr-only", text: "(replying)" }));
    link.append(dot);
  }
  link.addEventListener("click", () => {
    if (MOBILE_QUERY.matches) setSidebar(false);
  });

  const actions = el("div", { className: "conversation-actions" });
  const rename = el("button", { className: "btn-icon small", testid: "rename-conversation" });
  rename.type = "button";
  rename.setAttribute("aria-label", `Rename “${conversation.title}”`);
  rename.title = "Rename";
  rename.append(icon("pencil"));
  rename.addEventListener("click", () => startRename(conversation.id));
  const remove = el("button", { className: "btn-icon small danger", testid: "delete-conversation" });
  remove.type = "button";
  remove.setAttribute("aria-label", `Delete “${conversation.title}”`);
  remove.title = "Delete";
  remove.append(icon("trash"));
  remove.addEventListener("click", () => confirmDelete(conversation.id));
  actions.append(rename, remove);
  li.append(link, actions);
  return li;
}

/** A search result's passage, its matched words in <mark> (text nodes only: the passage is the user's text). */
function snippetOf(text, highlights) {
  const span = el("span", { className: "conversation-snippet", testid: "conversation-snippet" });
  let at = 0;
  for (const { start, end } of highlights) {
    if (start < at || end > text.length) continue;
    span.append(document.createTextNode(text.slice(at, start)), el("mark", { text: text.slice(start, end) }));
    at = end;
  }
  span.append(document.createTextNode(text.slice(at)));
  return span;
}

/** Filter the list by `value` (blank: the plain list again). */
function searchFor(value) {
  const query = value.trim();
  if (query === searchQuery) return;
  searchQuery = query;
  nextCursor = null;
  loadConversations({ reset: true });
}

/** Load the first page (`reset`, superseding any load in flight) or the next one ("Load more"). */
export async function loadConversations({ reset }) {
  if (!reset && loadingList) return; // one "Load more" at a time; a reset supersedes whatever is in flight
  if (reset) listGeneration += 1;
  const generation = listGeneration;
  const since = listVersion;
  const stale = () => generation !== listGeneration;
  loadingList = true;
  loadMoreButton.disabled = true;
  const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
  if (searchQuery) params.set("q", searchQuery);
  if (!reset && nextCursor) params.set("cursor", nextCursor);
  try {
    const response = await api(`/api/conversations?${params}`);
    const page = await response.json();
    if (stale()) return; // a newer reset was asked for: this answer must not overwrite what it brings
    listError.hidden = true;
    mergeListPage(page.data, { reset, since });
    nextCursor = page.next_cursor;
    const current = currentConversation() && conversationById(currentConversation());
    if (current) setHeading(current.title);
  } catch (error) {
    if (!stale() && error.status !== 401) {
      listError.textContent = `Could not load conversations: ${error.message}`;
      listError.hidden = false;
    }
  } finally {
    if (!stale()) {
      loadingList = false;
      loadMoreButton.disabled = false;
      renderConversations();
    }
  }
}

function renameForm(conversation) {
  const form = el("form", { className: "rename-form", testid: "rename-form" });
  const input = el("input", { className: "rename-input", testid: "rename-input" });
  input.type = "text";
  input.value = conversation.title;
  input.maxLength = 200;
  input.required = true;
  input.setAttribute("aria-label", "Conversation title");
  let settled = false;
  const finish = (save) => {
    if (settled) return;
    settled = true;
    commitRename(conversation.id, save ? input.value : null);
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    finish(true);
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      event.preventDefault();
      event.stopPropagation();
      finish(false);
    }
  });
  input.addEventListener("blur", () => finish(true));
  form.append(input);
  window.requestAnimationFrame(() => {
    input.focus();
    input.select();
  });
  return form;
}

function startRename(id) {
  if (editingId) return;
  editingId = id;
  renderConversations();
}

function focusConversationButton(id, testid) {
  const li = list.querySelector(`[data-id="${CSS.escape(id)}"]`);
  li?.querySelector(`[data-testid="${testid}"]`)?.focus();
}

async function commitRename(id, value) {
  editingId = null;
  const conversation = conversationById(id);
  const title = value === null ? "" : value.trim();
  if (!conversation || !title || title === conversation.title) {
    renderConversations();
    focusConversationButton(id, "rename-conversation");
    return;
  }
  const previous = conversation.title;
  conversation.title = title; // optimistic
  noteListChange(id);
  renderConversations();
  if (currentConversation() === id) setHeading(title);
  focusConversationButton(id, "rename-conversation");
  try {
    const response = await api(`/api/conversations/${encodeURIComponent(id)}`, { method: "PATCH", body: { title } });
    const updated = await response.json();
    upsertConversationOnTop({ id, title: updated.title, updated_at: updated.updated_at });
    if (currentConversation() === id) setHeading(updated.title);
    announce(`Renamed to ${updated.title}.`);
  } catch (error) {
    conversation.title = previous;
    renderConversations();
    if (currentConversation() === id) setHeading(previous);
    announce(`Could not rename: ${error.message}`);
    showListError(`Could not rename: ${error.message}`);
  }
}

/** Show an error above the list for a few seconds. */
export function showListError(message) {
  listError.textContent = message;
  listError.hidden = false;
  window.setTimeout(() => {
    listError.hidden = true;
  }, 6000);
}

function confirmDelete(id) {
  const conversation = conversationById(id);
  if (!conversation) return;
  deleteText.textContent = `“${conversation.title}” and all of its messages will be deleted. This cannot be undone.`;
  deleteDialog.returnValue = "";
  deleteDialog.dataset.id = id;
  deleteDialog.showModal();
  deleteDialog.querySelector('[data-testid="delete-cancel"]').focus();
}

async function onDeleteClosed() {
  const id = deleteDialog.dataset.id;
  delete deleteDialog.dataset.id;
  if (deleteDialog.returnValue !== "confirm" || !id) {
    if (id) focusConversationButton(id, "delete-conversation");
    return;
  }
  hooks.beforeDelete(id);
  try {
    await api(`/api/conversations/${encodeURIComponent(id)}`, { method: "DELETE" });
  } catch (error) {
    if (error.status !== 404) {
      showListError(`Could not delete: ${error.message}`);
      return;
    }
  }
  removeConversation(id);
  renderConversations();
  announce("Conversation deleted.");
  hooks.afterDelete(id);
  newChatButton.focus();
}

function setSidebar(open) {
  app.classList.toggle("sidebar-open", open);
  toggleButton.setAttribute("aria-expanded", String(open));
  scrim.hidden = !open;
  syncSidebarInert();
  if (open) newChatButton.focus();
}

function syncSidebarInert() {
  const open = app.classList.contains("sidebar-open");
  sidebar.inert = MOBILE_QUERY.matches && !open;
  if (!MOBILE_QUERY.matches) scrim.hidden = true;
}

/**
 * Wire the sidebar. Hooks: `streamingIn(id)` (a reply streams in that conversation), `beforeDelete(id)` and
 * `afterDelete(id)` (around deleting a conversation), `onNewChat()` (the New chat button).
 */
export function initSidebar({ streamingIn, beforeDelete, afterDelete, onNewChat }) {
  hooks = { streamingIn, beforeDelete, afterDelete, onNewChat };
  newChatButton.addEventListener("click", () => {
    if (MOBILE_QUERY.matches) setSidebar(false);
    hooks.onNewChat();
  });
  loadMoreButton.addEventListener("click", () => loadConversations({ reset: false }));
  searchInput.addEventListener("input", () => {
    window.clearTimeout(searchTimer);
    searchTimer = window.setTimeout(() => searchFor(searchInput.value), SEARCH_DELAY_MS);
  });
  searchForm.addEventListener("submit", (event) => {
    event.preventDefault();
    window.clearTimeout(searchTimer);
    searchFor(searchInput.value);
  });
  searchInput.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && searchInput.value) {
      event.preventDefault();
      event.stopPropagation();
      searchInput.value = "";
      window.clearTimeout(searchTimer);
      searchFor("");
    }
  });
  toggleButton.addEventListener("click", () => setSidebar(!app.classList.contains("sidebar-open")));
  closeButton.addEventListener("click", () => {
    setSidebar(false);
    toggleButton.focus();
  });
  scrim.addEventListener("click", () => setSidebar(false));
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && app.classList.contains("sidebar-open") && MOBILE_QUERY.matches) {
      setSidebar(false);
      toggleButton.focus();
    }
  });
  MOBILE_QUERY.addEventListener("change", () => {
    if (!MOBILE_QUERY.matches) setSidebar(false);
    syncSidebarInert();
  });
  deleteDialog.addEventListener("close", onDeleteClosed);
  syncSidebarInert();
}

// The reference chat page: conversations sidebar, message pane, streaming composer. Plain JS, no build step.
//
// Every piece of text from users, the model or tools reaches the DOM through textContent (directly, or through the
// DOM-building Markdown renderer in markdown.js); nothing is ever assigned to innerHTML.

import { readEventStream } from "./sse.js";
import { updateWidget } from "./widgets.js";
import { AttachmentTray, attachmentList } from "./attachments.js";
import { el } from "./dom.js";
import { ReplyView, flatten, icon, truncate } from "./reply.js";
import { StreamLostError, Turn, newId } from "./turns.js";
import { applyTheme, runClientTool, storedTheme } from "./client_tools.js";

const TOKEN_KEY = "chat.token";
const PAGE_SIZE = 20;
const MESSAGE_PAGE_SIZE = 500;
const PREVIEW_CHARS = 120;
const MOBILE_QUERY = window.matchMedia("(max-width: 720px)");
const ERROR_MESSAGES = {
  rate_limited: "The model provider is rate limiting requests. Try again shortly.",
  provider_unavailable: "The model provider is unavailable. Try again shortly.",
  provider_error: "The model provider rejected the request.",
  max_turns: "The assistant needed too many steps and stopped.",
  server_shutdown: "The server is restarting. Send the message again.",
  turn_timeout: "The reply took too long and was stopped.",
  interrupted: "The server stopped while replying, so the reply is cut short.",
  internal: "An internal error occurred.",
};

const $ = (id) => document.getElementById(id);
const ui = {
  app: $("app"),
  sidebar: $("sidebar"),
  scrim: $("scrim"),
  sidebarToggle: $("sidebar-toggle"),
  sidebarClose: $("sidebar-close"),
  newChat: $("new-chat"),
  list: $("conversation-list"),
  listEmpty: $("conversations-empty"),
  listError: $("conversations-error"),
  loadMore: $("load-more"),
  tokenButton: $("token-button"),
  title: $("chat-title"),
  authBanner: $("auth-banner"),
  authBannerButton: $("auth-banner-button"),
  messages: $("messages"),
  thread: $("thread"),
  emptyState: $("empty-state"),
  composer: $("composer"),
  input: $("composer-input"),
  send: $("send-button"),
  stop: $("stop-button"),
  status: $("status"),
  tokenDialog: $("token-dialog"),
  tokenForm: $("token-form"),
  tokenInput: $("token-input"),
  tokenReason: $("token-reason"),
  tokenCancel: $("token-cancel"),
  deleteDialog: $("delete-dialog"),
  deleteText: $("delete-text"),
};

const state = {
  token: readStoredToken(),
  conversations: [], // summaries {id, title, preview, updated_at}, newest first
  nextCursor: null,
  loadingList: false,
  listGeneration: 0, // bumped by every reset of the list: an answer for an older generation is dropped
  listVersion: 0, // bumped by every local change to the list (a reply started, a rename, a delete)
  listChanges: new Map(), // id -> {version, deleted}: local changes a list response fetched earlier cannot know
  currentId: null,
  openSeq: 0, // bumped on every navigation so that late responses for an old view are dropped
  run: null, // the Turn streaming a reply, if any: one at a time
  answering: null, // {view, conversationId}: the paused reply whose approvals wait for the user, if any
  editingId: null,
  renderPending: false,
  authNeeded: false,
};

// --- small helpers -------------------------------------------------------------------------------------------------

function readStoredToken() {
  try {
    return window.localStorage.getItem(TOKEN_KEY);
  } catch {
    return null;
  }
}

function storeToken(token) {
  state.token = token;
  try {
    if (token) window.localStorage.setItem(TOKEN_KEY, token);
    else window.localStorage.removeItem(TOKEN_KEY);
  } catch {
    // storage disabled: keep the token for this page only
  }
  ui.tokenButton.hidden = !token;
}

/** A one-line preview without the most common Markdown markers (the server stores replies as Markdown). */
function plainPreview(text) {
  if (!text) return "";
  return flatten(text.replace(/(\*\*|__|~~|`+)/g, "").replace(/(^|\s)(#{1,6}|[-*+]|>)\s+/g, "$1"));
}

function announce(message) {
  ui.status.textContent = "";
  window.setTimeout(() => {
    ui.status.textContent = message;
  }, 30);
}

function hashParams() {
  return new URLSearchParams(window.location.hash.replace(/^#/, ""));
}

function setHash(params, { replace }) {
  const hash = params.toString();
  const url = `${window.location.pathname}${window.location.search}${hash ? `#${hash}` : ""}`;
  if (replace) window.history.replaceState(null, "", url);
  else window.history.pushState(null, "", url);
}

// --- the API -------------------------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
  }
}

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
async function api(path, { method = "GET", body, signal, accept = "application/json", headers: extra = {} } = {}) {
  const headers = { ...extra, Accept: accept };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
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

// --- authentication ------------------------------------------------------------------------------------------------

function requireToken(reason) {
  state.authNeeded = true;
  ui.authBanner.hidden = false;
  // Only a rejected token gets a reason; a first visit without one just gets the explanation in the dialog.
  ui.tokenReason.textContent = state.token && reason ? `The saved token was not accepted: ${reason}` : "";
  ui.tokenReason.hidden = !ui.tokenReason.textContent;
  renderConversations();
  openTokenDialog();
}

function openTokenDialog() {
  if (ui.tokenDialog.open) return;
  ui.tokenInput.value = "";
  ui.tokenDialog.showModal();
  ui.tokenInput.focus();
}

function takeTokenFromHash() {
  const params = hashParams();
  const token = params.get("token");
  if (token === null) return false;
  params.delete("token");
  setHash(params, { replace: true }); // the token must not stay in the address bar or the history
  if (token.trim()) storeToken(token.trim());
  return true;
}

function onTokenSubmit(event) {
  event.preventDefault();
  const token = ui.tokenInput.value.trim().replace(/^bearer\s+/i, "");
  if (!token) {
    ui.tokenInput.focus();
    return;
  }
  storeToken(token);
  ui.tokenDialog.close();
  ui.tokenInput.value = "";
  state.authNeeded = false;
  ui.authBanner.hidden = true;
  announce("Token saved.");
  reloadEverything();
  ui.input.focus();
}

function reloadEverything() {
  loadConversations({ reset: true });
  if (state.currentId) openConversation(state.currentId);
}

// --- the sidebar ---------------------------------------------------------------------------------------------------

function conversationById(id) {
  return state.conversations.find((c) => c.id === id);
}

function noteListChange(id, { deleted = false } = {}) {
  state.listVersion += 1;
  state.listChanges.set(id, { version: state.listVersion, deleted });
}

function upsertConversationOnTop(summary) {
  const existing = conversationById(summary.id);
  state.conversations = state.conversations.filter((c) => c.id !== summary.id);
  state.conversations.unshift({ ...existing, ...summary });
  noteListChange(summary.id);
  renderConversations();
}

function removeConversation(id) {
  state.conversations = state.conversations.filter((c) => c.id !== id);
  noteListChange(id, { deleted: true });
}

/**
 * Merge a page of the list fetched when the list was at `since` into the current state. Conversations changed here
 * after that (a reply that just started, a rename, a delete) keep their local state: the page cannot know them.
 */
function mergeListPage(items, { reset, since }) {
  const local = new Map(state.conversations.map((c) => [c.id, c]));
  const newer = [...state.listChanges].filter(([, change]) => change.version > since);
  const changedHere = new Set(newer.map(([id]) => id));
  const merged = reset ? [] : state.conversations.slice();
  const seen = new Set(merged.map((c) => c.id));
  for (const item of items) {
    if (seen.has(item.id) || changedHere.has(item.id)) continue;
    seen.add(item.id);
    merged.push(item);
  }
  if (reset) {
    // Newest local change first, on top: each was either just created/updated here or moved to the top by it.
    newer.sort((a, b) => b[1].version - a[1].version);
    const onTop = newer.filter(([id, change]) => !change.deleted && local.has(id)).map(([id]) => local.get(id));
    merged.unshift(...onTop);
    for (const [id, change] of state.listChanges) if (change.version <= since) state.listChanges.delete(id);
  }
  state.conversations = merged;
}

function renderConversations() {
  if (state.editingId && ui.list.querySelector('[data-testid="rename-input"]')) {
    state.renderPending = true; // never rebuild the list under the rename box; commitRename renders afterwards
    return;
  }
  state.renderPending = false;
  const focused = document.activeElement;
  const restore =
    focused && ui.list.contains(focused) ? { id: focused.closest("li")?.dataset.id, testid: focused.dataset.testid } : null;
  ui.list.replaceChildren(...state.conversations.map(renderConversationItem));
  ui.listEmpty.hidden = state.conversations.length > 0 || state.loadingList || !ui.listError.hidden;
  ui.listEmpty.textContent = state.authNeeded ? "Sign in with a token to see your conversations." : "No conversations yet.";
  ui.loadMore.hidden = !state.nextCursor;
  if (restore && restore.id && !state.editingId) focusConversationButton(restore.id, restore.testid);
}

function renderConversationItem(conversation) {
  const li = el("li", { className: "conversation", testid: "conversation-item" });
  li.dataset.id = conversation.id;
  const active = conversation.id === state.currentId;
  const streaming = state.run && state.run.conversationId === conversation.id;
  li.classList.toggle("is-active", active);
  li.classList.toggle("is-streaming", Boolean(streaming));

  if (state.editingId === conversation.id) {
    li.append(renameForm(conversation));
    return li;
  }
  const link = el("a", { className: "conversation-link", testid: "conversation-link" });
  link.href = `#c=${encodeURIComponent(conversation.id)}`;
  if (active) link.setAttribute("aria-current", "page");
  const title = el("span", { className: "conversation-title", text: conversation.title, testid: "conversation-item-title" });
  link.append(title);
  const preview = plainPreview(conversation.preview);
  if (preview) link.append(el("span", { className: "conversation-preview", text: preview }));
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

async function loadConversations({ reset }) {
  if (!reset && state.loadingList) return; // one "Load more" at a time; a reset supersedes whatever is in flight
  const generation = reset ? ++state.listGeneration : state.listGeneration;
  const since = state.listVersion;
  const stale = () => generation !== state.listGeneration;
  state.loadingList = true;
  ui.loadMore.disabled = true;
  const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
  if (!reset && state.nextCursor) params.set("cursor", state.nextCursor);
  try {
    const response = await api(`/api/conversations?${params}`);
    const page = await response.json();
    if (stale()) return; // a newer reset was asked for: this answer must not overwrite what it brings
    ui.listError.hidden = true;
    mergeListPage(page.data, { reset, since });
    state.nextCursor = page.next_cursor;
    const current = state.currentId && conversationById(state.currentId);
    if (current) ui.title.textContent = current.title;
  } catch (error) {
    if (!stale() && error.status !== 401) {
      ui.listError.textContent = `Could not load conversations: ${error.message}`;
      ui.listError.hidden = false;
    }
  } finally {
    if (!stale()) {
      state.loadingList = false;
      ui.loadMore.disabled = false;
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
  if (state.editingId) return;
  state.editingId = id;
  renderConversations();
}

function focusConversationButton(id, testid) {
  const li = ui.list.querySelector(`[data-id="${CSS.escape(id)}"]`);
  li?.querySelector(`[data-testid="${testid}"]`)?.focus();
}

async function commitRename(id, value) {
  state.editingId = null;
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
  if (state.currentId === id) ui.title.textContent = title;
  focusConversationButton(id, "rename-conversation");
  try {
    const response = await api(`/api/conversations/${encodeURIComponent(id)}`, { method: "PATCH", body: { title } });
    const updated = await response.json();
    upsertConversationOnTop({ id, title: updated.title, updated_at: updated.updated_at });
    if (state.currentId === id) ui.title.textContent = updated.title;
    announce(`Renamed to ${updated.title}.`);
  } catch (error) {
    conversation.title = previous;
    renderConversations();
    if (state.currentId === id) ui.title.textContent = previous;
    announce(`Could not rename: ${error.message}`);
    showListError(`Could not rename: ${error.message}`);
  }
}

function showListError(message) {
  ui.listError.textContent = message;
  ui.listError.hidden = false;
  window.setTimeout(() => {
    ui.listError.hidden = true;
  }, 6000);
}

function confirmDelete(id) {
  const conversation = conversationById(id);
  if (!conversation) return;
  ui.deleteText.textContent = `“${conversation.title}” and all of its messages will be deleted. This cannot be undone.`;
  ui.deleteDialog.returnValue = "";
  ui.deleteDialog.dataset.id = id;
  ui.deleteDialog.showModal();
  ui.deleteDialog.querySelector('[data-testid="delete-cancel"]').focus();
}

async function onDeleteClosed() {
  const id = ui.deleteDialog.dataset.id;
  delete ui.deleteDialog.dataset.id;
  if (ui.deleteDialog.returnValue !== "confirm" || !id) {
    if (id) focusConversationButton(id, "delete-conversation");
    return;
  }
  if (state.run && state.run.conversationId === id) state.run.abort();
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
  if (state.currentId === id) showNewChat({ replace: true });
  ui.newChat.focus();
}

function setSidebar(open) {
  ui.app.classList.toggle("sidebar-open", open);
  ui.sidebarToggle.setAttribute("aria-expanded", String(open));
  ui.scrim.hidden = !open;
  syncSidebarInert();
  if (open) ui.newChat.focus();
}

function syncSidebarInert() {
  const open = ui.app.classList.contains("sidebar-open");
  ui.sidebar.inert = MOBILE_QUERY.matches && !open;
  if (!MOBILE_QUERY.matches) ui.scrim.hidden = true;
}

// --- messages ------------------------------------------------------------------------------------------------------

function scrollToBottom() {
  ui.messages.scrollTop = ui.messages.scrollHeight;
}

function userMessage(text, attachments) {
  const article = el("article", { className: "msg msg-user", testid: "message" });
  article.dataset.role = "user";
  const body = el("div", { className: "msg-body" });
  body.append(el("span", { className: "sr-only", text: "You said:" }));
  body.append(el("div", { className: "bubble", text, testid: "message-text" }));
  if (attachments && attachments.length) body.append(attachmentList(attachments, () => state.token));
  article.append(body);
  return article;
}

/** The agent that ended the last reply shown (a new reply labels its agent only when it differs). */
function lastAgentShown() {
  const replies = ui.thread.querySelectorAll('[data-testid="message"][data-role="assistant"]');
  for (let i = replies.length - 1; i >= 0; i--) if (replies[i].dataset.agent) return replies[i].dataset.agent;
  return null;
}

function newReplyView(previousAgent = lastAgentShown()) {
  return new ReplyView({ onWidgetAction: sendWidgetAction, previousAgent });
}

function errorText(code) {
  return ERROR_MESSAGES[code] || "The reply failed.";
}

function assistantFromHistory(message, { onRetry, previousAgent }) {
  const view = newReplyView(previousAgent);
  view.article.dataset.id = message.id;
  view.load(message.parts);
  if (message.status === "cancelled") view.markStopped();
  // A reply cut short by a server restart is saved as cancelled or interrupted *with* an error code: show both.
  if (message.status === "error" || message.error_code) view.showError(errorText(message.error_code), onRetry);
  view.finish({ paused: message.status === "requires_action" });
  return view;
}

/**
 * Render a loaded conversation. The running reply (`activeId`, or a last message still `in_progress`) gets an empty
 * view to rejoin into (`live`); a last reply waiting for approvals or a browser tool is returned as `paused`.
 */
function renderHistory(messages, activeId) {
  const nodes = [];
  let lastUserText = null;
  let previousAgent = null;
  let live = null;
  let paused = null;
  messages.forEach((message, index) => {
    if (message.role === "user") {
      lastUserText = message.content;
      const node = userMessage(message.content, message.attachments);
      node.dataset.id = message.id;
      nodes.push(node);
      return;
    }
    const isLast = index === messages.length - 1;
    let view;
    if (message.id === activeId || (isLast && message.status === "in_progress")) {
      view = newReplyView(previousAgent);
      view.article.dataset.id = message.id;
      live = { message, view };
    } else {
      const retryText = lastUserText;
      view = assistantFromHistory(message, {
        previousAgent,
        onRetry: isLast && retryText ? () => retry(view, retryText, { savedOnServer: true }) : null,
      });
      if (isLast && message.status === "requires_action") paused = { message, view };
    }
    previousAgent = view.article.dataset.agent || previousAgent;
    nodes.push(view.article);
  });
  ui.thread.replaceChildren(...nodes);
  return { live, paused };
}

function showEmptyState(show) {
  ui.emptyState.hidden = !show;
  ui.thread.hidden = show;
}

function showNotice(message, { onRetry } = {}) {
  const notice = el("div", { className: "notice", testid: "thread-notice", attrs: { role: "alert" } });
  notice.append(el("p", { text: message }));
  if (onRetry) {
    const button = el("button", { className: "btn", text: "Try again" });
    button.type = "button";
    button.addEventListener("click", onRetry);
    notice.append(button);
  }
  ui.thread.replaceChildren(notice);
  showEmptyState(false);
}

// --- navigation ----------------------------------------------------------------------------------------------------

function showNewChat({ replace = false, push = false } = {}) {
  state.openSeq++;
  state.currentId = null;
  ui.title.textContent = "New chat";
  document.title = "Chat";
  ui.thread.replaceChildren();
  showEmptyState(true);
  renderConversations();
  if (replace || push) {
    const params = hashParams();
    params.delete("c");
    setHash(params, { replace });
  }
  updateComposer();
}

async function loadAllMessages(id) {
  let cursor = null;
  let detail = null;
  const messages = [];
  do {
    const params = new URLSearchParams({ limit: String(MESSAGE_PAGE_SIZE) });
    if (cursor) params.set("cursor", cursor);
    const response = await api(`/api/conversations/${encodeURIComponent(id)}?${params}`);
    detail = await response.json();
    messages.push(...detail.messages);
    cursor = detail.next_cursor;
  } while (cursor);
  return { ...detail, messages };
}

async function openConversation(id) {
  const seq = ++state.openSeq;
  state.currentId = id;
  const known = conversationById(id);
  ui.title.textContent = known ? known.title : "Loading…";
  showEmptyState(false);
  const loading = el("div", { className: "loading", testid: "thread-loading", text: "Loading conversation…" });
  ui.thread.replaceChildren(loading);
  renderConversations();
  updateComposer();
  try {
    const detail = await loadAllMessages(id);
    if (seq !== state.openSeq) return;
    ui.title.textContent = detail.title;
    document.title = `${detail.title} · Chat`;
    state.answering = null; // the view it points at is replaced
    const { live, paused } = renderHistory(detail.messages, detail.active_message_id);
    const run = state.run;
    if (run && run.conversationId === id) {
      // The reply streaming in this page: show its live view in place of the stored one.
      const stored = run.messageId && ui.thread.querySelector(`[data-role="assistant"][data-id="${CSS.escape(run.messageId)}"]`);
      if (stored) stored.replaceWith(run.view.article);
      else ui.thread.append(run.view.article);
    } else if (live && !run) {
      rejoinTurn(id, live.view);
    } else if (live) {
      live.view.load(live.message.parts); // another reply streams in this page: show this one as stored so far
      live.view.finish();
    }
    if (paused && !run) awaitAnswers(paused.view, id, paused.message.id);
    scrollToBottom();
  } catch (error) {
    if (seq !== state.openSeq) return;
    if (error.status === 404 || error.status === 422) {
      removeConversation(id);
      state.currentId = null;
      const params = hashParams();
      params.delete("c");
      setHash(params, { replace: true });
      ui.title.textContent = "Not found";
      renderConversations();
      showNotice("This conversation does not exist. It may have been deleted.");
    } else if (error.status === 401) {
      showNotice("Sign in with a token to see this conversation.", { onRetry: () => openTokenDialog() });
    } else {
      showNotice(`Could not load this conversation: ${error.message}`, { onRetry: () => openConversation(id) });
    }
  }
}

function route() {
  const id = hashParams().get("c");
  if (id && id !== state.currentId) openConversation(id);
  else if (!id) showNewChat();
}

// --- sending and streaming -----------------------------------------------------------------------------------------

function updateComposer() {
  const busy = Boolean(state.run);
  ui.send.hidden = busy;
  ui.stop.hidden = !busy;
  ui.send.disabled = busy || !ui.input.value.trim() || tray.uploading();
  ui.composer.classList.toggle("is-busy", busy);
  ui.composer.setAttribute("aria-busy", String(busy));
}

function autosize() {
  ui.input.style.height = "auto";
  ui.input.style.height = `${Math.min(ui.input.scrollHeight, 220)}px`;
}

function submitComposer() {
  const text = ui.input.value;
  if (!text.trim() || state.run || tray.uploading()) return;
  const attachments = tray.files();
  ui.input.value = "";
  tray.clear();
  autosize();
  sendMessage(text.trim(), attachments);
}

/**
 * Send a widget's action (a checkbox or button was used): `POST /chatkit {thread_id, action}`. The server routes it to
 * its handler (not the model) and streams back replacement widgets and possibly a short reply, which it stores as a
 * new assistant message: it is shown (and announced) as one here too, as a reload would show it.
 * Rejects when the action failed, so the widget can undo the control's change.
 */
async function sendWidgetAction(action) {
  const threadId = state.currentId;
  if (!threadId) throw new Error("no conversation");
  let messageId = null;
  let view = null;
  try {
    const response = await api("/chatkit", {
      method: "POST",
      body: { thread_id: threadId, action },
      accept: "text/event-stream",
    });
    await readEventStream(response.body, (event) => {
      if (event.type === "start") messageId = event.message_id;
      else if (event.type === "widget" && event.widget) updateWidget(ui.thread, { ...event.widget, id: event.id });
      else if (event.type === "error") throw Object.assign(new Error(event.message || "The action failed."), event);
      else if (event.type === "text" && state.currentId === threadId) {
        if (!view) {
          view = newReplyView();
          if (messageId) view.article.dataset.id = messageId;
          ui.thread.append(view.article);
        }
        view.event(event);
      }
    });
  } catch (error) {
    showListError(`Could not do that: ${error.message}`);
    announce(`Could not do that: ${error.message}`);
    throw error;
  } finally {
    view?.finish();
  }
  if (view) {
    scrollToBottom();
    announce(view.text);
  }
}

/** Send a message. A Retry after a network failure reuses `clientMessageId`, so the server never runs it twice. */
function sendMessage(text, attachments = [], clientMessageId = newId()) {
  if (state.run) return;
  cancelPendingAnswers();
  showEmptyState(false);
  const userNode = userMessage(text, attachments);
  const view = newReplyView();
  ui.thread.append(userNode, view.article);
  scrollToBottom();
  const turn = newTurn(view, { conversationId: state.currentId });
  announce("Sent. The assistant is replying.");
  const retryLater = (savedOnServer) => () =>
    retry(view, text, { savedOnServer, attachments, clientMessageId: savedOnServer ? null : clientMessageId });
  return runTurn(turn, () => turn.send({ text, attachments, clientMessageId }), {
    retry: retryLater(true),
    onFailure(error) {
      if (error.status === 401) {
        // Not sent: give the text back so it can be sent once a token is saved.
        userNode.remove();
        view.article.remove();
        giveBack(text);
        if (!ui.thread.childElementCount && !state.currentId) showEmptyState(true);
      } else if (!turn.started && [404, 409, 413, 422].includes(error.status)) {
        // Sending it again cannot work (conversation gone, message too long): no Retry; give the text back to edit.
        view.showError(error.message || "The message was not accepted.", null);
        giveBack(text);
      } else if (error instanceof StreamLostError || error.status === 0) {
        // The network failed: a Retry sends the same client_message_id, which attaches to the turn if it began.
        view.showError(error.message, retryLater(false));
      } else {
        view.showError(error.message || "The reply failed.", retryLater(true));
      }
    },
  });
}

function giveBack(text) {
  if (ui.input.value.trim()) return;
  ui.input.value = text;
  autosize();
}

function retry(view, text, { savedOnServer, attachments = [], clientMessageId = null }) {
  if (state.run) return;
  if (savedOnServer) {
    view.removeRetry();
  } else {
    // Nothing of the failed attempt is shown again: the retry replays the turn if the server began it.
    const user = view.article.previousElementSibling;
    if (user && user.dataset.role === "user") user.remove();
    view.article.remove();
  }
  sendMessage(text, attachments, clientMessageId || newId());
}

/** Rejoin a turn that runs on the server (after a reload, or when opening its conversation) from its start. */
function rejoinTurn(conversationId, view) {
  const turn = newTurn(view, { conversationId, messageId: view.article.dataset.id });
  return runTurn(turn, () => turn.rejoin(0), {
    retry: () => openConversation(conversationId),
    onFailure(error) {
      view.showError(error.message || "Could not follow the reply.", () => openConversation(conversationId));
    },
  });
}

function newTurn(view, { conversationId, messageId = null }) {
  const turn = new Turn({ api, view, conversationId, messageId, onStart: onTurnStart });
  turn.newConversation = !conversationId;
  return turn;
}

function onTurnStart(turn, event) {
  const { view } = turn;
  view.article.dataset.id = event.message_id;
  const known = conversationById(event.conversation_id);
  upsertConversationOnTop({
    id: event.conversation_id,
    title: known ? known.title : event.title,
    preview: known ? known.preview : null,
    updated_at: new Date().toISOString(),
  });
  if (turn.newConversation && state.currentId === null && view.article.isConnected) {
    state.currentId = event.conversation_id;
    const params = hashParams();
    params.set("c", event.conversation_id);
    setHash(params, { replace: true });
    ui.title.textContent = event.title;
    document.title = `${event.title} · Chat`;
    renderConversations();
  }
  if (turn.stopRequested) requestStop(turn);
}

/**
 * Stream a turn into its view as the page's one running reply; afterwards show how it ended, and if it paused for
 * approvals or browser tools, wait for the answers. `retry` is the Retry of a reply that failed on the server;
 * `onFailure(error)` handles a request that failed or a stream that was lost.
 */
async function runTurn(turn, go, { retry: onRetry, onFailure }) {
  const { view } = turn;
  state.run = turn;
  view.clearFooter();
  view.setStreaming(true);
  updateComposer();
  renderConversations();
  try {
    await go();
    const reason = turn.finishReason;
    if (turn.failed) {
      const event = turn.errorEvent;
      view.showError(event.message || errorText(event.code), onRetry);
      announce(`Error: ${event.message || errorText(event.code)}`);
    } else if (reason === "error" || reason === "max_turns" || reason === "interrupted") {
      view.showError(errorText(reason === "error" ? "internal" : reason), onRetry);
    }
    if (reason === "cancelled") view.markStopped();
  } catch (error) {
    if (turn.stopped || error.name === "AbortError") view.markStopped();
    else onFailure(error);
  }
  const paused = !turn.stopped && ["approval_required", "client_tool"].includes(turn.finishReason);
  view.finish({ paused });
  if (state.run === turn) state.run = null;
  const conversation = turn.conversationId && conversationById(turn.conversationId);
  if (conversation && view.text) conversation.preview = truncate(flatten(view.text), PREVIEW_CHARS);
  if (!turn.conversationId) loadConversations({ reset: true }); // stopped before `start`: the server may have made one
  renderConversations();
  updateComposer();
  if (turn.stopped) announce("Reply stopped.");
  else if (paused) awaitAnswers(view, turn.conversationId, turn.messageId);
  else if (turn.finished && !turn.failed) announce("Reply finished.");
}

/**
 * A reply paused for approvals and/or browser tools: run the browser tools here, show Approve/Reject on the
 * approvals, and once nothing is pending post every answer; the continuation streams into the same reply.
 */
function awaitAnswers(view, conversationId, messageId) {
  const decisions = new Map();
  const results = new Map();
  for (const part of view.model.pending()) {
    if (part.type !== "client_tool") continue;
    const result = runClientTool(part.name, part.args);
    results.set(part.id, result);
    view.decide("client_tool", part.id, { result });
  }
  const submit = () => {
    if (view.model.pending().length) return;
    view.setAnswering(null);
    if (state.answering?.view === view) state.answering = null;
    const answers = {};
    if (decisions.size) answers.approvals = [...decisions].map(([id, approve]) => ({ id, approve }));
    if (results.size) answers.client_tool_results = [...results].map(([id, result]) => ({ id, result }));
    const turn = newTurn(view, { conversationId, messageId });
    runTurn(turn, () => turn.answer(answers), {
      retry: () => openConversation(conversationId),
      onFailure(error) {
        view.showError(`Could not send the answer: ${error.message}`, () => openConversation(conversationId));
      },
    });
  };
  if (!view.model.pending().length) {
    if (results.size) submit();
    return;
  }
  state.answering = { view, conversationId };
  view.setAnswering((id, approve) => {
    if (state.run) {
      announce("Wait until the current reply has finished.");
      return;
    }
    decisions.set(id, approve);
    view.decide("approval", id, { decision: approve ? "approved" : "rejected" });
    announce(approve ? "Approved." : "Rejected.");
    ui.input.focus();
    submit();
  });
  announce("The assistant is waiting for your approval.");
}

/** A new message in the conversation cancels its approvals still pending (the server does the same). */
function cancelPendingAnswers() {
  if (!state.answering || state.answering.conversationId !== state.currentId) return;
  const { view } = state.answering;
  state.answering = null;
  view.setAnswering(null);
  for (const part of view.model.pending()) {
    if (part.type === "approval") view.decide("approval", part.id, { decision: "cancelled" });
  }
}

async function requestStop(turn) {
  try {
    await api(`/api/conversations/${encodeURIComponent(turn.conversationId)}/stop`, { method: "POST", body: {} });
  } catch {
    // best effort: the local stream is closed anyway
  }
  turn.abort();
}

/** Stop: ask the server to stop the run (it may run elsewhere, or outlive this page's stream), then stop reading. */
function stopReply() {
  const turn = state.run;
  if (!turn || turn.stopRequested) return;
  turn.stopRequested = true;
  ui.input.focus();
  if (turn.conversationId) requestStop(turn);
  else window.setTimeout(() => turn.abort(), 3000); // `start` (with the conversation id) normally comes first
}

// --- wiring --------------------------------------------------------------------------------------------------------

const tray = new AttachmentTray({
  composer: ui.composer,
  box: ui.composer.querySelector(".composer-box"),
  input: ui.input,
  getToken: () => state.token,
  onChange: () => updateComposer(),
});

function bind() {
  ui.composer.addEventListener("submit", (event) => {
    event.preventDefault();
    submitComposer();
  });
  ui.input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.altKey && !event.ctrlKey && !event.metaKey) {
      if (event.isComposing || event.keyCode === 229) return; // an IME is composing
      event.preventDefault();
      submitComposer();
    } else if (event.key === "Escape" && state.run) {
      event.preventDefault();
      stopReply();
    }
  });
  ui.input.addEventListener("input", () => {
    autosize();
    updateComposer();
  });
  ui.stop.addEventListener("click", stopReply);
  ui.newChat.addEventListener("click", () => {
    if (MOBILE_QUERY.matches) setSidebar(false);
    if (state.currentId !== null) showNewChat({ push: true });
    ui.input.focus();
  });
  ui.loadMore.addEventListener("click", () => loadConversations({ reset: false }));
  ui.sidebarToggle.addEventListener("click", () => setSidebar(!ui.app.classList.contains("sidebar-open")));
  ui.sidebarClose.addEventListener("click", () => {
    setSidebar(false);
    ui.sidebarToggle.focus();
  });
  ui.scrim.addEventListener("click", () => setSidebar(false));
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && ui.app.classList.contains("sidebar-open") && MOBILE_QUERY.matches) {
      setSidebar(false);
      ui.sidebarToggle.focus();
    }
  });
  MOBILE_QUERY.addEventListener("change", () => {
    if (!MOBILE_QUERY.matches) setSidebar(false);
    syncSidebarInert();
  });
  for (const button of document.querySelectorAll("[data-suggestion]")) {
    button.addEventListener("click", () => {
      ui.input.value = button.dataset.suggestion;
      autosize();
      updateComposer();
      ui.input.focus();
    });
  }
  ui.tokenForm.addEventListener("submit", onTokenSubmit);
  ui.tokenCancel.addEventListener("click", () => ui.tokenDialog.close());
  ui.tokenButton.addEventListener("click", () => {
    ui.tokenReason.hidden = true;
    openTokenDialog();
  });
  ui.authBannerButton.addEventListener("click", openTokenDialog);
  ui.deleteDialog.addEventListener("close", onDeleteClosed);
  window.addEventListener("hashchange", () => {
    if (takeTokenFromHash()) {
      if (ui.tokenDialog.open) ui.tokenDialog.close();
      state.authNeeded = false;
      ui.authBanner.hidden = true;
      loadConversations({ reset: true });
      state.currentId = null; // reopen the conversation in the hash (if any) with the new token
    }
    route();
  });
}

function init() {
  applyTheme(storedTheme());
  bind();
  takeTokenFromHash();
  ui.tokenButton.hidden = !state.token;
  syncSidebarInert();
  updateComposer();
  loadConversations({ reset: true });
  route();
  ui.input.focus();
}

init();

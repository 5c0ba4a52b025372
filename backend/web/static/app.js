// The reference chat page: conversations sidebar, message pane, streaming composer. Plain JS, no build step.
//
// Every piece of text from users, the model or tools reaches the DOM through textContent (directly, or through the
// DOM-building Markdown renderer in markdown.js); nothing is ever assigned to innerHTML.

import { renderMarkdown } from "./markdown.js";
import { readEventStream } from "./sse.js";
import { renderWidget, updateWidget } from "./widgets.js";
import { AttachmentTray, attachmentList } from "./attachments.js";
import { el } from "./dom.js";

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
  run: null, // the streaming reply, if any: one at a time
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

function icon(name) {
  return document.getElementById(`icon-${name}`).content.firstElementChild.cloneNode(true);
}

function truncate(text, max) {
  return text.length <= max ? text : `${text.slice(0, max - 1).trimEnd()}…`;
}

function flatten(text) {
  return String(text).split(/\s+/).join(" ").trim();
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

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    const timer = window.setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => {
      window.clearTimeout(timer);
      reject(new DOMException("Aborted", "AbortError"));
    });
  });
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
async function api(path, { method = "GET", body, signal, accept = "application/json" } = {}) {
  const headers = { Accept: accept };
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
  if (state.run && state.run.conversationId === id) state.run.controller.abort();
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

function nearBottom() {
  const m = ui.messages;
  return m.scrollHeight - m.scrollTop - m.clientHeight < 120;
}

function scrollToBottom() {
  ui.messages.scrollTop = ui.messages.scrollHeight;
}

function withStickyScroll(change) {
  const stick = nearBottom();
  change();
  if (stick) scrollToBottom();
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

function formatArgs(args) {
  if (!args || typeof args !== "object") return "";
  const parts = Object.entries(args).map(([key, value]) => {
    const shown = typeof value === "string" ? JSON.stringify(value) : JSON.stringify(value) ?? String(value);
    return `${key}: ${shown}`;
  });
  return truncate(parts.join(", "), 90);
}

function resultIsError(result) {
  return Boolean(result && typeof result === "object" && !Array.isArray(result) && "error" in result);
}

function summarizeResult(result) {
  if (result === null || result === undefined) return "no result";
  if (typeof result === "string") return truncate(flatten(result), 70);
  if (typeof result !== "object") return String(result);
  if (Array.isArray(result)) return `${result.length} item${result.length === 1 ? "" : "s"}`;
  if (resultIsError(result)) {
    const detail = typeof result.error === "string" ? result.error : JSON.stringify(result.error);
    return truncate(`error: ${flatten(detail)}`, 70);
  }
  const parts = [];
  for (const [key, value] of Object.entries(result)) {
    if (Array.isArray(value)) parts.push(`${value.length} ${value.length === 1 ? key.replace(/s$/, "") : key}`);
    else if (value && typeof value === "object") {
      const label = value.title ?? value.name ?? value.id;
      if (label !== undefined && label !== null) parts.push(`${key}: “${label}”`);
    } else if (typeof value === "string" || typeof value === "number") parts.push(`${key}: ${value}`);
    if (parts.length >= 2) break;
  }
  return truncate(flatten(parts.join(", ") || JSON.stringify(result)), 70);
}

function prettyJson(value) {
  if (typeof value === "string") return value;
  try {
    return JSON.stringify(value, null, 2);
  } catch {
    return String(value);
  }
}

/** One assistant message: thinking, tool chips and text blocks in the order they arrived. */
class AssistantMessage {
  constructor() {
    this.article = el("article", { className: "msg msg-assistant", testid: "message" });
    this.article.dataset.role = "assistant";
    this.article.dataset.status = "complete";
    const avatar = el("div", { className: "msg-avatar", attrs: { "aria-hidden": "true" } });
    avatar.textContent = "✦";
    const body = el("div", { className: "msg-body" });
    body.append(el("span", { className: "sr-only", text: "Assistant said:" }));
    this.parts = el("div", { className: "msg-parts", testid: "message-body" });
    this.typing = el("div", { className: "typing", testid: "typing-indicator" });
    this.typing.append(el("span"), el("span"), el("span"), el("span", { className: "sr-only", text: "Assistant is typing" }));
    this.typing.hidden = true;
    this.footer = el("div", { className: "msg-footer" });
    body.append(this.parts, this.typing, this.footer);
    this.article.append(avatar, body);
    this.last = null; // the block deltas currently extend: {kind, node, text}
    this.chips = new Map();
    this.dirty = new Set();
    this.frame = null;
    this.text = "";
  }

  setStreaming(on) {
    if (on) this.article.dataset.status = "streaming";
    else if (this.article.dataset.status === "streaming") this.article.dataset.status = "complete";
    this.parts.setAttribute("aria-live", on ? "polite" : "off");
    this.parts.setAttribute("aria-busy", String(on));
    this.typing.hidden = !on;
  }

  appendText(delta) {
    if (!delta) return;
    this.text += delta;
    if (!this.last || this.last.kind !== "text") {
      const node = el("div", { className: "msg-text markdown", testid: "message-text" });
      this.parts.append(node);
      this.last = { kind: "text", node, text: "" };
    }
    this.last.text += delta;
    this.dirty.add(this.last);
    this.schedule();
  }

  appendThinking(delta) {
    if (!delta) return;
    if (!this.last || this.last.kind !== "thinking") {
      const details = el("details", { className: "thinking", testid: "thinking" });
      const summary = el("summary", { text: "Thinking" });
      const text = el("div", { className: "thinking-text", testid: "thinking-text" });
      details.append(summary, text);
      this.parts.append(details);
      this.last = { kind: "thinking", node: text, text: "" };
    }
    this.last.text += delta;
    withStickyScroll(() => {
      this.last.node.textContent = this.last.text;
    });
  }

  toolCall({ id, name, args }) {
    const chip = el("details", { className: "chip", testid: "tool-chip" });
    chip.dataset.toolId = id;
    chip.dataset.toolName = name;
    chip.dataset.state = "running";
    const summary = el("summary", { className: "chip-summary" });
    const badge = el("span", { className: "chip-icon", attrs: { "aria-hidden": "true" } });
    badge.append(icon("tool"));
    summary.append(
      badge,
      el("span", { className: "sr-only", text: "Tool call" }),
      el("span", { className: "chip-name", text: name, testid: "tool-chip-name" }),
      el("span", { className: "chip-args", text: formatArgs(args), testid: "tool-chip-args" }),
    );
    const result = el("span", { className: "chip-result", testid: "tool-chip-result" });
    result.hidden = true;
    const spinner = el("span", { className: "chip-spinner", testid: "tool-chip-running" });
    spinner.append(el("span", { className: "sr-only", text: "running" }));
    summary.append(result, spinner);
    const detail = el("div", { className: "chip-detail" });
    detail.append(el("div", { className: "chip-label", text: "Arguments" }), el("pre", { text: prettyJson(args ?? {}) }));
    chip.append(summary, detail);
    if (!this.last || this.last.kind !== "tools") {
      const row = el("div", { className: "chips", testid: "tool-chips" });
      this.parts.append(row);
      this.last = { kind: "tools", node: row };
    }
    withStickyScroll(() => this.last.node.append(chip));
    this.chips.set(id, chip);
    return chip;
  }

  toolResult({ id, result }) {
    const chip = this.chips.get(id);
    if (!chip) return;
    const failed = resultIsError(result);
    chip.dataset.state = failed ? "error" : "done";
    chip.querySelector(".chip-spinner")?.remove();
    const shown = chip.querySelector('[data-testid="tool-chip-result"]');
    shown.hidden = false;
    shown.replaceChildren(icon(failed ? "alert" : "check"), el("span", { text: summarizeResult(result) }));
    const detail = chip.querySelector(".chip-detail");
    detail.append(el("div", { className: "chip-label", text: "Result" }), el("pre", { text: prettyJson(result) }));
  }

  showWidget({ id, widget }) {
    // A later `widget` event with the same id replaces the earlier one (a tool showing progress).
    const shown = { ...widget, id };
    if (updateWidget(this.parts, shown).length) return;
    withStickyScroll(() => this.parts.append(renderWidget(shown, sendWidgetAction)));
    this.last = null;
  }

  toolUnfinished(id) {
    const chip = this.chips.get(id);
    if (!chip || chip.dataset.state !== "running") return;
    chip.dataset.state = "incomplete";
    chip.querySelector(".chip-spinner")?.remove();
    const shown = chip.querySelector('[data-testid="tool-chip-result"]');
    shown.hidden = false;
    shown.replaceChildren(el("span", { text: "no result" }));
  }

  schedule() {
    if (this.frame !== null) return;
    const run = () => {
      this.frame = null;
      this.flush();
    };
    this.frame = document.hidden ? window.setTimeout(run, 200) : window.requestAnimationFrame(run);
  }

  flush() {
    if (!this.dirty.size) return;
    withStickyScroll(() => {
      for (const block of this.dirty) block.node.replaceChildren(renderMarkdown(block.text));
    });
    this.dirty.clear();
  }

  markStopped() {
    this.article.dataset.status = "cancelled";
    this.footer.querySelector('[data-testid="message-stopped"]')?.remove();
    const badge = el("span", { className: "badge badge-stopped", text: "Stopped", testid: "message-stopped" });
    badge.title = "You stopped this reply";
    this.footer.append(badge);
  }

  showError(message, onRetry) {
    if (this.article.dataset.status !== "cancelled") this.article.dataset.status = "error";
    this.footer.querySelector('[data-testid="message-error"]')?.remove();
    const box = el("div", { className: "msg-error", testid: "message-error", attrs: { role: "alert" } });
    box.append(icon("alert"), el("span", { className: "msg-error-text", text: message, testid: "message-error-text" }));
    if (onRetry) {
      const retry = el("button", { className: "btn btn-small", text: "Retry", testid: "retry-button" });
      retry.type = "button";
      retry.addEventListener("click", () => {
        retry.disabled = true;
        onRetry(retry);
      });
      box.append(retry);
    }
    this.footer.append(box);
  }

  removeRetry() {
    this.footer.querySelector('[data-testid="retry-button"]')?.remove();
  }

  finish() {
    if (this.frame !== null) {
      window.cancelAnimationFrame(this.frame);
      window.clearTimeout(this.frame);
      this.frame = null;
    }
    this.flush();
    for (const id of this.chips.keys()) this.toolUnfinished(id);
    this.setStreaming(false);
    const empty = !this.parts.childElementCount;
    if (empty && this.article.dataset.status === "complete") {
      this.parts.append(el("p", { className: "muted", text: "(no reply)" }));
    } else if (empty && this.article.dataset.status === "cancelled") {
      this.parts.append(el("p", { className: "muted", text: "(stopped before any reply)" }));
    }
  }
}

function assistantFromHistory(message, { onRetry }) {
  const view = new AssistantMessage();
  view.article.dataset.id = message.id;
  for (const call of message.tool_calls || []) {
    view.toolCall(call);
    if (call.result !== null && call.result !== undefined) view.toolResult(call);
  }
  view.appendText(message.content || "");
  if (message.status === "cancelled") view.markStopped();
  // A reply cut short by a server restart is saved as cancelled *with* an error code: show both.
  if (message.status === "error" || message.error_code) {
    view.showError(ERROR_MESSAGES[message.error_code] || "The reply failed.", onRetry);
  }
  view.finish();
  return view;
}

function renderHistory(messages) {
  const nodes = [];
  let lastUserText = null;
  messages.forEach((message, index) => {
    if (message.role === "user") {
      lastUserText = message.content;
      const node = userMessage(message.content, message.attachments);
      node.dataset.id = message.id;
      nodes.push(node);
      return;
    }
    const isLast = index === messages.length - 1;
    const retryText = lastUserText;
    const view = assistantFromHistory(message, {
      onRetry: isLast && retryText ? () => retry(view, retryText, { savedOnServer: true }) : null,
    });
    nodes.push(view.article);
  });
  ui.thread.replaceChildren(...nodes);
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
    renderHistory(detail.messages);
    const run = state.run;
    if (run && run.conversationId === id) {
      // The reply still streaming here is not saved yet; show it live after the saved messages.
      if (!detail.messages.some((m) => m.id === run.messageId)) ui.thread.append(run.view.article);
    }
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

async function postChat(run) {
  for (let attempt = 0; ; attempt++) {
    const body = { message: run.text };
    if (run.conversationId) body.thread_id = run.conversationId;
    if (run.attachments.length) body.attachments = run.attachments.map((file) => file.id);
    try {
      return await api("/chatkit", { method: "POST", body, signal: run.controller.signal, accept: "text/event-stream" });
    } catch (error) {
      // Right after a stop the server may still be saving the previous reply for a moment.
      if (error.code === "run_in_progress" && attempt < 4) {
        await sleep(600, run.controller.signal);
        continue;
      }
      throw error;
    }
  }
}

/**
 * Send a widget's action (a checkbox or button was used): `POST /chatkit {thread_id, action}`. The server routes it to
 * its handler (not the model) and streams back replacement widgets and possibly a short reply, which is announced.
 * Rejects when the action failed, so the widget can undo the control's change.
 */
async function sendWidgetAction(action) {
  const threadId = state.currentId;
  if (!threadId) throw new Error("no conversation");
  let reply = "";
  try {
    const response = await api("/chatkit", {
      method: "POST",
      body: { thread_id: threadId, action },
      accept: "text/event-stream",
    });
    await readEventStream(response.body, (event) => {
      if (event.type === "widget" && event.widget) updateWidget(ui.thread, { ...event.widget, id: event.id });
      else if (event.type === "text") reply += event.content || "";
      else if (event.type === "error") throw Object.assign(new Error(event.message || "The action failed."), event);
    });
  } catch (error) {
    showListError(`Could not do that: ${error.message}`);
    announce(`Could not do that: ${error.message}`);
    throw error;
  }
  if (reply) announce(reply);
}

function retry(view, text, { savedOnServer }) {
  if (state.run) return;
  if (savedOnServer) {
    view.removeRetry();
  } else {
    // Nothing of the failed attempt was stored: drop it from the page too, as a reload would.
    const user = view.article.previousElementSibling;
    if (user && user.dataset.role === "user") user.remove();
    view.article.remove();
  }
  sendMessage(text);
}

function handleEvent(run, event) {
  const { view } = run;
  switch (event.type) {
    case "start": {
      run.started = true;
      run.messageId = event.message_id;
      view.article.dataset.id = event.message_id;
      const isNew = !run.conversationId;
      run.conversationId = event.conversation_id;
      const known = conversationById(event.conversation_id);
      upsertConversationOnTop({
        id: event.conversation_id,
        title: known ? known.title : event.title,
        preview: known ? known.preview : null,
        updated_at: new Date().toISOString(),
      });
      if (isNew && state.currentId === null && view.article.isConnected) {
        state.currentId = event.conversation_id;
        const params = hashParams();
        params.set("c", event.conversation_id);
        setHash(params, { replace: true });
        ui.title.textContent = event.title;
        document.title = `${event.title} · Chat`;
        renderConversations();
      }
      break;
    }
    case "text":
      view.appendText(event.content);
      break;
    case "thinking":
      view.appendThinking(event.content);
      break;
    case "tool_call":
      view.toolCall(event);
      break;
    case "tool_result":
      view.toolResult(event);
      break;
    case "widget":
      view.showWidget(event);
      break;
    case "error":
      run.failed = true;
      view.showError(event.message || ERROR_MESSAGES[event.code] || "The reply failed.", () =>
        retry(view, run.text, { savedOnServer: true }),
      );
      announce(`Error: ${event.message}`);
      break;
    case "done":
      run.finished = true;
      if (event.finish_reason === "cancelled") view.markStopped();
      if ((event.finish_reason === "error" || event.finish_reason === "max_turns") && !run.failed) {
        run.failed = true;
        const message = ERROR_MESSAGES[event.finish_reason === "max_turns" ? "max_turns" : "internal"];
        view.showError(message, () => retry(view, run.text, { savedOnServer: true }));
      }
      break;
    default:
      break; // unknown event types are ignored, so the server may add new ones
  }
}

async function sendMessage(text, attachments = []) {
  if (state.run) return;
  showEmptyState(false);
  const userNode = userMessage(text, attachments);
  const view = new AssistantMessage();
  view.setStreaming(true);
  ui.thread.append(userNode, view.article);
  scrollToBottom();
  const run = {
    text,
    attachments,
    view,
    controller: new AbortController(),
    conversationId: state.currentId,
    started: false,
    finished: false,
    failed: false,
    stopped: false,
  };
  state.run = run;
  updateComposer();
  renderConversations();
  announce("Sent. The assistant is replying.");
  try {
    const response = await postChat(run);
    await readEventStream(response.body, (event) => handleEvent(run, event));
    if (!run.finished && !run.stopped) {
      view.showError("The connection was lost before the reply finished.", () =>
        retry(view, text, { savedOnServer: run.started }),
      );
    }
  } catch (error) {
    if (run.stopped || error.name === "AbortError") {
      view.markStopped();
    } else if (error.status === 401) {
      // Not sent: give the text back so it can be sent once a token is saved.
      userNode.remove();
      view.article.remove();
      if (!ui.input.value.trim()) {
        ui.input.value = text;
        autosize();
      }
      if (!ui.thread.childElementCount && !state.currentId) showEmptyState(true);
    } else if (!run.failed && !run.started && [404, 413, 422].includes(error.status)) {
      // Sending it again cannot work (conversation gone, message too long): no Retry; give the text back to edit.
      view.showError(error.message || "The message was not accepted.", null);
      if (!ui.input.value.trim()) {
        ui.input.value = text;
        autosize();
      }
    } else if (!run.failed) {
      view.showError(error.message || "The reply failed.", () => retry(view, text, { savedOnServer: run.started }));
    }
  } finally {
    view.finish();
    state.run = null;
    const id = run.conversationId;
    const conversation = id && conversationById(id);
    if (conversation && view.text) {
      conversation.preview = truncate(flatten(view.text), PREVIEW_CHARS);
    }
    if (!id) loadConversations({ reset: true }); // stopped before `start`: the server may still have made one
    renderConversations();
    updateComposer();
    if (run.stopped) announce("Reply stopped.");
    else if (run.finished && !run.failed) announce("Reply finished.");
  }
}

function stopReply() {
  const run = state.run;
  if (!run) return;
  run.stopped = true;
  run.controller.abort();
  ui.input.focus();
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

// The message pane: user messages, assistant replies (live or loaded from history), notices and the empty state.

import { attachmentList } from "./attachments.js";
import { currentToken } from "./auth.js";
import { el } from "./dom.js";
import { ReplyView } from "./reply.js";
import { addMessageTools } from "./versions.js";
import { updateWidget } from "./widgets.js";

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
const scroller = $("messages");
const thread = $("thread");
const emptyState = $("empty-state");

let onWidgetAction = async () => {};
let messageActions = null; // {onSwitch(id), onEdit(id, text), onRegenerate(id)}: the tools of stored messages

/** What the tools of stored messages do (switch version, edit, regenerate); set once at start-up. */
export function setMessageActions(actions) {
  messageActions = actions;
}

/** The article of a shown message, or null. */
export function articleOf(messageId) {
  return thread.querySelector(`:scope > [data-testid="message"][data-id="${CSS.escape(messageId)}"]`);
}

/**
 * Give each shown message its tools (versions, Edit, Regenerate) from its stored copy. `messages` is the active
 * branch as stored; when the thread does not show exactly those messages (another reply started meanwhile), nothing
 * changes.
 */
export function decorateThread(messages) {
  const articles = [...thread.querySelectorAll(':scope > [data-testid="message"]')];
  if (!messageActions || articles.length !== messages.length) return;
  if (articles.some((article, index) => article.dataset.role !== messages[index].role)) return;
  messages.forEach((message, index) => {
    const article = articles[index];
    article.dataset.id = message.id;
    article.querySelector(":scope .msg-tools")?.remove();
    if (message.status === "in_progress") return;
    const isLastReply = index === messages.length - 1 && message.role === "assistant";
    addMessageTools(article, message, { isLastReply, actions: messageActions });
  });
}

/** Where a widget's action goes (a checkbox or button was used); set once at start-up. */
export function setWidgetActionHandler(handler) {
  onWidgetAction = handler;
}

/** The sentence shown for an error code of the stream or of a stored reply. */
export function errorText(code) {
  return ERROR_MESSAGES[code] || "The reply failed.";
}

export function scrollToBottom() {
  scroller.scrollTop = scroller.scrollHeight;
}

export function userMessage(text, attachments) {
  const article = el("article", { className: "msg msg-user", testid: "message" });
  article.dataset.role = "user";
  const body = el("div", { className: "msg-body" });
  body.append(el("span", { className: "sr-only", text: "You said:" }));
  body.append(el("div", { className: "bubble", text, testid: "message-text" }));
  if (attachments && attachments.length) body.append(attachmentList(attachments, currentToken));
  article.append(body);
  return article;
}

/** The agent that ended the last reply shown (a new reply labels its agent only when it differs). */
function lastAgentShown() {
  const replies = thread.querySelectorAll('[data-testid="message"][data-role="assistant"]');
  for (let i = replies.length - 1; i >= 0; i--) if (replies[i].dataset.agent) return replies[i].dataset.agent;
  return null;
}

export function newReplyView(previousAgent = lastAgentShown()) {
  return new ReplyView({ onWidgetAction, previousAgent });
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
 * `retryLast(view, text)` is the Retry of a last reply that failed (`text` is the user message it answered).
 */
export function renderHistory(messages, activeId, { retryLast }) {
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
        onRetry: isLast && retryText ? () => retryLast(view, retryText) : null,
      });
      if (isLast && message.status === "requires_action") paused = { message, view };
    }
    previousAgent = view.article.dataset.agent || previousAgent;
    nodes.push(view.article);
  });
  thread.replaceChildren(...nodes);
  decorateThread(live ? messages.map((m) => (m.id === live.message.id ? { ...m, status: "in_progress" } : m)) : messages);
  return { live, paused };
}

/** Show the view of a reply streaming in this page in place of its stored copy (or at the end). */
export function showLiveReply(messageId, view) {
  const stored = messageId && thread.querySelector(`[data-role="assistant"][data-id="${CSS.escape(messageId)}"]`);
  if (stored) stored.replaceWith(view.article);
  else thread.append(view.article);
}

export function appendToThread(...nodes) {
  thread.append(...nodes);
}

export function threadIsEmpty() {
  return !thread.childElementCount;
}

/** Replace the widget with the same id wherever it is shown in the thread. */
export function updateThreadWidget(widget) {
  updateWidget(thread, widget);
}

export function showEmptyState(show) {
  emptyState.hidden = !show;
  thread.hidden = show;
}

/** An empty thread (and the empty state): a new chat. */
export function clearThread() {
  thread.replaceChildren();
  showEmptyState(true);
}

export function showLoading() {
  showEmptyState(false);
  const loading = el("div", { className: "loading", testid: "thread-loading", text: "Loading conversation…" });
  thread.replaceChildren(loading);
}

export function showNotice(message, { onRetry } = {}) {
  const notice = el("div", { className: "notice", testid: "thread-notice", attrs: { role: "alert" } });
  notice.append(el("p", { text: message }));
  if (onRetry) {
    const button = el("button", { className: "btn", text: "Try again" });
    button.type = "button";
    button.addEventListener("click", onRetry);
    notice.append(button);
  }
  thread.replaceChildren(notice);
  showEmptyState(false);
}

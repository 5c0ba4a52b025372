// The turn and approval orchestration: sending a message, a widget action or the answers to a paused reply, rejoining
// a reply that runs on the server, Stop and Retry. One reply streams at a time (`running`); a paused reply waits for
// its approvals here (`answering`).

import { api } from "./api.js";
import { runClientTool } from "./client_tools.js";
import { focusComposer, giveBack, updateComposer } from "./composer.js";
import {
  announce,
  currentConversation,
  setConversationHash,
  setCurrentConversation,
  setHeading,
} from "./page.js";
import { flatten, truncate } from "./reply.js";
import {
  conversationById,
  loadConversations,
  renderConversations,
  showListError,
  upsertConversationOnTop,
} from "./sidebar.js";
import { readEventStream } from "./sse.js";
import {
  appendToThread,
  articleOf,
  errorText,
  newReplyView,
  scrollToBottom,
  showEmptyState,
  threadIsEmpty,
  updateThreadWidget,
  userMessage,
} from "./thread.js";
import { StreamLostError, Turn, newId } from "./turns.js";
import { removeFrom } from "./versions.js";

const PREVIEW_CHARS = 120;

let running = null; // the Turn streaming a reply, if any: one at a time
let answering = null; // {view, conversationId}: the paused reply whose approvals wait for the user, if any
let reopen = () => {};
let refresh = () => {};

/**
 * Set how a conversation is opened again (the Retry of a rejoin or an answer reloads it), and how the shown messages
 * get their stored ids and tools once a reply has finished (`refresh(conversationId)`).
 */
export function setReopen(open, { refreshTools = () => {} } = {}) {
  reopen = open;
  refresh = refreshTools;
}

/** The Turn streaming a reply in this page, or null. */
export function runningTurn() {
  return running;
}

/** True when the reply streaming in this page belongs to conversation `id`. */
export function streamingIn(id) {
  return Boolean(running && running.conversationId === id);
}

/** The view waiting for approvals was replaced (the conversation was loaded again). */
export function forgetAnswering() {
  answering = null;
}

/**
 * Send a widget's action (a checkbox or button was used): `POST /chatkit {thread_id, action}`. The server routes it to
 * its handler (not the model) and streams back replacement widgets and possibly a short reply, which it stores as a
 * new assistant message: it is shown (and announced) as one here too, as a reload would show it.
 * Rejects when the action failed, so the widget can undo the control's change.
 */
export async function sendWidgetAction(action) {
  const threadId = currentConversation();
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
      else if (event.type === "widget" && event.widget) updateThreadWidget({ ...event.widget, id: event.id });
      else if (event.type === "error") throw Object.assign(new Error(event.message || "The action failed."), event);
      else if (event.type === "text" && currentConversation() === threadId) {
        if (!view) {
          view = newReplyView();
          if (messageId) view.article.dataset.id = messageId;
          appendToThread(view.article);
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

/**
 * Send a message. A Retry after a network failure reuses `clientMessageId`, so the server never runs it twice.
 * `editOf`: the id of an earlier user message this one is a new version of (its branch stays stored on the server).
 */
export function sendMessage(text, attachments = [], clientMessageId = newId(), { editOf = null } = {}) {
  if (running) return;
  cancelPendingAnswers();
  showEmptyState(false);
  const userNode = userMessage(text, attachments);
  const view = newReplyView();
  appendToThread(userNode, view.article);
  scrollToBottom();
  const turn = newTurn(view, { conversationId: currentConversation() });
  announce("Sent. The assistant is replying.");
  const retryLater = (savedOnServer) => () =>
    retry(view, text, {
      savedOnServer,
      attachments,
      clientMessageId: savedOnServer ? null : clientMessageId,
      editOf: savedOnServer ? null : editOf,
    });
  return runTurn(turn, () => turn.send({ text, attachments, clientMessageId, editOf }), {
    retry: retryLater(true),
    onFailure(error) {
      if (error.status === 401) {
        // Not sent: give the text back so it can be sent once a token is saved.
        userNode.remove();
        view.article.remove();
        giveBack(text);
        if (threadIsEmpty() && !currentConversation()) showEmptyState(true);
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

/**
 * Send `text` again from the reply `view` that failed. `savedOnServer`: the failed reply is stored (keep it, drop its
 * Retry); otherwise nothing of the failed attempt is shown again.
 */
export function retry(view, text, { savedOnServer, attachments = [], clientMessageId = null, editOf = null }) {
  if (running) return;
  if (savedOnServer) {
    view.removeRetry();
  } else {
    // Nothing of the failed attempt is shown again: the retry replays the turn if the server began it.
    const user = view.article.previousElementSibling;
    if (user && user.dataset.role === "user") user.remove();
    view.article.remove();
  }
  sendMessage(text, attachments, clientMessageId || newId(), { editOf });
}

/** Send `text` as a new version of the user message `messageId`: what followed it leaves the screen (not the server). */
export function editMessage(messageId, text) {
  const article = articleOf(messageId);
  if (running || !article) return;
  removeFrom(article);
  sendMessage(text, [], newId(), { editOf: messageId });
}

/** Answer again the user message of the reply `messageId`: a new version of the reply takes its place on screen. */
export function regenerateReply(messageId) {
  const article = articleOf(messageId);
  const conversationId = currentConversation();
  if (running || !article || !conversationId) return;
  cancelPendingAnswers();
  removeFrom(article);
  const view = newReplyView();
  appendToThread(view.article);
  scrollToBottom();
  const turn = newTurn(view, { conversationId });
  announce("Regenerating the reply.");
  const clientMessageId = newId();
  return runTurn(turn, () => turn.regenerate(messageId, clientMessageId), {
    retry: () => reopen(conversationId),
    onFailure(error) {
      view.showError(error.message || "Could not regenerate the reply.", () => reopen(conversationId));
    },
  });
}

/** Rejoin a turn that runs on the server (after a reload, or when opening its conversation) from its start. */
export function rejoinTurn(conversationId, view) {
  const turn = newTurn(view, { conversationId, messageId: view.article.dataset.id });
  return runTurn(turn, () => turn.rejoin(0), {
    retry: () => reopen(conversationId),
    onFailure(error) {
      view.showError(error.message || "Could not follow the reply.", () => reopen(conversationId));
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
  if (turn.newConversation && currentConversation() === null && view.article.isConnected) {
    setCurrentConversation(event.conversation_id);
    setConversationHash(event.conversation_id, { replace: true });
    setHeading(event.title);
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
  running = turn;
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
  if (running === turn) running = null;
  const conversation = turn.conversationId && conversationById(turn.conversationId);
  if (conversation && view.text) conversation.preview = truncate(flatten(view.text), PREVIEW_CHARS);
  if (!turn.conversationId) loadConversations({ reset: true }); // stopped before `start`: the server may have made one
  renderConversations();
  updateComposer();
  if (turn.stopped) announce("Reply stopped.");
  else if (paused) awaitAnswers(view, turn.conversationId, turn.messageId);
  else if (turn.finished && !turn.failed) announce("Reply finished.");
  if (turn.finished && turn.conversationId) refresh(turn.conversationId);
}

/**
 * A reply paused for approvals and/or browser tools: run the browser tools here, show Approve/Reject on the
 * approvals, and once nothing is pending post every answer; the continuation streams into the same reply.
 */
export function awaitAnswers(view, conversationId, messageId) {
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
    if (answering?.view === view) answering = null;
    const answers = {};
    if (decisions.size) answers.approvals = [...decisions].map(([id, approve]) => ({ id, approve }));
    if (results.size) answers.client_tool_results = [...results].map(([id, result]) => ({ id, result }));
    const turn = newTurn(view, { conversationId, messageId });
    runTurn(turn, () => turn.answer(answers), {
      retry: () => reopen(conversationId),
      onFailure(error) {
        view.showError(`Could not send the answer: ${error.message}`, () => reopen(conversationId));
      },
    });
  };
  if (!view.model.pending().length) {
    if (results.size) submit();
    return;
  }
  answering = { view, conversationId };
  view.setAnswering((id, approve) => {
    if (running) {
      announce("Wait until the current reply has finished.");
      return;
    }
    decisions.set(id, approve);
    view.decide("approval", id, { decision: approve ? "approved" : "rejected" });
    announce(approve ? "Approved." : "Rejected.");
    focusComposer();
    submit();
  });
  announce("The assistant is waiting for your approval.");
}

/** A new message in the conversation cancels its approvals still pending (the server does the same). */
function cancelPendingAnswers() {
  if (!answering || answering.conversationId !== currentConversation()) return;
  const { view } = answering;
  answering = null;
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
export function stopReply() {
  const turn = running;
  if (!turn || turn.stopRequested) return;
  turn.stopRequested = true;
  focusComposer();
  if (turn.conversationId) requestStop(turn);
  else window.setTimeout(() => turn.abort(), 3000); // `start` (with the conversation id) normally comes first
}

/** Deleting conversation `id`: stop reading its reply if it is the one streaming here. */
export function abortIfStreamingIn(id) {
  if (streamingIn(id)) running.abort();
}

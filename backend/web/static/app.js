// The reference chat page: its entry point. It moves between conversations (the URL's #c=<id>) and wires the
// modules together, each of which owns one concern and keeps its own state:
//
//   page.js       the open conversation, the heading, the URL hash, announcements for screen readers
//   auth.js       the bearer token, the token dialog and the sign-in banner
//   api.js        fetch() with the token; ApiError
//   sidebar.js    the conversation list, rename, delete, the drawer on narrow screens
//   composer.js   the message box, Send and Stop, suggestions, attachments to send
//   thread.js     the message pane: user messages, replies (live or from history), notices
//   turn_flow.js  sending, rejoining, Stop and Retry; a paused reply's approvals and browser tools
//   versions.js   a message's versions ("‹ 2 / 3 ›"), Edit and Regenerate
//
// Plain JS modules, no build step. Every piece of text from users, the model or tools reaches the DOM through
// textContent (directly, or through the DOM-building Markdown renderer in markdown.js); nothing is ever assigned to
// innerHTML.

import { api } from "./api.js";
import { acceptTokenFromHash, initAuth, openTokenDialog, startAuth } from "./auth.js";
import { applyTheme, storedTheme } from "./client_tools.js";
import { focusComposer, initComposer, updateComposer } from "./composer.js";
import {
  announce,
  currentConversation,
  hashParams,
  isCurrentView,
  nextView,
  setConversationHash,
  setCurrentConversation,
  setHeading,
} from "./page.js";
import { conversationById, initSidebar, loadConversations, removeConversation, renderConversations } from "./sidebar.js";
import {
  clearThread,
  decorateThread,
  renderHistory,
  scrollToBottom,
  setMessageActions,
  setWidgetActionHandler,
  showLiveReply,
  showLoading,
  showNotice,
} from "./thread.js";
import {
  abortIfStreamingIn,
  awaitAnswers,
  editMessage,
  forgetAnswering,
  regenerateReply,
  rejoinTurn,
  retry,
  runningTurn,
  sendMessage,
  sendWidgetAction,
  setReopen,
  stopReply,
  streamingIn,
} from "./turn_flow.js";

const MESSAGE_PAGE_SIZE = 500;

function showNewChat({ replace = false, push = false } = {}) {
  nextView();
  setCurrentConversation(null);
  setHeading("New chat");
  document.title = "Chat";
  clearThread();
  renderConversations();
  if (replace || push) setConversationHash(null, { replace });
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
  const seq = nextView();
  setCurrentConversation(id);
  const known = conversationById(id);
  setHeading(known ? known.title : "Loading…");
  showLoading();
  renderConversations();
  updateComposer();
  try {
    const detail = await loadAllMessages(id);
    if (!isCurrentView(seq)) return;
    setHeading(detail.title);
    document.title = `${detail.title} · Chat`;
    forgetAnswering(); // the view it points at is replaced
    const { live, paused } = renderHistory(detail.messages, detail.active_message_id, {
      retryLast: (view, text) => retry(view, text, { savedOnServer: true }),
    });
    const run = runningTurn();
    if (run && run.conversationId === id) {
      showLiveReply(run.messageId, run.view); // the reply streaming in this page: its live view, not the stored one
    } else if (live && !run) {
      rejoinTurn(id, live.view);
    } else if (live) {
      live.view.load(live.message.parts); // another reply streams in this page: show this one as stored so far
      live.view.finish();
    }
    if (paused && !run) awaitAnswers(paused.view, id, paused.message.id);
    scrollToBottom();
  } catch (error) {
    if (!isCurrentView(seq)) return;
    if (error.status === 404 || error.status === 422) {
      removeConversation(id);
      setCurrentConversation(null);
      setConversationHash(null, { replace: true });
      setHeading("Not found");
      renderConversations();
      showNotice("This conversation does not exist. It may have been deleted.");
    } else if (error.status === 401) {
      showNotice("Sign in with a token to see this conversation.", { onRetry: () => openTokenDialog() });
    } else {
      showNotice(`Could not load this conversation: ${error.message}`, { onRetry: () => openConversation(id) });
    }
  }
}

/** After a reply finished: give the shown messages their stored ids and tools (versions, Edit, Regenerate). */
async function refreshTools(id) {
  try {
    const detail = await loadAllMessages(id);
    if (currentConversation() === id && !runningTurn()) decorateThread(detail.messages);
  } catch {
    // the tools come with the next load
  }
}

/** Show another version of a message: the server makes its branch the active one (a reload keeps it). */
async function switchVersion(messageId) {
  const id = currentConversation();
  if (!id || runningTurn()) return;
  try {
    await api(`/api/conversations/${encodeURIComponent(id)}/branch`, { method: "PUT", body: { message_id: messageId } });
  } catch (error) {
    announce(`Could not show that version: ${error.message}`);
    return;
  }
  await openConversation(id);
  announce("Showing another version.");
}

function route() {
  const id = hashParams().get("c");
  if (id && id !== currentConversation()) openConversation(id);
  else if (!id) showNewChat();
}

function reloadEverything() {
  loadConversations({ reset: true });
  if (currentConversation()) openConversation(currentConversation());
}

function init() {
  applyTheme(storedTheme());
  setWidgetActionHandler(sendWidgetAction);
  setReopen(openConversation, { refreshTools });
  setMessageActions({ onSwitch: switchVersion, onEdit: editMessage, onRegenerate: regenerateReply });
  initComposer({
    busy: () => Boolean(runningTurn()),
    onSend: (text, attachments) => sendMessage(text, attachments),
    onStop: stopReply,
  });
  initSidebar({
    streamingIn,
    beforeDelete: abortIfStreamingIn,
    afterDelete(id) {
      if (currentConversation() === id) showNewChat({ replace: true });
    },
    onNewChat() {
      if (currentConversation() !== null) showNewChat({ push: true });
      focusComposer();
    },
  });
  initAuth({
    onNeeded: renderConversations,
    onSaved() {
      reloadEverything();
      focusComposer();
    },
  });
  window.addEventListener("hashchange", () => {
    if (acceptTokenFromHash()) {
      loadConversations({ reset: true });
      setCurrentConversation(null); // reopen the conversation in the hash (if any) with the new token
    }
    route();
  });
  startAuth();
  updateComposer();
  loadConversations({ reset: true });
  route();
  focusComposer();
}

init();

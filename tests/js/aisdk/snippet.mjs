// The useChat options for this backend (quoted in backend/protocols/AISDK.md; tests/js/aisdk/snippet.test.mjs runs it).
import {
  DefaultChatTransport,
  lastAssistantMessageIsCompleteWithApprovalResponses,
  lastAssistantMessageIsCompleteWithToolCalls,
} from 'ai';

// Our browser-side tools (the server's CLIENT_TOOLS): each gets the model's input and returns its output.
export const clientTools = {
  set_theme: async ({ theme }) => ({ theme }),
  get_client_context: async () => ({ timeZone: Intl.DateTimeFormat().resolvedOptions().timeZone }),
};

export function chatOptions({ baseUrl = '', token, getChat }) {
  const headers = { 'X-AI-SDK-Version': '7', ...(token ? { Authorization: `Bearer ${token}` } : {}) };
  return {
    transport: new DefaultChatTransport({ api: `${baseUrl}/api/chat`, headers }),
    resume: true, // useChat: on mount, GET /api/chat/{id}/stream picks up a reply still running (204: none)
    // Resend once the user answered every approval, or the browser every client tool.
    sendAutomaticallyWhen: (options) =>
      lastAssistantMessageIsCompleteWithApprovalResponses(options) ||
      lastAssistantMessageIsCompleteWithToolCalls(options),
    onToolCall: async ({ toolCall }) => {
      const run = clientTools[toolCall.toolName];
      if (!run) return; // a server tool: its output comes in the stream
      const output = await run(toolCall.input);
      getChat().addToolOutput({ tool: toolCall.toolName, toolCallId: toolCall.toolCallId, output });
    },
  };
}

// `stop()` only aborts the fetch (the reply goes on, so it can be resumed); this stops it on the server too.
export async function stopReply(chat, { baseUrl = '', token } = {}) {
  chat.stop();
  await fetch(`${baseUrl}/api/chat/${encodeURIComponent(chat.id)}/stream`, {
    method: 'DELETE',
    headers: token ? { Authorization: `Bearer ${token}` } : {},
  });
}

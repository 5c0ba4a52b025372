// AG-UI's HttpAgent against this backend (quoted in README.md and backend/protocols/AGUI.md;
// tests/js/agui/snippet.test.mjs runs it). CopilotKit and assistant-ui's react-ag-ui build on the same HttpAgent.
import { HttpAgent } from '@ag-ui/client';

export function createAgent({ baseUrl = '', token, threadId } = {}) {
  return new HttpAgent({
    url: `${baseUrl}/api/agui`, // the AGUI_PATH setting
    threadId, // any id of yours: the first run creates the conversation (a UUID from /api/conversations continues it)
    headers: token ? { Authorization: `Bearer ${token}` } : {},
  });
}

// After a reload or a dropped connection: an agent whose run follows the thread's reply still running (a GET rejoin
// that replays it from its start). When none runs (204) the run ends at once with no events.
export function rejoiningAgent({ baseUrl = '', token, threadId }) {
  const agent = createAgent({ baseUrl, token, threadId });
  agent.fetch = async (url, init) => {
    const rejoin = `${url}/${encodeURIComponent(threadId)}/stream`;
    const response = await fetch(rejoin, { headers: init.headers, signal: init.signal });
    return response.status === 204 ? new Response('', { headers: { 'content-type': 'text/event-stream' } }) : response;
  };
  return agent;
}

// Send one message and run until the reply is complete: frontend tools run here, approvals ask `approve`.
// `tools`: {name: {description, parameters, run(args) => result}}; `approve(interrupt)` => true | false.
export async function send(agent, text, { tools = {}, approve = async () => false } = {}) {
  const definitions = Object.entries(tools).map(([name, { description, parameters }]) => ({ name, description, parameters }));
  agent.addMessage({ id: crypto.randomUUID(), role: 'user', content: text });
  let params = { tools: definitions };
  for (;;) {
    let finished, failed;
    await agent.runAgent(params, {
      onRunFinishedEvent: (params) => void (finished = params),
      onRunErrorEvent: ({ event }) => void (failed = event),
    });
    if (failed) throw new Error(failed.message); // our safe message (the reply failed, or the model is unavailable)
    if (finished?.outcome === 'interrupt') {
      // Approvals: answer every interrupt in the next run's `resume`.
      const resume = [];
      for (const interrupt of finished.interrupts) {
        resume.push({ interruptId: interrupt.id, status: 'resolved', payload: { approved: await approve(interrupt) } });
      }
      params = { tools: definitions, resume };
    } else if (finished?.outcome === 'success' && finished.pendingToolCallIds.length > 0) {
      // Frontend tools: run them and add their results as tool messages; the next run continues the reply.
      for (const id of finished.pendingToolCallIds) {
        const call = agent.messages.flatMap((m) => m.toolCalls ?? []).find((c) => c.id === id);
        const output = await tools[call.function.name].run(JSON.parse(call.function.arguments || '{}'));
        agent.addMessage({ id: crypto.randomUUID(), role: 'tool', toolCallId: id, content: JSON.stringify(output) });
      }
      params = { tools: definitions };
    } else {
      return finished; // success, or cancelled (the reply was stopped)
    }
  }
}

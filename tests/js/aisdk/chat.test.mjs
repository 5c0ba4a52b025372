// The real AI SDK clients (`ai` 5, 6 and 7, side by side through npm aliases) against our /api/chat.
// Run by tests/protocols/test_aisdk_node.py, which starts the server and the fake Gemini and sets CHAT_BASE_URL/FAKE_GEMINI_URL.
import assert from 'node:assert/strict';
import { before, beforeEach, describe, test } from 'node:test';

import {
  VERSIONS,
  api,
  asStored,
  call,
  handoff,
  loadAi,
  makeChat,
  newChatId,
  readAll,
  resetFake,
  script,
  storedParts,
  text,
  textOf,
  transportFor,
  waitFor,
} from './helpers.mjs';

const userMessage = (words) => ({ id: newChatId(), role: 'user', parts: [{ type: 'text', text: words }] });
const RATE_LIMITED = 'The model provider is rate limiting requests. Try again shortly.';
const UNAVAILABLE = 'The model provider is unavailable. Try again shortly.';

async function ensureTask(title) {
  const { body } = await api('/api/tasks?limit=100');
  if (!body.data.some((task) => task.title === title)) {
    const created = await api('/api/tasks', { method: 'POST', body: JSON.stringify({ title }) });
    assert.equal(created.status, 201);
  }
}

for (const version of VERSIONS) {
  describe(`ai@${version}`, () => {
    let ai;
    before(async () => {
      ai = await loadAi(version);
    });
    beforeEach(resetFake);

    test('sendMessages + readUIMessageStream assemble the parts the server stores', async () => {
      await ensureTask('milk');
      await script(handoff(), call('list_tasks'), text(['Here ', 'they are.'], { thinking: ['Looking them up.'] }));
      const transport = transportFor(ai, version);
      const chatId = newChatId();
      const stream = await transport.sendMessages({
        chatId,
        messages: [userMessage('what are my tasks?')],
        trigger: 'submit-message',
        messageId: undefined,
        abortSignal: undefined,
      });
      let message;
      for await (const snapshot of ai.readUIMessageStream({ stream })) message = snapshot;
      assert.equal(message.role, 'assistant');
      assert.equal(textOf(message), 'Here they are.');
      const types = message.parts.map((p) => p.type);
      for (const expected of ['data-agent', 'tool-list_tasks', 'data-widget', 'reasoning', 'text'])
        assert.ok(types.includes(expected), `${expected} in ${types}`);
      const conversationId = message.metadata.conversationId;
      const { status, body } = await api(`/api/conversations/${conversationId}`);
      assert.equal(status, 200);
      const stored = body.messages.at(-1);
      assert.equal(stored.id, message.id, 'the UI message id is our assistant message id');
      assert.deepEqual(asStored(message.parts), storedParts(stored.parts));
      assert.equal(message.metadata.agent, 'Task assistant');
      assert.equal(message.metadata.finishReason, 'stop');
    });

    test('the headless Chat runs a tool turn with a handoff and a widget', async () => {
      await ensureTask('bread');
      await script(handoff(), call('list_tasks'), text('Two tasks.'));
      const chat = makeChat(ai, { id: newChatId(), transport: transportFor(ai, version) });
      await chat.sendMessage({ text: 'list my tasks' });
      assert.equal(chat.status, 'ready', String(chat.error));
      const reply = chat.messages.at(-1);
      const agents = reply.parts.filter((p) => p.type === 'data-agent').map((p) => p.data.name);
      assert.deepEqual(agents, ['Triage', 'Task assistant']);
      const tool = reply.parts.find((p) => p.type === 'tool-list_tasks');
      assert.equal(tool.state, 'output-available');
      assert.ok(Array.isArray(tool.output.tasks ?? tool.output), JSON.stringify(tool.output));
      const widget = reply.parts.find((p) => p.type === 'data-widget');
      assert.ok(widget.id, 'the widget part carries the widget id');
      assert.equal(textOf(reply), 'Two tasks.');
      assert.equal(chat.messages.length, 2);

      // A widget action is a body field; its answer is a message of its own with the widget under the same id.
      const { body } = await api('/api/tasks?limit=100');
      const bread = body.data.find((task) => task.title === 'bread');
      const action = { type: 'tasks.toggle', payload: { task_id: bread.id, completed: !bread.completed } };
      await chat.sendMessage(undefined, { body: { action } });
      assert.equal(chat.error, undefined, String(chat.error));
      const acted = chat.messages.at(-1);
      assert.notEqual(acted.id, reply.id);
      const updated = acted.parts.find((p) => p.type === 'data-widget');
      assert.equal(updated.id, widget.id);
      const after = await api(`/api/tasks/${bread.id}`);
      assert.equal(after.body.completed, !bread.completed);
    });

    for (const approve of [true, false]) {
      test(`an approval, ${approve ? 'approved' : 'denied'}, continues the same message`, async () => {
        const title = `approve-${approve}-${Math.random().toString(36).slice(2, 8)}`;
        await ensureTask(title);
        await script(handoff(), call('delete_task', { task: title }));
        const chat = makeChat(ai, {
          id: newChatId(),
          transport: transportFor(ai, version),
          sendAutomaticallyWhen: (options) =>
            version >= 6
              ? ai.lastAssistantMessageIsCompleteWithApprovalResponses(options)
              : ai.lastAssistantMessageIsCompleteWithToolCalls(options),
        });
        await chat.sendMessage({ text: `delete ${title}` });
        assert.equal(chat.status, 'ready', String(chat.error));
        const paused = chat.messages.at(-1);
        const tool = paused.parts.find((p) => p.type === 'tool-delete_task');
        assert.deepEqual(tool.input, { task: title });
        await script(text(approve ? 'Deleted it.' : 'Okay, I kept it.'));
        if (version >= 6) {
          assert.equal(tool.state, 'approval-requested');
          await chat.addToolApprovalResponse({ id: tool.approval.id, approved: approve, reason: 'not now' });
        } else {
          assert.equal(tool.state, 'input-available');
          const approval = paused.parts.find((p) => p.type === 'data-approval');
          assert.equal(approval.data.toolCallId, tool.toolCallId);
          await chat.addToolOutput({ tool: 'delete_task', toolCallId: tool.toolCallId, output: { approved: approve } });
        }
        await waitFor(() => chat.status === 'ready' && textOf(chat.messages.at(-1)) !== '', 'the continuation');
        assert.equal(chat.error, undefined, String(chat.error));
        const reply = chat.messages.at(-1);
        assert.equal(reply.id, paused.id, 'the continuation is the same assistant message');
        assert.equal(chat.messages.length, 2);
        assert.equal(textOf(reply), approve ? 'Deleted it.' : 'Okay, I kept it.');
        const done = reply.parts.find((p) => p.type === 'tool-delete_task');
        if (approve) {
          assert.equal(done.state, 'output-available');
          assert.equal(done.output.deleted.title, title);
        } else if (version >= 6) {
          assert.equal(done.state, 'output-denied');
        }
        const { body } = await api('/api/tasks?limit=100');
        assert.equal(body.data.some((task) => task.title === title), !approve);
        const stored = await api(`/api/conversations/${reply.metadata.conversationId}`);
        const approvalPart = stored.body.messages.at(-1).parts.find((p) => p.type === 'approval');
        assert.equal(approvalPart.decision, approve ? 'approved' : 'rejected');
      });
    }

    test('a client tool runs in onToolCall and its output goes back with addToolOutput', async () => {
      await script(handoff(), call('set_theme', { theme: 'dark' }));
      const ran = [];
      let chat;
      chat = makeChat(ai, {
        id: newChatId(),
        transport: transportFor(ai, version),
        sendAutomaticallyWhen: ai.lastAssistantMessageIsCompleteWithToolCalls,
        onToolCall: async ({ toolCall }) => {
          if (toolCall.toolName !== 'set_theme') return;
          ran.push(toolCall.input);
          await script(text('Switched to dark.'));
          chat.addToolOutput({ tool: 'set_theme', toolCallId: toolCall.toolCallId, output: { theme: 'dark' } });
        },
      });
      await chat.sendMessage({ text: 'dark mode please' });
      await waitFor(() => chat.status === 'ready' && textOf(chat.messages.at(-1)) !== '', 'the continuation');
      assert.equal(chat.error, undefined, String(chat.error));
      assert.deepEqual(ran, [{ theme: 'dark' }]);
      const reply = chat.messages.at(-1);
      assert.equal(textOf(reply), 'Switched to dark.');
      const tool = reply.parts.find((p) => p.type === 'tool-set_theme');
      assert.equal(tool.state, 'output-available');
      assert.deepEqual(tool.output, { theme: 'dark' });
      const stored = await api(`/api/conversations/${reply.metadata.conversationId}`);
      const client = stored.body.messages.at(-1).parts.find((p) => p.type === 'client_tool');
      assert.deepEqual(client.result, { theme: 'dark' });
    });

    test('resume: abort midway, reconnect, the final text is exact; 204 when nothing runs', async () => {
      const words = Array.from({ length: 30 }, (_, i) => `w${i} `);
      await script(text(words, { delay: 0.05 }));
      const transport = transportFor(ai, version);
      const chatId = newChatId();
      const controller = new AbortController();
      const stream = await transport.sendMessages({
        chatId,
        messages: [userMessage('count')],
        trigger: 'submit-message',
        messageId: undefined,
        abortSignal: controller.signal,
      });
      const reader = stream.getReader();
      let deltas = 0;
      while (deltas < 3) {
        const { value } = await reader.read();
        if (value.type === 'text-delta') deltas += 1;
      }
      controller.abort();
      await reader.cancel().catch(() => {});
      const resumed = await transport.reconnectToStream({ chatId });
      assert.ok(resumed, 'a running turn resumes');
      let message;
      for await (const snapshot of ai.readUIMessageStream({ stream: resumed })) message = snapshot;
      assert.equal(textOf(message), words.join(''));
      assert.equal(message.parts.filter((p) => p.type === 'text').length, 1, 'no duplicate text part');
      let after = await transport.reconnectToStream({ chatId });
      for (let i = 0; after !== null && i < 50; i += 1) {
        await readAll(after);
        await new Promise((resolve) => setTimeout(resolve, 100));
        after = await transport.reconnectToStream({ chatId });
      }
      assert.equal(after, null, 'no running turn: 204, and the client gets null');
    });

    test('regenerate replaces the last reply', async () => {
      await script(text('First.'), text('Second.'));
      const chat = makeChat(ai, { id: newChatId(), transport: transportFor(ai, version) });
      await chat.sendMessage({ text: 'say something' });
      const firstId = chat.messages.at(-1).id;
      await chat.regenerate();
      assert.equal(chat.error, undefined, String(chat.error));
      assert.equal(chat.messages.length, 2);
      assert.equal(textOf(chat.messages.at(-1)), 'Second.');
      assert.notEqual(chat.messages.at(-1).id, firstId);
      const stored = await api(`/api/conversations/${chat.messages.at(-1).metadata.conversationId}`);
      assert.deepEqual(
        stored.body.messages.map((m) => m.content),
        ['say something', 'Second.'],
      );
    });

    if (version >= 6) {
      test('Chat.resumeStream replays the running reply without duplicating it', async () => {
        const words = Array.from({ length: 20 }, (_, i) => `r${i} `);
        await script(text(words, { delay: 0.05 }));
        const chatId = newChatId();
        const first = makeChat(ai, { id: chatId, transport: transportFor(ai, version) });
        const sending = first.sendMessage({ text: 'count again' });
        await waitFor(() => first.messages.at(-1)?.role === 'assistant' && textOf(first.messages.at(-1)).length > 6, 'text');
        first.stop();
        await sending;
        const partial = first.messages.map((m) => structuredClone(m));
        const second = makeChat(ai, { id: chatId, transport: transportFor(ai, version), messages: partial });
        await second.resumeStream();
        assert.equal(second.error, undefined, String(second.error));
        assert.equal(textOf(second.messages.at(-1)), words.join(''));
        assert.equal(second.messages.length, 2);
      });
    }

    for (const [status, errorText] of [
      [429, RATE_LIMITED],
      [500, UNAVAILABLE],
    ]) {
      test(`a provider ${status} is an error chunk with our text, then a clean end`, async () => {
        const failure = { kind: 'error', status, message: 'upstream secret detail' };
        await script(failure, failure, failure);
        const stream = await transportFor(ai, version).sendMessages({
          chatId: newChatId(),
          messages: [userMessage('hi')],
          trigger: 'submit-message',
          messageId: undefined,
          abortSignal: undefined,
        });
        const chunks = await readAll(stream);
        const errors = chunks.filter((c) => c.type === 'error');
        assert.deepEqual(errors, [{ type: 'error', errorText }]);
        assert.equal(chunks.at(-1).type, 'finish');
        assert.equal(chunks.at(-1).finishReason, 'error');
        assert.ok(!JSON.stringify(chunks).includes('secret'));
      });
    }
  });
}

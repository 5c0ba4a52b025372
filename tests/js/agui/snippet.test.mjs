// Runs the README's AG-UI snippet (snippet.mjs) as it is, against the real server.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createAgent, rejoiningAgent, send } from './snippet.mjs';
import { BASE, api, call, handoff, newThreadId, script, text } from './helpers.mjs';

test('the README snippet runs frontend tools and approvals to the end of the reply', async () => {
  const agent = createAgent({ baseUrl: BASE, threadId: newThreadId() });
  const shown = [];
  const tools = {
    show_banner: {
      description: 'Show a banner in the page.',
      parameters: { type: 'object', properties: { text: { type: 'string' } }, required: ['text'] },
      run: async ({ text }) => (shown.push(text), { shown: true }),
    },
  };
  await script(call('show_banner', { text: 'Welcome' }), text('Banner is up.'));
  const first = await send(agent, 'show a welcome banner', { tools });
  assert.equal(first.outcome, 'success');
  assert.deepEqual(shown, ['Welcome']);
  assert.equal(agent.messages.at(-1).content, 'Banner is up.');

  const created = await api('/api/tasks', { method: 'POST', body: JSON.stringify({ title: 'old' }) });
  const asked = [];
  await script(handoff(), call('delete_task', { task: created.body.id }), text('Kept it.'));
  await send(agent, 'delete old', { tools, approve: async (interrupt) => (asked.push(interrupt.reason), false) });
  assert.deepEqual(asked, ['tool_approval']);
  assert.equal(agent.messages.at(-1).content, 'Kept it.');
  assert.equal((await api(`/api/tasks/${created.body.id}`)).status, 200, 'refused: the task is still there');
});

test('the README snippet throws our message when the reply fails', async () => {
  const failing = { kind: 'error', status: 500, message: 'secret provider detail' };
  await script(failing, failing, failing);
  const agent = createAgent({ baseUrl: BASE, threadId: newThreadId() });
  await assert.rejects(send(agent, 'hi'), { message: 'The model provider is unavailable. Try again shortly.' });
});

test('the README snippet rejoins a reply after its connection dropped', async () => {
  const threadId = newThreadId();
  await script(text(Array.from({ length: 40 }, (_, i) => `w${i} `), { delay: 0.05 }));
  const first = createAgent({ baseUrl: BASE, threadId });
  first.addMessage({ id: crypto.randomUUID(), role: 'user', content: 'go' });
  let seen = 0;
  const dropped = first.runAgent({}, {
    onTextMessageContentEvent: () => void (++seen === 2 && first.abortRun()), // the connection drops mid-reply
  });
  await dropped.catch(() => undefined);
  assert.ok(seen >= 2 && seen < 40, `dropped after ${seen} deltas`);

  const again = rejoiningAgent({ baseUrl: BASE, threadId });
  const { newMessages } = await again.runAgent();
  const reply = newMessages.filter((m) => m.role === 'assistant').map((m) => m.content).join('');
  assert.equal(reply, Array.from({ length: 40 }, (_, i) => `w${i} `).join(''), 'the whole reply, replayed and followed');

  const idle = rejoiningAgent({ baseUrl: BASE, threadId });
  const after = await idle.runAgent();
  assert.deepEqual(after.newMessages, [], 'nothing runs any more: 204, and the run ends at once');
});

// Runs the README's AG-UI snippet (snippet.mjs) as it is, against the real server.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createAgent, send } from './snippet.mjs';
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
  await assert.rejects(send(agent, 'hi'), (error) => !/secret/.test(error.message) && error.message.length > 0);
});

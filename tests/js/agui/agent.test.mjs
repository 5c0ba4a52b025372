// The real @ag-ui/client (HttpAgent.runAgent, with its own event verification) against our AG-UI endpoint.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { HttpAgent } from '@ag-ui/client';
import { BASE, api, call, handoff, newThreadId, script, text } from './helpers.mjs';

const agentFor = (threadId = newThreadId()) => new HttpAgent({ url: `${BASE}/api/agui`, threadId });
const user = (content) => ({ id: crypto.randomUUID(), role: 'user', content });
const BANNER = {
  name: 'show_banner',
  description: 'Show a banner in the page.',
  parameters: { type: 'object', properties: { text: { type: 'string' } }, required: ['text'] },
};

/** Run once and record what the client saw: every event's type and how the run finished. */
async function run(agent, params = {}) {
  const seen = { types: [], finished: undefined, error: undefined };
  const result = await agent.runAgent(params, {
    onEvent: ({ event }) => void seen.types.push(event.type),
    onRunFinishedEvent: (finished) => void (seen.finished = finished),
    onRunErrorEvent: ({ event }) => void (seen.error = event),
  });
  return { ...seen, ...result };
}

test('a text turn becomes one assistant message', async () => {
  await script(text(['Hel', 'lo ', 'there'], { thinking: ['Hmm.'] }));
  const agent = agentFor();
  agent.addMessage(user('hi'));
  const { types, finished, newMessages } = await run(agent);
  assert.equal(types[0], 'RUN_STARTED');
  assert.equal(types.at(-1), 'RUN_FINISHED');
  assert.ok(types.includes('REASONING_MESSAGE_CONTENT'));
  assert.equal(finished.outcome, 'success');
  assert.deepEqual(finished.pendingToolCallIds, []);
  const reply = newMessages.filter((m) => m.role === 'assistant');
  assert.deepEqual(reply.map((m) => m.content), ['Hello there']);
  assert.equal(agent.messages.at(-1).content, 'Hello there');
});

test('a tool turn shows its calls, results and widget', async () => {
  await api('/api/tasks', { method: 'POST', body: JSON.stringify({ title: 'milk' }) });
  await script(handoff(), call('list_tasks'), text('You have milk.'));
  const agent = agentFor();
  agent.addMessage(user('my tasks?'));
  const { types, newMessages } = await run(agent);
  assert.ok(types.includes('STEP_STARTED') && types.includes('CUSTOM'), types.join());
  const calls = newMessages.flatMap((m) => m.toolCalls ?? []);
  const listed = calls.find((c) => c.function.name === 'list_tasks');
  assert.ok(listed, JSON.stringify(newMessages));
  const result = newMessages.find((m) => m.role === 'tool' && m.toolCallId === listed.id);
  assert.match(result.content, /milk/);
  assert.equal(newMessages.at(-1).content, 'You have milk.');
});

test('a frontend tool round trip: the call ends the run, its tool message continues it', async () => {
  await script(call('show_banner', { text: 'Hi!' }));
  const agent = agentFor();
  agent.addMessage(user('greet me in a banner'));
  const first = await run(agent, { tools: [BANNER] });
  assert.equal(first.finished.outcome, 'success');
  const [callId] = first.finished.pendingToolCallIds;
  const toolCall = agent.messages.flatMap((m) => m.toolCalls ?? []).find((c) => c.id === callId);
  assert.equal(toolCall.function.name, 'show_banner');
  assert.deepEqual(JSON.parse(toolCall.function.arguments), { text: 'Hi!' });

  agent.addMessage({ id: crypto.randomUUID(), role: 'tool', toolCallId: callId, content: JSON.stringify({ shown: true }) });
  await script(text('Banner shown.'));
  const second = await run(agent, { tools: [BANNER] });
  assert.equal(second.finished.outcome, 'success');
  assert.deepEqual(second.finished.pendingToolCallIds, []);
  assert.equal(agent.messages.at(-1).content, 'Banner shown.');
});

test('an approval interrupts the run, and resume continues it', async () => {
  const created = await api('/api/tasks', { method: 'POST', body: JSON.stringify({ title: 'to delete' }) });
  await script(handoff(), call('delete_task', { task: created.body.id }));
  const agent = agentFor();
  agent.addMessage(user('delete it'));
  const paused = await run(agent);
  assert.equal(paused.finished.outcome, 'interrupt');
  assert.equal(agent.pendingInterrupts.length, 1);
  const [interrupt] = agent.pendingInterrupts;
  assert.equal(interrupt.reason, 'tool_approval');
  await assert.rejects(agent.runAgent({}), /pending interrupt/, 'the client insists on an answer');

  await script(text('Deleted.'));
  const resumed = await run(agent, { resume: [{ interruptId: interrupt.id, status: 'resolved', payload: { approved: true } }] });
  assert.equal(resumed.finished.outcome, 'success');
  assert.ok(resumed.newMessages.some((m) => m.role === 'tool' && m.toolCallId === interrupt.toolCallId));
  assert.equal(agent.messages.at(-1).content, 'Deleted.');
  assert.deepEqual(agent.pendingInterrupts, []);
  assert.equal((await api(`/api/tasks/${created.body.id}`)).status, 404);
});

test('errors: a provider failure is RUN_ERROR with our message; a bad request rejects with its status', async () => {
  const failing = { kind: 'error', status: 429, message: 'secret provider detail' };
  await script(failing, failing, failing); // the model call is retried twice
  const agent = agentFor();
  agent.addMessage(user('hi'));
  const { types, error, finished } = await run(agent);
  assert.equal(types.at(-1), 'RUN_ERROR');
  assert.equal(finished, undefined);
  assert.equal(error.code, 'rate_limited');
  assert.doesNotMatch(error.message, /secret/);

  const bad = agentFor();
  bad.addMessage(user('hi'));
  await assert.rejects(bad.runAgent({ tools: [{ name: '9 not a name', description: 'x' }] }), (e) => e.status === 422);
});

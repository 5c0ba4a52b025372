// Runs the documented snippet (snippet.mjs, quoted in backend/protocols/AISDK.md) with `ai`'s own headless Chat.
import assert from 'node:assert/strict';
import { beforeEach, test } from 'node:test';

import * as ai from 'ai';

import { BASE, api, call, handoff, makeChat, newChatId, resetFake, script, text, textOf, waitFor } from './helpers.mjs';
import { chatOptions, stopReply } from './snippet.mjs';

beforeEach(resetFake);

test('the documented options run a client tool round trip and a real stop', async () => {
  await script(handoff(), call('set_theme', { theme: 'light' }), text('Light it is.'));
  let chat;
  const { resume, ...options } = chatOptions({ baseUrl: BASE, getChat: () => chat });
  assert.equal(resume, true);
  chat = makeChat(ai, { id: newChatId(), ...options });
  await chat.sendMessage({ text: 'light mode' });
  await waitFor(() => chat.status === 'ready' && textOf(chat.messages.at(-1)) !== '', 'the reply');
  assert.equal(textOf(chat.messages.at(-1)), 'Light it is.');
  assert.deepEqual(chat.messages.at(-1).parts.find((p) => p.type === 'tool-set_theme').output, { theme: 'light' });

  await script(text(Array.from({ length: 100 }, (_, i) => `t${i} `), { delay: 0.05 }));
  const sending = chat.sendMessage({ text: 'talk a lot' });
  await waitFor(() => chat.messages.length === 4 && textOf(chat.messages.at(-1)).length > 0, 'some text');
  await stopReply(chat, { baseUrl: BASE });
  await sending;
  const conversationId = chat.messages.at(-1).metadata.conversationId;
  const { body } = await api(`/api/conversations/${conversationId}`);
  assert.equal(body.messages.at(-1).status, 'cancelled');
});

// Shared helpers for the AI SDK client tests: the server under test, the fake Gemini's script, a headless Chat.
export { BASE, FAKE, api, call, handoff, resetFake, script, text } from '../shared/server.mjs';
import { BASE } from '../shared/server.mjs';

export const VERSIONS = (process.env.AI_SDK_VERSIONS || '5,6,7').split(',').map(Number);

export const loadAi = (version) => import(`ai${version}`);

export const newChatId = () => `chat-${Math.random().toString(36).slice(2, 12)}`;

export function transportFor(ai, version, extra = {}) {
  return new ai.DefaultChatTransport({
    api: `${BASE}/api/chat`,
    headers: { 'X-AI-SDK-Version': String(version) },
    ...extra,
  });
}

/** A ChatState without any UI framework (what `@ai-sdk/react` keeps in React state). */
class PlainState {
  constructor(messages = []) {
    this.messages = messages;
    this.status = 'ready';
    this.error = undefined;
  }
  pushMessage(message) {
    this.messages = this.messages.concat(message);
  }
  popMessage() {
    this.messages = this.messages.slice(0, -1);
  }
  replaceMessage(index, message) {
    this.messages = [...this.messages.slice(0, index), this.snapshot(message), ...this.messages.slice(index + 1)];
  }
  snapshot(thing) {
    return structuredClone(thing);
  }
}

/** The `ai` package's own `AbstractChat`, headless: the class `useChat` wraps. */
export function makeChat(ai, options) {
  class HeadlessChat extends ai.AbstractChat {}
  const { messages = [], ...rest } = options;
  return new HeadlessChat({ ...rest, state: new PlainState(messages) });
}

export async function waitFor(predicate, what, timeoutMs = 30000) {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** A UIMessage's parts in the shape `GET /api/conversations/{id}` stores them. */
export function asStored(parts) {
  const stored = [];
  for (const part of parts) {
    if (part.type === 'step-start') continue;
    if (part.type === 'text') stored.push({ type: 'text', text: part.text });
    else if (part.type === 'reasoning') stored.push({ type: 'thinking', text: part.text });
    else if (part.type === 'data-agent') stored.push({ type: 'agent', name: part.data.name });
    else if (part.type === 'data-widget') stored.push({ type: 'widget', id: part.id, widget: part.data });
    else if (part.type.startsWith('tool-'))
      stored.push({
        type: 'tool_call',
        id: part.toolCallId,
        name: part.type.slice(5),
        args: part.input,
        result: part.output,
      });
    else stored.push({ type: part.type });
  }
  return stored;
}

/** Stored parts with only the fields `asStored` compares. */
export function storedParts(parts) {
  const keys = { text: ['text'], thinking: ['text'], agent: ['name'], widget: ['id', 'widget'], tool_call: ['id', 'name', 'args', 'result'] };
  return parts.map((part) => Object.fromEntries([['type', part.type], ...(keys[part.type] || []).map((k) => [k, part[k]])]));
}

export async function readAll(stream) {
  const chunks = [];
  const reader = stream.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return chunks;
    chunks.push(value);
  }
}

export function textOf(message) {
  return message.parts.filter((p) => p.type === 'text').map((p) => p.text).join('');
}

// Shared helpers for the AG-UI client tests: the server under test and the fake Gemini's script.
import assert from 'node:assert/strict';

export const BASE = process.env.CHAT_BASE_URL;
export const FAKE = process.env.FAKE_GEMINI_URL;
if (!BASE || !FAKE) throw new Error('CHAT_BASE_URL and FAKE_GEMINI_URL must be set (tests/protocols/test_agui_node.py sets them)');

/** Queue fake Gemini turns (specs of tests/fakes/gemini.py `turn_from_spec`). */
export async function script(...turns) {
  const response = await fetch(`${FAKE}/_control/script`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(turns),
  });
  assert.equal(response.status, 200, await response.text());
}

export const handoff = (agent = 'task_assistant') => ({ kind: 'function_call', name: `transfer_to_${agent}`, args: {} });
export const call = (name, args = {}) => ({ kind: 'function_call', name, args });
export const text = (chunks, extra = {}) => ({ kind: 'text', text: chunks, ...extra });

export async function api(path, init = {}) {
  const response = await fetch(`${BASE}${path}`, {
    ...init,
    headers: { 'content-type': 'application/json', ...(init.headers || {}) },
  });
  const body = response.status === 204 ? null : await response.json();
  return { status: response.status, body };
}

export const newThreadId = () => `thread-${Math.random().toString(36).slice(2, 12)}`;

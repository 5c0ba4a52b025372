// Shared by the Node client suites (tests/js/aisdk, tests/js/agui): the server under test and the fake Gemini's
// script. No packages: each suite has its own package.json; this file only uses Node's built-ins.
import assert from 'node:assert/strict';

export const BASE = process.env.CHAT_BASE_URL;
export const FAKE = process.env.FAKE_GEMINI_URL;
if (!BASE || !FAKE) throw new Error('CHAT_BASE_URL and FAKE_GEMINI_URL must be set (tests/protocols/node.py sets them)');

/** Queue fake Gemini turns (specs of tests/fakes/gemini.py `turn_from_spec`). */
export async function script(...turns) {
  const response = await fetch(`${FAKE}/_control/script`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(turns),
  });
  assert.equal(response.status, 200, await response.text());
}

export async function resetFake() {
  await fetch(`${FAKE}/_control/reset`, { method: 'POST' });
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

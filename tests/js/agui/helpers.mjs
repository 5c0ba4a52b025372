// Helpers for the AG-UI client tests: the server and the fake Gemini (shared with tests/js/aisdk).
export { BASE, FAKE, api, call, handoff, script, text } from '../shared/server.mjs';

export const newThreadId = () => `thread-${Math.random().toString(36).slice(2, 12)}`;

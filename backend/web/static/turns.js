// Following a turn's stream: POST /chatkit (a message or the answers to a paused reply), a regeneration
// (POST /api/conversations/{id}/messages/{message_id}/regenerate), or a rejoin of a running turn
// (GET /chatkit/{message_id}/stream). The last event id is remembered; when a stream drops mid-reply (a network error,
// not a stop), the turn is rejoined with Last-Event-ID, so nothing is lost or shown twice. Events are folded into the
// reply's view; the page is told about `start` and learns the outcome from the turn's fields.

import { readEventStream } from "./sse.js";

const REJOIN_DELAYS_MS = [250, 500, 1000, 2000, 4000];
const BUSY_RETRIES = 4;
const BUSY_RETRY_MS = 600;

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    const timer = window.setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      window.clearTimeout(timer);
      reject(new DOMException("Aborted", "AbortError"));
    });
  });
}

/** A UUID v4 (crypto.randomUUID needs a secure context; getRandomValues does not). */
export function newId() {
  if (window.isSecureContext && crypto.randomUUID) return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** The connection dropped and the turn could not be rejoined. */
export class StreamLostError extends Error {
  constructor() {
    super("The connection was lost before the reply finished.");
    this.name = "StreamLostError";
  }
}

/**
 * One stream of an assistant message into its view.
 *
 * Fields the page reads afterwards: `started` (a `start` arrived), `finished` (a `done` arrived), `finishReason`,
 * `failed` (an `error` event arrived: `errorEvent`), `stopped` (the user stopped it), `messageId`, `conversationId`.
 */
export class Turn {
  /**
   * @param {object} options
   * @param {Function} options.api The page's fetch wrapper: api(path, {method, body, headers, signal, accept}).
   * @param {import("./reply.js").ReplyView} options.view Where the reply is rendered.
   * @param {string|null} options.conversationId The conversation (null for a new one, until `start`).
   * @param {string|null} options.messageId The assistant message (known when rejoining or answering).
   * @param {(turn: Turn, event: object) => void} options.onStart Called on each `start` event.
   */
  constructor({ api, view, conversationId = null, messageId = null, onStart = () => {} }) {
    this.api = api;
    this.view = view;
    this.conversationId = conversationId;
    this.messageId = messageId;
    this.onStart = onStart;
    this.controller = new AbortController();
    this.lastEventId = null;
    this.started = false;
    this.finished = false;
    this.finishReason = null;
    this.failed = false;
    this.errorEvent = null;
    this.stopped = false;
  }

  /**
   * Send a message (`POST /chatkit`); the same `clientMessageId` on a retry attaches to the turn it began. `editOf`:
   * the user message this one is a new version of.
   */
  send({ text, attachments = [], clientMessageId, editOf = null }) {
    const body = { message: text, client_message_id: clientMessageId };
    if (this.conversationId) body.thread_id = this.conversationId;
    if (editOf) body.edit_of = editOf;
    if (attachments.length) body.attachments = attachments.map((file) => file.id);
    return this.follow(async () => {
      for (let attempt = 0; ; attempt++) {
        try {
          return await this.post(body);
        } catch (error) {
          // Right after a stop the server may still be storing the previous reply for a moment.
          if (error.code !== "run_in_progress" || attempt >= BUSY_RETRIES) throw error;
          await sleep(BUSY_RETRY_MS, this.controller.signal);
        }
      }
    });
  }

  /** Answer a user message again (`messageId`: it, or a reply to it); the new reply is a version of the old ones. */
  regenerate(messageId, clientMessageId) {
    const path =
      `/api/conversations/${encodeURIComponent(this.conversationId)}` +
      `/messages/${encodeURIComponent(messageId)}/regenerate`;
    const body = { client_message_id: clientMessageId };
    return this.follow(() =>
      this.api(path, { method: "POST", body, signal: this.controller.signal, accept: "text/event-stream" }),
    );
  }

  /** Answer a paused reply: `{approvals?, client_tool_results?}`; the continuation streams into the same view. */
  answer(answers) {
    return this.follow(() => this.post({ thread_id: this.conversationId, ...answers }));
  }

  /** Rejoin a running turn from after event `after` (0: the whole turn). */
  rejoin(after = 0) {
    return this.follow(() => this.reopen(after));
  }

  post(body) {
    return this.api("/chatkit", { method: "POST", body, signal: this.controller.signal, accept: "text/event-stream" });
  }

  reopen(after) {
    const path = `/chatkit/${encodeURIComponent(this.messageId)}/stream`;
    const headers = { "Last-Event-ID": String(after) };
    return this.api(path, { headers, signal: this.controller.signal, accept: "text/event-stream" });
  }

  handle(event, id) {
    if (id !== null && /^\d+$/.test(id)) this.lastEventId = Number(id);
    switch (event.type) {
      case "start":
        this.started = true;
        this.messageId = event.message_id;
        this.conversationId = event.conversation_id;
        this.onStart(this, event);
        break;
      case "error":
        this.failed = true;
        this.errorEvent = event;
        break;
      case "done":
        this.finished = true;
        this.finishReason = event.finish_reason;
        break;
      default:
        this.view.event(event);
    }
  }

  /**
   * Open the stream and read it to `done`; rejoin with Last-Event-ID when it drops. Rejects with the API's error
   * (the request was refused), a StreamLostError (dropped and could not be rejoined) or an AbortError (stopped).
   */
  async follow(open) {
    const signal = this.controller.signal;
    let response = await open();
    for (let attempt = 0; ; ) {
      try {
        if (await readEventStream(response.body, (event, id) => this.handle(event, id))) return;
      } catch (error) {
        if (this.stopped || error.name === "AbortError") throw error;
      }
      if (this.finished) return;
      // The stream dropped mid-reply: rejoin where it broke off.
      for (;;) {
        if (!this.messageId || attempt >= REJOIN_DELAYS_MS.length) throw new StreamLostError();
        await sleep(REJOIN_DELAYS_MS[attempt++], signal);
        try {
          response = await this.reopen(this.lastEventId ?? 0);
          break;
        } catch (error) {
          if (error.name === "AbortError") throw error;
          if (error.status !== 0 && error.status < 500) throw new StreamLostError();
        }
      }
    }
  }

  /** Stop following locally (the page asks the server to stop the run first). */
  abort() {
    this.stopped = true;
    this.controller.abort();
  }
}

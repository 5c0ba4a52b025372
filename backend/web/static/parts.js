// A reply's part model: the same fold as backend/chat/reply.py. Streamed events are folded into ordered, typed parts;
// a stored reply arrives as those parts already. The view (reply.js) renders parts only, so a reloaded reply looks
// exactly as it did while it streamed.
//
// Parts: {type: "text"|"thinking", text}, {type: "agent", name}, {type: "tool_call", id, name, args, result},
// {type: "widget", id, widget}, {type: "approval", id, name, args, decision, reason?},
// {type: "client_tool", id, name, args, result}.

/** Folds events into parts and says what changed: `{op: "add" | "update", part}` (or null when nothing did). */
export class ReplyParts {
  /**
   * @param {object[]} parts Stored parts to start from (copied).
   */
  constructor(parts = []) {
    this.parts = [];
    this.byKey = new Map(); // "type:id" -> part
    this.agent = null; // the agent answering now
    for (const part of parts) this.add({ ...part });
  }

  add(part) {
    this.parts.push(part);
    if (typeof part.id === "string") this.byKey.set(`${part.type}:${part.id}`, part);
    if (part.type === "agent") this.agent = part.name;
    return { op: "add", part };
  }

  get(type, id) {
    return this.byKey.get(`${type}:${id}`) || null;
  }

  delta(type, content) {
    if (!content) return null;
    const last = this.parts[this.parts.length - 1];
    if (last && last.type === type) {
      last.text += content;
      return { op: "update", part: last };
    }
    return this.add({ type, text: content });
  }

  /** Fold one streamed event in; returns the change to render. */
  fold(event) {
    switch (event.type) {
      case "text":
        return this.delta("text", event.content);
      case "thinking":
        return this.delta("thinking", event.content);
      case "agent":
        if (event.name === this.agent) return null;
        return this.add({ type: "agent", name: event.name });
      case "tool_call":
        return this.add({ type: "tool_call", id: event.id, name: event.name, args: event.args, result: null });
      case "tool_result": {
        const target = this.get("tool_call", event.id) || this.get("client_tool", event.id);
        if (!target) return null;
        target.result = event.result;
        return { op: "update", part: target };
      }
      case "widget": {
        const existing = this.get("widget", event.id);
        if (!existing) return this.add({ type: "widget", id: event.id, widget: event.widget });
        existing.widget = event.widget; // a later widget with the same id replaces it in place
        return { op: "update", part: existing };
      }
      case "approval_request":
        return this.add({ type: "approval", id: event.id, name: event.name, args: event.args, decision: null });
      case "client_tool_call":
        return this.add({ type: "client_tool", id: event.id, name: event.name, args: event.args, result: null });
      default:
        return null;
    }
  }

  /** Record the user's answer on an approval or client-tool part (as the server does when it resumes). */
  decide(type, id, fields) {
    const part = this.get(type, id);
    if (!part) return null;
    Object.assign(part, fields);
    return { op: "update", part };
  }

  /** Approvals without a decision and client tools without a result: what a paused reply waits for. */
  pending() {
    return this.parts.filter(
      (p) => (p.type === "approval" && p.decision == null) || (p.type === "client_tool" && p.result == null),
    );
  }

  /** All text parts joined (the message's `content`). */
  get text() {
    return this.parts.filter((p) => p.type === "text").map((p) => p.text).join("");
  }
}

// One assistant reply on the page. It renders parts only (parts.js): streamed events are folded into parts first, and
// a stored reply is loaded as its parts, so both go through the same code and look the same.
//
// Every string reaches the DOM through textContent (directly, or through the DOM-building Markdown renderer).

import { el } from "./dom.js";
import { renderMarkdown } from "./markdown.js";
import { ReplyParts } from "./parts.js";
import { renderWidget, updateWidget } from "./widgets.js";

const DECISIONS = { approved: "Approved", rejected: "Rejected", cancelled: "Cancelled" };

export function icon(name) {
  return document.getElementById(`icon-${name}`).content.firstElementChild.cloneNode(true);
}

export function truncate(text, max) {
  return text.length <= max ? text : `${text.slice(0, max - 1).trimEnd()}…`;
}

export function flatten(text) {
  return String(text).split(/\s+/).join(" ").trim();
}

function nearBottom(scroller) {
  return scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 120;
}

/** Run `change`; if the message pane was scrolled to the bottom before, keep it there. */
export function withStickyScroll(change) {
  const scroller = document.getElementById("messages");
  const stick = scroller && nearBottom(scroller);
  change();
  if (stick) scroller.scrollTop = scroller.scrollHeight;
}

function formatArgs(args) {
  if (!args || typeof args !== "object") return "";
  const parts = Object.entries(args).map(([key, value]) => `${key}: ${JSON.stringify(value) ?? String(value)}`);
  return truncate(parts.join(", "), 90);
}

function resultIsError(result) {
  return Boolean(result && typeof result === "object" && !Array.isArray(result) && "error" in result);
}

function summarizeResult(result) {
  if (result === null || result === undefined) return "no result";
  if (typeof result === "string") return truncate(flatten(result), 70);
  if (typeof result !== "object") return String(result);
  if (Array.isArray(result)) return `${result.length} item${result.length === 1 ? "" : "s"}`;
  if (resultIsError(result)) {
    const detail = typeof result.error === "string" ? result.error : JSON.stringify(result.error);
    return truncate(`error: ${flatten(detail)}`, 70);
  }
  const parts = [];
  for (const [key, value] of Object.entries(result)) {
    if (Array.isArray(value)) parts.push(`${value.length} ${value.length === 1 ? key.replace(/s$/, "") : key}`);
    else if (value && typeof value === "object") {
      const label = value.title ?? value.name ?? value.id;
      if (label !== undefined && label !== null) parts.push(`${key}: “${label}”`);
    } else if (typeof value === "string" || typeof value === "number") parts.push(`${key}: ${value}`);
    if (parts.length >= 2) break;
  }
  return truncate(flatten(parts.join(", ") || JSON.stringify(result)), 70);
}

function prettyJson(value) {
  if (typeof value === "string") return value;
  try {
    return JSON.stringify(value, null, 2);
  } catch {
    return String(value);
  }
}

/**
 * One assistant reply: its parts in order, a typing indicator while it streams, and a footer (stopped, error, Retry).
 *
 * `onWidgetAction(action)` sends a widget's action. `previousAgent` is the agent that ended the reply before this one
 * (null for the first reply): an agent label is shown only when the answering agent changes.
 */
export class ReplyView {
  constructor({ onWidgetAction, previousAgent = null } = {}) {
    this.onWidgetAction = onWidgetAction;
    this.previousAgent = previousAgent;
    this.model = new ReplyParts();
    this.nodes = new Map(); // part -> its node
    this.dirty = new Set(); // text parts whose Markdown must be rendered again
    this.frame = null;
    this.onDecide = null; // set while the reply waits for approvals: (id, approve) => void
    this.article = el("article", { className: "msg msg-assistant", testid: "message" });
    this.article.dataset.role = "assistant";
    this.article.dataset.status = "complete";
    const avatar = el("div", { className: "msg-avatar", text: "✦", attrs: { "aria-hidden": "true" } });
    const body = el("div", { className: "msg-body" });
    body.append(el("span", { className: "sr-only", text: "Assistant said:" }));
    this.parts = el("div", { className: "msg-parts", testid: "message-body" });
    this.typing = el("div", { className: "typing", testid: "typing-indicator" });
    this.typing.append(el("span"), el("span"), el("span"), el("span", { className: "sr-only", text: "Assistant is typing" }));
    this.typing.hidden = true;
    this.footer = el("div", { className: "msg-footer" });
    body.append(this.parts, this.typing, this.footer);
    this.article.append(avatar, body);
  }

  /** The reply's joined text. */
  get text() {
    return this.model.text;
  }

  /** Show stored parts (a reloaded reply). */
  load(parts) {
    for (const part of parts || []) this.render(this.model.add({ ...part }));
  }

  /** Fold one streamed event in and render what changed. */
  event(event) {
    this.render(this.model.fold(event));
  }

  /** Record an answer locally (the server records it too when the run resumes). */
  decide(type, id, fields) {
    this.render(this.model.decide(type, id, fields));
  }

  render(change) {
    if (!change) return;
    const { op, part } = change;
    if (op === "add") {
      withStickyScroll(() => this.place(part, this.create(part)));
    } else {
      this.refresh(part);
    }
    if (part.type === "agent") this.article.dataset.agent = part.name;
  }

  place(part, node) {
    this.nodes.set(part, node);
    if (part.type === "tool_call" || part.type === "client_tool") {
      // Consecutive tool calls share one row of chips.
      let row = this.parts.lastElementChild;
      if (!row || !row.classList.contains("chips")) {
        row = el("div", { className: "chips", testid: "tool-chips" });
        this.parts.append(row);
      }
      row.append(node);
    } else {
      this.parts.append(node);
    }
    this.refresh(part);
  }

  create(part) {
    switch (part.type) {
      case "text":
        return el("div", { className: "msg-text markdown", testid: "message-text" });
      case "thinking": {
        const details = el("details", { className: "thinking", testid: "thinking" });
        details.append(el("summary", { text: "Thinking" }), el("div", { className: "thinking-text", testid: "thinking-text" }));
        return details;
      }
      case "agent": {
        const label = el("p", { className: "agent-label", testid: "agent-label" });
        const first = !this.model.parts.some((p) => p !== part && p.type === "agent" && this.nodes.has(p));
        // The entry agent of a conversation, or the same agent as before, needs no label.
        label.hidden = first && (this.previousAgent === null || this.previousAgent === part.name);
        return label;
      }
      case "tool_call":
      case "client_tool":
        return this.chip(part);
      case "widget":
        return el("div", { className: "widget-slot" });
      case "approval": {
        const box = el("div", { className: "approval", testid: "approval", attrs: { role: "group", tabindex: "-1" } });
        box.dataset.approvalId = part.id;
        box.setAttribute("aria-label", `Approval for ${part.name}`);
        return box;
      }
      default:
        return el("div", { className: "part-unknown" });
    }
  }

  refresh(part) {
    const node = this.nodes.get(part);
    if (!node) return;
    switch (part.type) {
      case "text":
        this.dirty.add(part);
        this.schedule();
        break;
      case "thinking":
        withStickyScroll(() => {
          node.querySelector(".thinking-text").textContent = part.text;
        });
        break;
      case "agent":
        node.textContent = part.name;
        break;
      case "tool_call":
      case "client_tool":
        if (part.result !== null && part.result !== undefined) this.chipResult(node, part.result);
        break;
      case "widget": {
        const shown = { ...part.widget, id: part.id };
        if (!node.firstChild) node.append(renderWidget(shown, this.onWidgetAction));
        else updateWidget(node, shown);
        break;
      }
      case "approval":
        this.renderApproval(node, part);
        break;
      default:
        break;
    }
  }

  chip(part) {
    const client = part.type === "client_tool";
    const chip = el("details", { className: client ? "chip chip-client" : "chip", testid: client ? "client-tool-chip" : "tool-chip" });
    chip.dataset.toolId = part.id;
    chip.dataset.toolName = part.name;
    chip.dataset.state = "running";
    const summary = el("summary", { className: "chip-summary" });
    const badge = el("span", { className: "chip-icon", attrs: { "aria-hidden": "true" } });
    badge.append(icon("tool"));
    summary.append(
      badge,
      el("span", { className: "sr-only", text: client ? "Tool run in your browser" : "Tool call" }),
      el("span", { className: "chip-name", text: part.name, testid: "tool-chip-name" }),
      el("span", { className: "chip-args", text: formatArgs(part.args), testid: "tool-chip-args" }),
    );
    const result = el("span", { className: "chip-result", testid: "tool-chip-result" });
    result.hidden = true;
    const spinner = el("span", { className: "chip-spinner", testid: "tool-chip-running" });
    spinner.append(el("span", { className: "sr-only", text: "running" }));
    summary.append(result, spinner);
    const detail = el("div", { className: "chip-detail" });
    detail.append(el("div", { className: "chip-label", text: "Arguments" }), el("pre", { text: prettyJson(part.args ?? {}) }));
    chip.append(summary, detail);
    return chip;
  }

  chipResult(chip, result) {
    const failed = resultIsError(result);
    chip.dataset.state = failed ? "error" : "done";
    chip.querySelector(".chip-spinner")?.remove();
    const shown = chip.querySelector('[data-testid="tool-chip-result"]');
    shown.hidden = false;
    shown.replaceChildren(icon(failed ? "alert" : "check"), el("span", { text: summarizeResult(result) }));
    const detail = chip.querySelector(".chip-detail");
    detail.querySelector(".chip-result-detail")?.remove();
    const block = el("div", { className: "chip-result-detail" });
    block.append(el("div", { className: "chip-label", text: "Result" }), el("pre", { text: prettyJson(result) }));
    detail.append(block);
  }

  renderApproval(box, part) {
    const pending = part.decision === null || part.decision === undefined;
    box.dataset.state = pending ? (this.onDecide ? "pending" : "unanswered") : part.decision;
    const title = el("p", { className: "approval-title" });
    title.append(icon("alert"), el("span", { text: `Allow ${part.name}?` }));
    const args = el("p", { className: "approval-args", text: formatArgs(part.args), testid: "approval-args" });
    box.replaceChildren(title, args);
    if (pending && this.onDecide) {
      const actions = el("div", { className: "approval-actions" });
      for (const [label, approve, style] of [
        ["Approve", true, "btn-primary"],
        ["Reject", false, "btn-ghost"],
      ]) {
        const button = el("button", {
          className: `btn btn-small ${style}`,
          text: label,
          testid: approve ? "approve-button" : "reject-button",
          attrs: { type: "button", "aria-label": `${label} ${part.name}` },
        });
        button.addEventListener("click", () => this.onDecide?.(part.id, approve));
        actions.append(button);
      }
      box.append(actions);
    } else {
      const text = pending ? "Not answered" : DECISIONS[part.decision] || part.decision;
      const decision = el("p", { className: "approval-decision", text, testid: "approval-decision" });
      if (part.reason) decision.append(el("span", { className: "muted", text: ` (${part.reason})` }));
      box.append(decision);
    }
  }

  /** Show Approve/Reject on pending approvals (`onDecide(id, approve)`), or hide them (null). */
  setAnswering(onDecide) {
    this.onDecide = onDecide;
    for (const part of this.model.parts) if (part.type === "approval") this.refresh(part);
  }

  setStreaming(on) {
    if (on) this.article.dataset.status = "streaming";
    else if (this.article.dataset.status === "streaming") this.article.dataset.status = "complete";
    this.parts.setAttribute("aria-live", on ? "polite" : "off");
    this.parts.setAttribute("aria-busy", String(on));
    this.typing.hidden = !on;
    if (on) this.parts.querySelector(":scope > .muted")?.remove();
  }

  schedule() {
    if (this.frame !== null) return;
    const run = () => {
      this.frame = null;
      this.flush();
    };
    this.frame = document.hidden ? window.setTimeout(run, 200) : window.requestAnimationFrame(run);
  }

  flush() {
    if (!this.dirty.size) return;
    withStickyScroll(() => {
      for (const part of this.dirty) this.nodes.get(part)?.replaceChildren(renderMarkdown(part.text));
    });
    this.dirty.clear();
  }

  markStopped() {
    this.article.dataset.status = "cancelled";
    this.footer.querySelector('[data-testid="message-stopped"]')?.remove();
    const badge = el("span", { className: "badge badge-stopped", text: "Stopped", testid: "message-stopped" });
    badge.title = "This reply was stopped";
    this.footer.append(badge);
  }

  /** A paused reply (waiting for approvals or a browser tool). */
  markPaused() {
    this.article.dataset.status = "requires_action";
  }

  showError(message, onRetry) {
    if (this.article.dataset.status !== "cancelled") this.article.dataset.status = "error";
    this.footer.querySelector('[data-testid="message-error"]')?.remove();
    const box = el("div", { className: "msg-error", testid: "message-error", attrs: { role: "alert" } });
    box.append(icon("alert"), el("span", { className: "msg-error-text", text: message, testid: "message-error-text" }));
    if (onRetry) {
      const retry = el("button", { className: "btn btn-small", text: "Retry", testid: "retry-button" });
      retry.type = "button";
      retry.addEventListener("click", () => {
        retry.disabled = true;
        onRetry(retry);
      });
      box.append(retry);
    }
    this.footer.append(box);
  }

  clearFooter() {
    this.footer.replaceChildren();
  }

  removeRetry() {
    this.footer.querySelector('[data-testid="retry-button"]')?.remove();
  }

  /** The reply stopped growing: render what is left and mark tool calls that never got a result. */
  finish({ paused = false } = {}) {
    if (this.frame !== null) {
      window.cancelAnimationFrame(this.frame);
      window.clearTimeout(this.frame);
      this.frame = null;
    }
    this.flush();
    this.setStreaming(false);
    if (paused) {
      this.markPaused();
      return;
    }
    for (const [part, node] of this.nodes) {
      if (part.type !== "tool_call" || node.dataset.state !== "running") continue;
      node.dataset.state = "incomplete";
      node.querySelector(".chip-spinner")?.remove();
      const shown = node.querySelector('[data-testid="tool-chip-result"]');
      shown.hidden = false;
      shown.replaceChildren(el("span", { text: "no result" }));
    }
    const empty = !this.parts.childElementCount;
    if (empty && this.article.dataset.status === "complete") {
      this.parts.append(el("p", { className: "muted", text: "(no reply)" }));
    } else if (empty && this.article.dataset.status === "cancelled") {
      this.parts.append(el("p", { className: "muted", text: "(stopped before any reply)" }));
    }
  }
}

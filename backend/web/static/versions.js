// Versions and branches of a conversation's messages: the "‹ 2 / 3 ›" control on a message with siblings, "Edit" on
// user messages (a new version of the message, sent as `edit_of`) and "Regenerate" on the last reply. The server keeps
// every version and the active branch (`PUT /api/conversations/{id}/branch`), so a reload shows the same branch.

import { el } from "./dom.js";

function button(text, testid, label, onClick) {
  const node = el("button", { className: "btn btn-small btn-ghost", text, testid, attrs: { "aria-label": label } });
  node.type = "button";
  node.addEventListener("click", onClick);
  return node;
}

/** The "‹ i / n ›" control of a message with versions; `onSwitch(id)` shows the version `id`. */
function versionControl(message, onSwitch) {
  const ids = message.sibling_ids || [message.id];
  const index = message.sibling_index || 0;
  const box = el("div", { className: "versions", testid: "versions", attrs: { role: "group" } });
  box.setAttribute("aria-label", "Versions");
  const previous = button("‹", "version-previous", "Previous version", () => onSwitch(ids[index - 1]));
  const next = button("›", "version-next", "Next version", () => onSwitch(ids[index + 1]));
  previous.disabled = index === 0;
  next.disabled = index >= ids.length - 1;
  const label = el("span", { className: "versions-label", text: `${index + 1} / ${ids.length}`, testid: "version-label" });
  box.append(previous, label, next);
  return box;
}

/** Replace a user message's bubble with an editor; `onSave(text)` sends the new version. */
function openEditor(article, text, onSave) {
  const bubble = article.querySelector(".bubble");
  const tools = article.querySelector(".msg-tools");
  if (!bubble || article.querySelector(".msg-edit")) return;
  const form = el("form", { className: "msg-edit", testid: "edit-form" });
  const input = el("textarea", { className: "msg-edit-input", testid: "edit-input", attrs: { rows: "3" } });
  input.value = text;
  input.setAttribute("aria-label", "Edit your message");
  const save = el("button", { className: "btn btn-small btn-primary", text: "Send", testid: "edit-save" });
  save.type = "submit";
  const cancel = button("Cancel", "edit-cancel", "Cancel the edit", () => close());
  const row = el("div", { className: "msg-edit-actions" });
  row.append(cancel, save);
  form.append(input, row);
  const close = () => {
    form.remove();
    bubble.hidden = false;
    if (tools) tools.hidden = false;
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const edited = input.value.trim();
    if (!edited) return;
    close();
    onSave(edited);
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Escape") close();
    else if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  bubble.hidden = true;
  if (tools) tools.hidden = true;
  bubble.after(form);
  input.focus();
}

/**
 * Add a stored message's tools to its article: the version control when it has siblings, Edit on a user message,
 * Regenerate on the last reply. `actions`: {onSwitch(id), onEdit(id, text), onRegenerate(id)}.
 */
export function addMessageTools(article, message, { isLastReply, actions }) {
  const tools = el("div", { className: "msg-tools", testid: "message-tools" });
  if ((message.sibling_count || 1) > 1) tools.append(versionControl(message, actions.onSwitch));
  if (message.role === "user") {
    tools.append(
      button("Edit", "edit-message", "Edit this message", () =>
        openEditor(article, message.content, (text) => actions.onEdit(message.id, text)),
      ),
    );
  } else if (isLastReply) {
    tools.append(button("Regenerate", "regenerate", "Regenerate this reply", () => actions.onRegenerate(message.id)));
  }
  if (!tools.childElementCount) return;
  (article.querySelector(".msg-body") || article).append(tools);
}

/** Remove `article` and every message shown after it (the branch a new version replaces on screen). */
export function removeFrom(article) {
  while (article.nextElementSibling) article.nextElementSibling.remove();
  article.remove();
}

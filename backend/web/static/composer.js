// The composer: the message box, Send and Stop, suggestions, and the attachments waiting to be sent.

import { AttachmentTray } from "./attachments.js";
import { currentToken } from "./auth.js";

const $ = (id) => document.getElementById(id);
const composer = $("composer");
const input = $("composer-input");
const sendButton = $("send-button");
const stopButton = $("stop-button");

let hooks = { busy: () => false, onSend: () => {}, onStop: () => {} };

const tray = new AttachmentTray({
  composer,
  box: composer.querySelector(".composer-box"),
  input,
  getToken: currentToken,
  onChange: () => updateComposer(),
});

/** Show Send or Stop, and enable Send only with text, no reply running and no upload still going. */
export function updateComposer() {
  const busy = hooks.busy();
  sendButton.hidden = busy;
  stopButton.hidden = !busy;
  sendButton.disabled = busy || !input.value.trim() || tray.uploading();
  composer.classList.toggle("is-busy", busy);
  composer.setAttribute("aria-busy", String(busy));
}

export function focusComposer() {
  input.focus();
}

function autosize() {
  input.style.height = "auto";
  input.style.height = `${Math.min(input.scrollHeight, 220)}px`;
}

/** Put a message that was not sent back in the box, unless something new was typed meanwhile. */
export function giveBack(text) {
  if (input.value.trim()) return;
  input.value = text;
  autosize();
}

function submit() {
  const text = input.value;
  if (!text.trim() || hooks.busy() || tray.uploading()) return;
  const attachments = tray.files();
  input.value = "";
  tray.clear();
  autosize();
  hooks.onSend(text.trim(), attachments);
}

/** Wire the composer. Hooks: `busy()` (a reply is running), `onSend(text, attachments)`, `onStop()`. */
export function initComposer({ busy, onSend, onStop }) {
  hooks = { busy, onSend, onStop };
  composer.addEventListener("submit", (event) => {
    event.preventDefault();
    submit();
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.altKey && !event.ctrlKey && !event.metaKey) {
      if (event.isComposing || event.keyCode === 229) return; // an IME is composing
      event.preventDefault();
      submit();
    } else if (event.key === "Escape" && hooks.busy()) {
      event.preventDefault();
      hooks.onStop();
    }
  });
  input.addEventListener("input", () => {
    autosize();
    updateComposer();
  });
  stopButton.addEventListener("click", () => hooks.onStop());
  for (const button of document.querySelectorAll("[data-suggestion]")) {
    button.addEventListener("click", () => {
      input.value = button.dataset.suggestion;
      autosize();
      updateComposer();
      input.focus();
    });
  }
}

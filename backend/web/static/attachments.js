// File attachments for the chat page: the composer's tray (attach button, drag and drop, paste, upload progress,
// removal, inline refusals) and the thumbnails/chips shown in sent messages. DOM-only rendering, no innerHTML.

import { el } from "./dom.js";

const ACCEPT = "image/png,image/jpeg,image/webp,image/gif,application/pdf,text/plain,text/markdown,text/csv,.md,.csv,.txt";

/** `532 B`, `12.3 KB`, `4.0 MB`. */
export function humanSize(size) {
  if (size < 1024) return `${size} B`;
  if (size < 1024 * 1024) return `${(size / 1024).toFixed(1)} KB`;
  return `${(size / (1024 * 1024)).toFixed(1)} MB`;
}

function isImage(type) {
  return /^image\/(png|jpeg|webp|gif)$/.test(type || "");
}

function authHeaders(getToken) {
  const token = getToken();
  return token ? { Authorization: `Bearer ${token}` } : {};
}

function errorMessage(status, text) {
  try {
    const body = JSON.parse(text);
    if (body && body.error && body.error.message) return body.error.message;
  } catch {
    // not our JSON error body
  }
  return status ? `The server answered ${status}.` : "Could not reach the server.";
}

/** Fetch a stored file with the bearer token and return an object URL for it (an <img src> cannot send headers). */
export async function fileObjectUrl(id, getToken) {
  const response = await fetch(`/api/files/${encodeURIComponent(id)}/content`, {
    headers: authHeaders(getToken),
    cache: "no-store",
  });
  if (!response.ok) throw new Error(errorMessage(response.status, await response.text()));
  return URL.createObjectURL(await response.blob());
}

async function openStored(file, getToken, download) {
  const url = await fileObjectUrl(file.id, getToken);
  const link = el("a", { attrs: { href: url, rel: "noopener" } });
  if (download) link.download = file.name;
  else link.target = "_blank";
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

/** The attachments of a sent message: image thumbnails and file chips that open or download the file. */
export function attachmentList(files, getToken) {
  const list = el("ul", { className: "msg-attachments", testid: "message-attachments" });
  for (const file of files) {
    const item = el("li", { className: "msg-attachment" });
    const button = el("button", {
      className: isImage(file.content_type) ? "attachment-thumb" : "attachment-chip",
      testid: "message-attachment",
      attrs: { type: "button", title: `${file.name} (${humanSize(file.size)})` },
    });
    button.dataset.id = file.id;
    if (isImage(file.content_type)) {
      const img = el("img", { attrs: { alt: file.name } });
      button.append(img);
      fileObjectUrl(file.id, getToken)
        .then((url) => {
          img.src = url;
        })
        .catch(() => button.classList.add("is-missing"));
    } else {
      button.append(el("span", { className: "attachment-name", text: file.name }));
      button.append(el("span", { className: "attachment-meta", text: humanSize(file.size) }));
    }
    button.addEventListener("click", () => {
      openStored(file, getToken, !isImage(file.content_type)).catch(() => button.classList.add("is-missing"));
    });
    item.append(button);
    list.append(item);
  }
  return list;
}

/** The composer's pending attachments. Call `files()` when sending, then `clear()`. */
export class AttachmentTray {
  constructor({ composer, box, input, getToken, onChange }) {
    this.getToken = getToken;
    this.onChange = onChange;
    this.items = [];
    this.tray = el("ul", { className: "attachment-tray", testid: "attachment-tray", attrs: { "aria-label": "Attachments" } });
    this.tray.hidden = true;
    this.picker = el("input", {
      className: "sr-only",
      testid: "attach-input",
      attrs: { type: "file", multiple: "", accept: ACCEPT, tabindex: "-1", "aria-hidden": "true" },
    });
    this.button = el("button", {
      className: "btn-icon btn-attach",
      testid: "attach-button",
      attrs: { type: "button", "aria-label": "Attach files", title: "Attach files (or drop or paste them)" },
    });
    this.button.append(el("span", { text: "+", attrs: { "aria-hidden": "true" } }));
    box.prepend(this.button, this.picker);
    composer.prepend(this.tray);

    this.button.addEventListener("click", () => this.picker.click());
    this.picker.addEventListener("change", () => {
      this.add(this.picker.files);
      this.picker.value = "";
    });
    composer.addEventListener("dragover", (event) => {
      if (!event.dataTransfer || ![...event.dataTransfer.types].includes("Files")) return;
      event.preventDefault();
      composer.classList.add("is-dragging");
    });
    composer.addEventListener("dragleave", () => composer.classList.remove("is-dragging"));
    composer.addEventListener("drop", (event) => {
      composer.classList.remove("is-dragging");
      if (!event.dataTransfer || !event.dataTransfer.files.length) return;
      event.preventDefault();
      this.add(event.dataTransfer.files);
    });
    input.addEventListener("paste", (event) => {
      const files = [...((event.clipboardData && event.clipboardData.files) || [])].filter((f) => isImage(f.type));
      if (!files.length) return;
      event.preventDefault();
      this.add(files.map((f, i) => (f.name && f.name !== "image.png" ? f : new File([f], `pasted-${i + 1}.${f.type.split("/")[1]}`, { type: f.type }))));
    });
  }

  /** True while any upload is still running. */
  uploading() {
    return this.items.some((item) => item.state === "uploading");
  }

  /** Metadata of the uploaded files, in the order they were added. */
  files() {
    return this.items.filter((item) => item.state === "ready").map((item) => item.meta);
  }

  /** Forget the tray's files without deleting them (they were sent). */
  clear() {
    for (const item of this.items) if (item.preview) URL.revokeObjectURL(item.preview);
    this.items = [];
    this.tray.replaceChildren();
    this.tray.hidden = true;
    this.onChange();
  }

  add(fileList) {
    for (const file of fileList) this.upload(file);
  }

  upload(file) {
    const item = { file, state: "uploading", meta: null, xhr: new XMLHttpRequest(), preview: null };
    item.node = this.chip(item);
    this.items.push(item);
    this.tray.append(item.node);
    this.tray.hidden = false;
    const xhr = item.xhr;
    xhr.open("POST", "/api/files");
    for (const [name, value] of Object.entries(authHeaders(this.getToken))) xhr.setRequestHeader(name, value);
    xhr.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) item.progress.value = event.loaded / event.total;
    });
    xhr.addEventListener("load", () => {
      if (xhr.status === 201) {
        item.meta = JSON.parse(xhr.responseText);
        this.setState(item, "ready", humanSize(item.meta.size));
      } else {
        this.setState(item, "error", `Not attached: ${errorMessage(xhr.status, xhr.responseText)}`);
      }
    });
    xhr.addEventListener("error", () => this.setState(item, "error", "Not attached: could not reach the server."));
    const form = new FormData();
    form.append("file", file, file.name);
    xhr.send(form);
    this.onChange();
  }

  chip(item) {
    const node = el("li", { className: "attachment-pending", testid: "attachment-pending" });
    node.dataset.state = "uploading";
    if (isImage(item.file.type)) {
      item.preview = URL.createObjectURL(item.file);
      node.append(el("img", { className: "attachment-preview", attrs: { src: item.preview, alt: "" } }));
    }
    const text = el("div", { className: "attachment-text" });
    text.append(el("span", { className: "attachment-name", text: item.file.name, testid: "attachment-name" }));
    item.status = el("span", { className: "attachment-meta", text: "Uploading…", testid: "attachment-status" });
    item.progress = el("progress", { attrs: { max: "1", value: "0", "aria-label": `Uploading ${item.file.name}` } });
    text.append(item.status, item.progress);
    const remove = el("button", {
      className: "btn-icon attachment-remove",
      testid: "attachment-remove",
      text: "×",
      attrs: { type: "button", "aria-label": `Remove ${item.file.name}` },
    });
    remove.addEventListener("click", () => this.remove(item));
    node.append(text, remove);
    return node;
  }

  setState(item, state, message) {
    item.state = state;
    item.node.dataset.state = state;
    item.status.textContent = message;
    item.progress.hidden = true;
    if (state === "error") item.status.setAttribute("role", "alert");
    this.onChange();
  }

  remove(item) {
    if (item.state === "uploading") item.xhr.abort();
    if (item.state === "ready") {
      fetch(`/api/files/${encodeURIComponent(item.meta.id)}`, { method: "DELETE", headers: authHeaders(this.getToken) }).catch(
        () => {}, // best effort: the server sweeps unattached uploads anyway
      );
    }
    if (item.preview) URL.revokeObjectURL(item.preview);
    this.items = this.items.filter((other) => other !== item);
    item.node.remove();
    this.tray.hidden = !this.items.length;
    this.onChange();
  }
}

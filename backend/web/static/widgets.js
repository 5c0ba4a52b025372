// Widgets: DOM-only rendering of the component tree defined in backend/chat/widgets.py.
//
// Every string reaches the DOM through textContent or a DOM property; nothing is ever assigned to innerHTML. Image
// sources are checked again here (https: URLs and base64 PNG/JPEG/GIF/WebP data URLs only): anything else is not
// rendered. Unknown component types are skipped, so the server may add new ones. Controls carry an action
// {type, payload}; clicking one calls onAction(action, {widgetId, control}). If onAction returns a promise, the
// widget is marked busy until it settles, and a checkbox goes back to its previous state if it rejects (the server
// answers a successful action with a replacement widget, applied with updateWidget).

const MAX_DEPTH = 16;
const DATA_IMAGE_RE = /^data:image\/(png|jpeg|gif|webp)(;[a-z0-9=.+-]+)*;base64,[A-Za-z0-9+/]+=*$/;
const TONES = new Set(["default", "secondary", "success", "warning", "danger"]);
const SIZES = new Set(["xs", "sm", "md", "lg", "xl"]);
const WEIGHTS = new Set(["normal", "medium", "semibold", "bold"]);
const GAPS = new Set(["none", "sm", "md", "lg"]);
const ALIGNS = new Set(["start", "center", "end", "stretch"]);
const BUTTON_STYLES = new Set(["primary", "secondary", "danger"]);
const handlers = new WeakMap(); // widget root node -> its onAction, so updateWidget can keep it

let headingCount = 0;

function el(tag, className) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  return node;
}

function pick(set, value, fallback) {
  return set.has(value) ? value : fallback;
}

function str(value) {
  return typeof value === "string" ? value : "";
}

/** Whether an image source may be rendered: an https: URL with a host, or a base64 PNG/JPEG/GIF/WebP data URL. */
export function isSafeImageSrc(src) {
  if (typeof src !== "string" || src.length > 65536 || /\s/.test(src)) return false;
  if (src.startsWith("data:")) return DATA_IMAGE_RE.test(src);
  if (!/^https:\/\/[^/?#\\]/i.test(src)) return false; // a host right after "//" ("https:///x" would borrow one)
  try {
    const url = new URL(src);
    return url.protocol === "https:" && Boolean(url.hostname);
  } catch {
    return false;
  }
}

function validAction(action) {
  return action && typeof action === "object" && typeof action.type === "string" && action.type.length > 0;
}

function busy(root, promise, undo) {
  if (!promise || typeof promise.then !== "function") return;
  root.setAttribute("aria-busy", "true");
  root.classList.add("is-busy");
  promise.then(
    () => {},
    () => undo?.(),
  ).finally(() => {
    root.removeAttribute("aria-busy");
    root.classList.remove("is-busy");
  });
}

function children(node, ctx, depth) {
  const out = [];
  for (const child of Array.isArray(node.children) ? node.children : []) {
    const rendered = render(child, ctx, depth + 1);
    if (rendered) out.push(rendered);
  }
  return out;
}

function container(node, ctx, depth, kind) {
  const box = el("div", `w-${kind} w-gap-${pick(GAPS, node.gap, "sm")}`);
  box.classList.add(`w-align-${pick(ALIGNS, node.align, kind === "row" ? "center" : "stretch")}`);
  box.append(...children(node, ctx, depth));
  return box;
}

const RENDERERS = {
  card(node, ctx, depth) {
    const card = el("section", "w-card");
    const title = str(node.title);
    if (title) {
      const heading = el("h3", "w-card-title");
      heading.id = `w-title-${++headingCount}`;
      heading.textContent = title;
      card.setAttribute("aria-labelledby", heading.id);
      card.append(heading);
    }
    const body = el("div", "w-card-body");
    body.append(...children(node, ctx, depth));
    card.append(body);
    return card;
  },
  row: (node, ctx, depth) => container(node, ctx, depth, "row"),
  column: (node, ctx, depth) => container(node, ctx, depth, "column"),
  text(node) {
    const text = el("p", "w-text");
    text.classList.add(
      `w-size-${pick(SIZES, node.size, "md")}`,
      `w-weight-${pick(WEIGHTS, node.weight, "normal")}`,
      `w-tone-${pick(TONES, node.tone, "default")}`,
    );
    text.textContent = str(node.value);
    return text;
  },
  badge(node) {
    const badge = el("span", `w-badge w-tone-${pick(TONES, node.tone, "default")}`);
    badge.textContent = str(node.label);
    return badge;
  },
  divider() {
    return el("hr", "w-divider");
  },
  image(node) {
    if (!isSafeImageSrc(node.src)) return null;
    const img = el("img", "w-image");
    img.alt = str(node.alt);
    img.src = node.src;
    img.loading = "lazy";
    img.decoding = "async";
    img.referrerPolicy = "no-referrer";
    if (Number.isInteger(node.width) && node.width > 0) img.width = node.width;
    if (Number.isInteger(node.height) && node.height > 0) img.height = node.height;
    return img;
  },
  list(node, ctx, depth) {
    const list = el("ul", "w-list");
    list.setAttribute("role", "list"); // list-style: none drops the implicit role in some screen readers
    const label = str(node.label);
    if (label) list.setAttribute("aria-label", label);
    for (const item of Array.isArray(node.children) ? node.children : []) {
      if (item && item.type === "list_item") {
        const rendered = render(item, ctx, depth + 1);
        if (rendered) list.append(rendered);
      }
    }
    return list;
  },
  list_item(node, ctx, depth) {
    const item = el("li", "w-list-item");
    item.append(...children(node, ctx, depth));
    return item;
  },
  button(node, ctx) {
    const button = el("button", `w-button w-button-${pick(BUTTON_STYLES, node.style, "secondary")}`);
    button.type = "button";
    button.textContent = str(node.label);
    button.disabled = Boolean(node.disabled) || !validAction(node.action);
    button.addEventListener("click", () => {
      if (button.disabled || ctx.root.getAttribute("aria-busy") === "true") return;
      busy(ctx.root, ctx.onAction?.(node.action, { widgetId: ctx.widgetId, control: button }));
    });
    return button;
  },
  checkbox(node, ctx) {
    const label = el("label", "w-checkbox");
    const input = el("input");
    input.type = "checkbox";
    input.checked = Boolean(node.checked);
    input.disabled = Boolean(node.disabled) || !validAction(node.action);
    const text = el("span", "w-checkbox-label");
    text.textContent = str(node.label);
    label.append(input, text); // the wrapping label names the checkbox
    input.addEventListener("change", () => {
      if (ctx.root.getAttribute("aria-busy") === "true") {
        input.checked = !input.checked;
        return;
      }
      const previous = !input.checked;
      busy(ctx.root, ctx.onAction?.(node.action, { widgetId: ctx.widgetId, control: input }), () => {
        input.checked = previous;
      });
    });
    return label;
  },
};

function render(node, ctx, depth) {
  if (!node || typeof node !== "object" || depth > MAX_DEPTH) return null;
  const renderer = Object.hasOwn(RENDERERS, node.type) ? RENDERERS[node.type] : null;
  if (!renderer) return null;
  const out = renderer(node, ctx, depth);
  if (out && typeof node.id === "string" && node.id) out.dataset.nodeId = node.id;
  return out;
}

/**
 * Render a widget (its root component) into a new DOM node.
 * @param {object} widget - The widget JSON: a component whose `id` names the widget.
 * @param {(action: {type: string, payload: object}, source: {widgetId: string, control: Element}) => unknown} onAction
 * @returns {HTMLElement} A `.widget` node with `data-widget-id` (empty, but present, when nothing could be rendered).
 */
export function renderWidget(widget, onAction) {
  const root = el("div", "widget");
  root.dataset.testid = "widget";
  const widgetId = widget && typeof widget.id === "string" ? widget.id : "";
  root.dataset.widgetId = widgetId;
  if (widget && typeof widget.type === "string") root.dataset.widgetType = widget.type;
  handlers.set(root, onAction);
  const ctx = { root, widgetId, onAction };
  const rendered = render(widget, ctx, 1);
  if (rendered) root.append(rendered);
  return root;
}

/**
 * Replace every rendered widget in `container` whose id is `widget.id` with a fresh rendering of `widget`.
 * @returns {HTMLElement[]} The new nodes (none when no widget with that id is shown).
 */
export function updateWidget(container, widget) {
  const id = widget && typeof widget.id === "string" ? widget.id : null;
  if (!id) return [];
  const replaced = [];
  for (const old of container.querySelectorAll(".widget[data-widget-id]")) {
    if (old.dataset.widgetId !== id) continue;
    const fresh = renderWidget(widget, handlers.get(old));
    old.replaceWith(fresh);
    replaced.push(fresh);
  }
  return replaced;
}

// Small DOM helpers shared by the page's modules (DOM-only rendering: text goes through textContent, never HTML).

/** Create an element with an optional class, text, data-testid and attributes. */
export function el(tag, { className, text, testid, attrs } = {}) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  if (testid) node.dataset.testid = testid;
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
  return node;
}

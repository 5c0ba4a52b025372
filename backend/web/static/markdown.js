// A small, safe Markdown renderer for chat replies.
//
// It builds DOM nodes with createElement and textContent only: no string of the input ever reaches innerHTML, so
// text such as <img src=x onerror=...> is shown literally. Links are kept only for http:, https: and mailto: URLs.
// Supported: paragraphs, line breaks, headings, fenced code, block quotes, (nested) lists, task lists ("- [x] done"
// as disabled checkboxes), tables, rules, and inline code, bold, italic, strikethrough, links and bare URLs.
// Unfinished constructs (an open code fence while the reply is still streaming) render sensibly.

const FENCE_RE = /^ {0,3}(`{3,}|~{3,})\s*([\w+#.-]*)/;
const HEADING_RE = /^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
const RULE_RE = /^ {0,3}([-*_])(?:\s*\1){2,}\s*$/;
const QUOTE_RE = /^ {0,3}> ?(.*)$/;
const LIST_RE = /^( *)([-*+]|\d{1,9}[.)])[ \t]+(.*)$/;
const TASK_RE = /^\[([ xX])\](?:[ \t]+|$)/;
const TABLE_SEP_RE = /^\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$/;
const ESCAPABLE = "\\`*_{}[]()#+-.!~|>";
const URL_RE = /^https?:\/\/[^\s<>"]*[^\s<>".,:;'!?)\]]/;

function el(tag, className) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  return node;
}

function indentOf(line) {
  return line.length - line.trimStart().length;
}

/** The URL if it is safe to link to (http, https, mailto), else null. */
export function safeUrl(raw) {
  try {
    const url = new URL(raw, window.location.href);
    return ["http:", "https:", "mailto:"].includes(url.protocol) ? url.href : null;
  } catch {
    return null;
  }
}

function link(text, href, parent) {
  const a = el("a");
  a.href = href;
  a.target = "_blank";
  a.rel = "noopener noreferrer nofollow";
  renderInline(text, a);
  parent.append(a);
}

/** Render inline Markdown from `text` into `parent` (text nodes and a few formatting elements). */
export function renderInline(text, parent) {
  let buffer = "";
  const flush = () => {
    if (buffer) parent.append(document.createTextNode(buffer));
    buffer = "";
  };
  let i = 0;
  while (i < text.length) {
    const ch = text[i];
    const prev = i > 0 ? text[i - 1] : " ";
    if (ch === "\\" && i + 1 < text.length && ESCAPABLE.includes(text[i + 1])) {
      buffer += text[i + 1];
      i += 2;
      continue;
    }
    if (ch === "`") {
      let run = 1;
      while (text[i + run] === "`") run++;
      const fence = "`".repeat(run);
      let close = text.indexOf(fence, i + run);
      while (close !== -1 && text[close + run] === "`") close = text.indexOf(fence, close + run + 1);
      if (close !== -1) {
        flush();
        const code = el("code");
        let inner = text.slice(i + run, close);
        if (inner.length > 2 && inner.startsWith(" ") && inner.endsWith(" ")) inner = inner.slice(1, -1);
        code.textContent = inner;
        parent.append(code);
        i = close + run;
        continue;
      }
      buffer += fence;
      i += run;
      continue;
    }
    const pair = text.slice(i, i + 2);
    if (pair === "**" || pair === "__" || pair === "~~") {
      const close = text.indexOf(pair, i + 2);
      const inner = close === -1 ? "" : text.slice(i + 2, close);
      const wordOk = pair !== "__" || !/\w/.test(prev);
      if (inner && inner.trim() === inner && wordOk) {
        flush();
        const node = el(pair === "~~" ? "del" : "strong");
        renderInline(inner, node);
        parent.append(node);
        i = close + 2;
        continue;
      }
    }
    if ((ch === "*" || ch === "_") && text[i + 1] !== ch && !(ch === "_" && /\w/.test(prev))) {
      let close = text.indexOf(ch, i + 1);
      while (close !== -1 && text[close + 1] === ch) close = text.indexOf(ch, close + 2);
      const inner = close === -1 ? "" : text.slice(i + 1, close);
      const after = close === -1 ? "" : text[close + 1] || " ";
      if (inner && inner.trim() === inner && !(ch === "_" && /\w/.test(after))) {
        flush();
        const em = el("em");
        renderInline(inner, em);
        parent.append(em);
        i = close + 1;
        continue;
      }
    }
    if (ch === "[") {
      const match = /^\[([^\]\n]+)\]\(\s*<?([^\s()<>]+)>?\s*\)/.exec(text.slice(i));
      const href = match && safeUrl(match[2]);
      if (match && href) {
        flush();
        link(match[1], href, parent);
        i += match[0].length;
        continue;
      }
    }
    if ((ch === "h" || ch === "H") && !/\w/.test(prev)) {
      const match = URL_RE.exec(text.slice(i));
      const href = match && safeUrl(match[0]);
      if (href) {
        flush();
        const a = el("a");
        a.href = href;
        a.target = "_blank";
        a.rel = "noopener noreferrer nofollow";
        a.textContent = match[0];
        parent.append(a);
        i += match[0].length;
        continue;
      }
    }
    buffer += ch;
    i++;
  }
  flush();
}

function paragraph(lines, parent) {
  const p = el("p");
  lines.forEach((line, index) => {
    if (index) p.append(el("br"));
    renderInline(line.trim(), p);
  });
  parent.append(p);
}

function startsBlock(line) {
  return (
    FENCE_RE.test(line) || HEADING_RE.test(line) || RULE_RE.test(line) || QUOTE_RE.test(line) || LIST_RE.test(line)
  );
}

function splitRow(line) {
  let row = line.trim();
  if (row.startsWith("|")) row = row.slice(1);
  if (row.endsWith("|") && !row.endsWith("\\|")) row = row.slice(0, -1);
  return row.split(/(?<!\\)\|/).map((cell) => cell.trim());
}

function table(lines, parent) {
  const align = splitRow(lines[1]).map((cell) =>
    cell.startsWith(":") && cell.endsWith(":") ? "center" : cell.endsWith(":") ? "right" : "",
  );
  const wrap = el("div", "md-table");
  const tbl = el("table");
  const row = (cells, tag) => {
    const tr = el("tr");
    cells.forEach((cell, index) => {
      const td = el(tag);
      if (align[index]) td.style.textAlign = align[index];
      renderInline(cell, td);
      tr.append(td);
    });
    return tr;
  };
  const thead = el("thead");
  thead.append(row(splitRow(lines[0]), "th"));
  const tbody = el("tbody");
  for (const line of lines.slice(2)) tbody.append(row(splitRow(line), "td"));
  tbl.append(thead, tbody);
  wrap.append(tbl);
  parent.append(wrap);
}

function list(lines, start, parent) {
  const first = LIST_RE.exec(lines[start]);
  const ordered = /\d/.test(first[2]);
  const base = first[1].length;
  const node = el(ordered ? "ol" : "ul");
  if (ordered && parseInt(first[2], 10) !== 1) node.start = parseInt(first[2], 10);
  const items = [];
  let contentIndent = base + first[2].length + 1;
  let i = start;
  while (i < lines.length) {
    const line = lines[i];
    const match = LIST_RE.exec(line);
    if (match && match[1].length <= base + 1 && /\d/.test(match[2]) === ordered) {
      items.push([match[3]]);
      contentIndent = match[1].length + match[2].length + 1;
      i++;
      continue;
    }
    if (!line.trim()) {
      const next = lines.slice(i + 1).find((l) => l.trim());
      const nextMatch = next === undefined ? null : LIST_RE.exec(next);
      const continues =
        next !== undefined &&
        (indentOf(next) > base || (nextMatch && nextMatch[1].length <= base + 1 && /\d/.test(nextMatch[2]) === ordered));
      if (!continues) break;
      items[items.length - 1].push("");
      i++;
      continue;
    }
    if (indentOf(line) > base) {
      items[items.length - 1].push(line.slice(Math.min(indentOf(line), contentIndent)));
      i++;
      continue;
    }
    if (!startsBlock(line) && items[items.length - 1].at(-1) !== "") {
      items[items.length - 1].push(line.trim()); // lazy continuation of the item's paragraph
      i++;
      continue;
    }
    break;
  }
  for (const itemLines of items) {
    const li = el("li");
    const task = TASK_RE.exec(itemLines[0]);
    if (task) itemLines[0] = itemLines[0].slice(task[0].length);
    renderBlocks(itemLines, li);
    const loose = li.firstElementChild && li.firstElementChild.tagName === "P";
    if (loose && !itemLines.includes("")) {
      li.firstElementChild.replaceWith(...li.firstElementChild.childNodes); // tight list: no <p> in items
    }
    if (task) {
      // A task list item ("- [x] done"): a read-only checkbox before its text.
      const box = el("input");
      box.type = "checkbox";
      box.disabled = true;
      box.checked = task[1] !== " ";
      li.classList.add("task-item");
      const first = li.firstElementChild;
      (first && first.tagName === "P" ? first : li).prepend(box);
    }
    node.append(li);
  }
  parent.append(node);
  return i;
}

function renderBlocks(lines, parent) {
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (!line.trim()) {
      i++;
      continue;
    }
    const fence = FENCE_RE.exec(line);
    if (fence) {
      const marker = fence[1];
      const body = [];
      i++;
      while (i < lines.length && !(lines[i].trim().startsWith(marker) && lines[i].trim().replace(/[`~]/g, "") === "")) {
        body.push(lines[i]);
        i++;
      }
      i++; // the closing fence (or the end of an unfinished block)
      const pre = el("pre", "md-code");
      const code = el("code");
      if (fence[2]) pre.dataset.lang = fence[2];
      code.textContent = body.join("\n");
      pre.append(code);
      parent.append(pre);
      continue;
    }
    const heading = HEADING_RE.exec(line);
    if (heading) {
      const h = el(`h${Math.min(6, heading[1].length + 2)}`, "md-heading");
      renderInline(heading[2], h);
      parent.append(h);
      i++;
      continue;
    }
    if (RULE_RE.test(line)) {
      parent.append(el("hr"));
      i++;
      continue;
    }
    if (QUOTE_RE.test(line)) {
      const body = [];
      while (i < lines.length && lines[i].trim() && QUOTE_RE.test(lines[i])) {
        body.push(QUOTE_RE.exec(lines[i])[1]);
        i++;
      }
      const quote = el("blockquote");
      renderBlocks(body, quote);
      parent.append(quote);
      continue;
    }
    if (LIST_RE.test(line)) {
      i = list(lines, i, parent);
      continue;
    }
    if (line.includes("|") && i + 1 < lines.length && TABLE_SEP_RE.test(lines[i + 1]) && lines[i + 1].includes("-")) {
      const rows = [line, lines[i + 1]];
      i += 2;
      while (i < lines.length && lines[i].trim() && lines[i].includes("|")) {
        rows.push(lines[i]);
        i++;
      }
      table(rows, parent);
      continue;
    }
    const body = [line];
    i++;
    while (i < lines.length && lines[i].trim() && !startsBlock(lines[i])) {
      if (lines[i].includes("|") && i + 1 < lines.length && TABLE_SEP_RE.test(lines[i + 1])) break;
      body.push(lines[i]);
      i++;
    }
    paragraph(body, parent);
  }
}

/** Render Markdown `text` into a new DocumentFragment. */
export function renderMarkdown(text) {
  const fragment = document.createDocumentFragment();
  renderBlocks(text.replace(/\r\n?/g, "\n").split("\n"), fragment);
  return fragment;
}

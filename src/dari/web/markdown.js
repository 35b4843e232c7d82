// A small Markdown renderer that is safe by construction: it never parses HTML. Every piece of
// model output ends up in a DOM text node (createTextNode), so "<script>", "<img onerror=…>"
// and the like are shown as the literal characters they are and cannot run. Links are made
// only for http(s) and mailto addresses; Markdown images become links (no remote loads).
//
// Supported: paragraphs (single newlines kept as line breaks), # headings, fenced and indented
// code, > quotes, - * + and 1. lists (nested by indentation), tables, --- rules, **bold**,
// *italic*, ~~strike~~, `code`, [links](https://…), <https://…> and bare URLs, \ escapes.
// Fenced code gets a header with its language and a copy button, and colours from highlight.js
// for the languages it knows.
// Unfinished input (an answer still streaming) renders sensibly: an open fence is code to the end.

import { copyFromButton } from './copy.js';
import { highlight } from './highlight.js';
import { t } from './i18n.js';

const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([^`\s]*)?.*$/;
const HEADING = /^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
const RULE = /^ {0,3}([-*_])(?:\s*\1){2,}\s*$/;
const QUOTE = /^ {0,3}>\s?/;
const LIST_ITEM = /^( *)([-*+]|\d{1,9}[.)])\s+(.*)$/;
const TABLE_SEPARATOR = /^\s*\|?\s*:?-{1,}:?\s*(\|\s*:?-{1,}:?\s*)*\|?\s*$/;
const SAFE_PROTOCOLS = new Set(['http:', 'https:', 'mailto:']);

function el(tag, className, children = []) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  for (const child of children) node.append(child);
  return node;
}

/** Render Markdown `source` into a DocumentFragment of inert nodes. */
export function renderMarkdown(source) {
  const fragment = document.createDocumentFragment();
  const text = String(source ?? '').replace(/\r\n?/g, '\n');
  for (const block of renderBlocks(text.split('\n'))) fragment.append(block);
  return fragment;
}

function renderBlocks(lines) {
  const out = [];
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (!line.trim()) {
      i += 1;
      continue;
    }
    let match;
    if ((match = line.match(FENCE))) {
      const [, fence, language] = match;
      const body = [];
      i += 1;
      while (i < lines.length && !isClosingFence(lines[i], fence)) body.push(lines[i++]);
      i += 1; // the closing fence (or past the end)
      out.push(codeBlock(body.join('\n'), language));
    } else if ((match = line.match(HEADING))) {
      out.push(el(`h${Math.min(6, match[1].length + 2)}`, 'md-h', renderInline(match[2])));
      i += 1;
    } else if (RULE.test(line)) {
      out.push(el('hr'));
      i += 1;
    } else if (QUOTE.test(line)) {
      const body = [];
      while (i < lines.length && lines[i].trim() && QUOTE.test(lines[i])) body.push(lines[i++].replace(QUOTE, ''));
      out.push(el('blockquote', null, renderBlocks(body)));
    } else if (LIST_ITEM.test(line)) {
      i = readList(lines, i, out);
    } else if (line.includes('|') && i + 1 < lines.length && TABLE_SEPARATOR.test(lines[i + 1]) && lines[i + 1].includes('-')) {
      i = readTable(lines, i, out);
    } else if (/^( {4}|\t)/.test(line)) {
      const body = [];
      while (i < lines.length && (/^( {4}|\t)/.test(lines[i]) || !lines[i].trim())) body.push(lines[i++].replace(/^( {4}|\t)/, ''));
      out.push(codeBlock(body.join('\n').replace(/\n+$/, ''), ''));
    } else {
      const body = [];
      while (i < lines.length && lines[i].trim() && !startsBlock(lines, i)) body.push(lines[i++].trim());
      if (body.length === 0) body.push(lines[i++].trim()); // guard against a stuck loop
      out.push(el('p', null, renderLines(body)));
    }
  }
  return out;
}

function startsBlock(lines, i) {
  const line = lines[i];
  return (
    FENCE.test(line) ||
    HEADING.test(line) ||
    RULE.test(line) ||
    QUOTE.test(line) ||
    LIST_ITEM.test(line) ||
    (line.includes('|') && i + 1 < lines.length && TABLE_SEPARATOR.test(lines[i + 1]) && lines[i + 1].includes('-'))
  );
}

function isClosingFence(line, fence) {
  const trimmed = line.trim();
  return trimmed.startsWith(fence) && trimmed.replace(new RegExp(`^\\${fence[0]}+`), '') === '';
}

function codeBlock(code, language) {
  const pre = el('pre', 'md-code');
  const known = language && /^[\w+-]{1,32}$/.test(language) ? language : '';
  const coloured = known ? highlight(code, known) : null;
  const codeEl = el('code', null, [coloured ?? document.createTextNode(code)]);
  if (known) {
    codeEl.dataset.lang = known;
    pre.dataset.lang = known;
  }
  if (coloured) codeEl.classList.add('highlighted');
  pre.append(codeEl);
  // A header with the language and a copy button; the code itself stays the <pre>.
  const copy = el('button', 'code-copy', [el('span', 'copy-label', [document.createTextNode(t('code.copy'))])]);
  copy.type = 'button';
  copy.setAttribute('aria-label', known ? t('code.copyLang', { lang: known }) : t('code.copy'));
  copy.addEventListener('click', () => copyFromButton(copy, code, { label: t('code.copy'), doneLabel: t('code.copied'), failedLabel: t('code.copyFailed') }));
  const head = el('div', 'code-head', [el('span', 'code-lang', [document.createTextNode(known)]), copy]);
  return el('div', 'md-codeblock', [head, pre]);
}

function readList(lines, start, out) {
  const first = lines[start].match(LIST_ITEM);
  const indent = first[1].length;
  const ordered = /\d/.test(first[2]);
  const list = el(ordered ? 'ol' : 'ul');
  if (ordered) {
    const number = parseInt(first[2], 10);
    if (number !== 1) list.start = number;
  }
  let i = start;
  while (i < lines.length) {
    const match = lines[i].match(LIST_ITEM);
    if (!match || match[1].length !== indent || /\d/.test(match[2]) !== ordered) break;
    const body = [match[3]];
    i += 1;
    // Continuation: indented lines (nested lists, wrapped text) and blank lines inside the item.
    while (i < lines.length) {
      const next = lines[i];
      if (!next.trim()) {
        const following = lines.slice(i + 1).find((l) => l.trim());
        if (following !== undefined && leadingSpaces(following) > indent) {
          body.push('');
          i += 1;
          continue;
        }
        break;
      }
      if (leadingSpaces(next) > indent) {
        body.push(next.slice(Math.min(leadingSpaces(next), indent + 2)));
        i += 1;
      } else if (!LIST_ITEM.test(next) && !startsBlock(lines, i) && body[body.length - 1] !== '') {
        body.push(next.trim()); // lazy continuation of the item's paragraph
        i += 1;
      } else {
        break;
      }
    }
    const item = el('li');
    const blocks = renderBlocks(body);
    // A tight item (no blank line inside) keeps its text inline so lists look compact.
    if (blocks[0]?.tagName === 'P' && !body.includes('')) item.append(...blocks.shift().childNodes);
    item.append(...blocks);
    list.append(item);
    // Blank lines between items of the same list.
    let j = i;
    while (j < lines.length && !lines[j].trim()) j += 1;
    const again = j < lines.length && lines[j].match(LIST_ITEM);
    if (j > i && again && again[1].length === indent && /\d/.test(again[2]) === ordered) i = j;
  }
  out.push(list);
  return i;
}

function leadingSpaces(line) {
  return line.match(/^ */)[0].length;
}

function splitRow(line) {
  let row = line.trim();
  if (row.startsWith('|')) row = row.slice(1);
  if (row.endsWith('|') && !row.endsWith('\\|')) row = row.slice(0, -1);
  return row.split(/(?<!\\)\|/).map((cell) => cell.trim().replace(/\\\|/g, '|'));
}

function readTable(lines, start, out) {
  const header = splitRow(lines[start]);
  const aligns = splitRow(lines[start + 1]).map((spec) =>
    spec.startsWith(':') && spec.endsWith(':') ? 'center' : spec.endsWith(':') ? 'right' : spec.startsWith(':') ? 'left' : '',
  );
  const cell = (tag, content, column) => {
    const node = el(tag, null, renderInline(content));
    if (aligns[column]) node.style.textAlign = aligns[column];
    return node;
  };
  const table = el('table');
  table.append(el('thead', null, [el('tr', null, header.map((c, k) => cell('th', c, k)))]));
  const body = el('tbody');
  let i = start + 2;
  while (i < lines.length && lines[i].trim() && lines[i].includes('|')) {
    const cells = splitRow(lines[i]);
    body.append(el('tr', null, header.map((_, k) => cell('td', cells[k] ?? '', k))));
    i += 1;
  }
  table.append(body);
  out.push(el('div', 'md-table', [table]));
  return i;
}

function renderLines(lines) {
  const nodes = [];
  lines.forEach((line, index) => {
    if (index > 0) nodes.push(el('br'));
    nodes.push(...renderInline(line));
  });
  return nodes;
}

// --- inline -----------------------------------------------------------------------------------

const EMPHASIS = [
  { marker: '**', tag: 'strong' },
  { marker: '__', tag: 'strong', wordBound: true },
  { marker: '~~', tag: 'del' },
  { marker: '*', tag: 'em' },
  { marker: '_', tag: 'em', wordBound: true },
];
const BARE_URL = /^(https?:\/\/[^\s<>"'`]+)/;
const ESCAPABLE = /[\\`*_{}[\]()#+\-.!|~<>"']/;

/** Inline Markdown to an array of nodes; text only ever becomes text nodes. */
export function renderInline(text) {
  const nodes = [];
  let buffer = '';
  const flush = () => {
    if (buffer) nodes.push(document.createTextNode(buffer));
    buffer = '';
  };
  let i = 0;
  while (i < text.length) {
    const ch = text[i];
    const rest = text.slice(i);

    if (ch === '\\' && i + 1 < text.length && ESCAPABLE.test(text[i + 1])) {
      buffer += text[i + 1];
      i += 2;
      continue;
    }
    if (ch === '`') {
      const ticks = rest.match(/^`+/)[0];
      const end = text.indexOf(ticks, i + ticks.length);
      if (end > i) {
        flush();
        nodes.push(el('code', null, [document.createTextNode(text.slice(i + ticks.length, end).replace(/^ (.+) $/, '$1'))]));
        i = end + ticks.length;
        continue;
      }
      buffer += ticks;
      i += ticks.length;
      continue;
    }
    if (ch === '[' || (ch === '!' && text[i + 1] === '[')) {
      const link = parseLink(text, ch === '!' ? i + 1 : i);
      if (link) {
        flush();
        nodes.push(ch === '!' ? imageAsLink(link) : anchor(link.href, renderInline(link.label)));
        i = link.end;
        continue;
      }
    }
    if (ch === '<') {
      const auto = rest.match(/^<((?:https?:\/\/|mailto:)[^\s<>]+)>/);
      if (auto) {
        flush();
        nodes.push(anchor(auto[1], [document.createTextNode(auto[1].replace(/^mailto:/, ''))]));
        i += auto[0].length;
        continue;
      }
    }
    if ((ch === 'h' || ch === 'H') && (i === 0 || /[\s(]/.test(text[i - 1]))) {
      const url = rest.match(BARE_URL);
      if (url) {
        const href = url[1].replace(/[.,;:!?)\]]+$/, '');
        flush();
        nodes.push(anchor(href, [document.createTextNode(href)]));
        i += href.length;
        continue;
      }
    }
    const emphasis = matchEmphasis(text, i);
    if (emphasis) {
      flush();
      nodes.push(el(emphasis.tag, null, renderInline(emphasis.inner)));
      i = emphasis.end;
      continue;
    }
    buffer += ch;
    i += 1;
  }
  flush();
  return nodes;
}

function matchEmphasis(text, i) {
  for (const { marker, tag, wordBound } of EMPHASIS) {
    if (!text.startsWith(marker, i)) continue;
    if (wordBound && i > 0 && /[\p{L}\p{N}]/u.test(text[i - 1])) continue;
    const start = i + marker.length;
    if (start >= text.length || /\s/.test(text[start])) continue;
    let end = text.indexOf(marker, start);
    while (end !== -1) {
      const before = text[end - 1];
      const after = text[end + marker.length];
      const closes = end > start && !/\s/.test(before) && !(wordBound && after && /[\p{L}\p{N}]/u.test(after));
      // A single * must not close on the first half of a ** pair.
      const single = marker.length === 1 && text[end + 1] === marker && text[end - 1] !== marker;
      if (closes && !single) return { tag, inner: text.slice(start, end), end: end + marker.length };
      end = text.indexOf(marker, end + 1);
    }
  }
  return null;
}

function parseLink(text, open) {
  // [label](href "title") with balanced brackets in the label.
  let depth = 0;
  let close = -1;
  for (let k = open; k < text.length; k += 1) {
    if (text[k] === '\\') {
      k += 1;
      continue;
    }
    if (text[k] === '[') depth += 1;
    else if (text[k] === ']' && --depth === 0) {
      close = k;
      break;
    }
  }
  if (close === -1 || text[close + 1] !== '(') return null;
  const target = text.slice(close + 2).match(/^\s*<?([^\s<>()]*(?:\([^\s()]*\)[^\s<>()]*)*)>?(?:\s+"[^"]*")?\s*\)/);
  if (!target) return null;
  return { label: text.slice(open + 1, close), href: target[1], end: close + 2 + target[0].length };
}

/** A usable, safe URL, or null: only http(s) and mailto, never javascript:, data: and friends. */
export function safeUrl(href) {
  try {
    const url = new URL(href, globalThis.location?.href ?? 'http://localhost/');
    return SAFE_PROTOCOLS.has(url.protocol) && /^(https?:|mailto:)/i.test(href.trim()) ? url.href : null;
  } catch {
    return null;
  }
}

function anchor(href, children) {
  const url = safeUrl(href);
  if (!url) return el('span', null, children);
  const a = el('a', null, children);
  a.href = url;
  a.target = '_blank';
  a.rel = 'noopener noreferrer nofollow';
  return a;
}

function imageAsLink(link) {
  const label = link.label || link.href;
  const a = anchor(link.href, [document.createTextNode(`🖼 ${label}`)]);
  a.classList?.add('md-image-link');
  return a;
}

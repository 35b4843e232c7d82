// Syntax colours for code blocks, for the languages answers use most. A small scanner per
// language family marks comments, strings, numbers, keywords and literals; everything else
// stays plain. Like markdown.js it only ever makes text nodes and <span class="tok-…">, so
// model output cannot become markup. Languages it does not know are left uncoloured rather
// than coloured wrongly.

const words = (text) => new Set(text.split(/\s+/).filter(Boolean));

const C_LIKE = {
  lineComments: ['//'],
  blockComments: [['/*', '*/']],
  strings: ['"', "'"],
  literals: words('true false null'),
};

const LANGUAGES = {
  python: {
    lineComments: ['#'],
    strings: ['"', "'"],
    triple: true,
    prefixes: /^[rRbBuUfF]{1,2}(?=['"])/,
    keywords: words(
      'and as assert async await break class continue def del elif else except finally for from global if import in is lambda match case nonlocal not or pass raise return try while with yield',
    ),
    literals: words('True False None self'),
  },
  javascript: {
    ...C_LIKE,
    strings: ['"', "'", '`'],
    keywords: words(
      'async await break case catch class const continue debugger default delete do else export extends finally for from function if import in instanceof let new of return static super switch this throw try typeof var void while with yield interface type enum implements private public protected readonly as',
    ),
    literals: words('true false null undefined NaN Infinity'),
  },
  json: { strings: ['"'], literals: words('true false null') },
  bash: {
    lineComments: ['#'],
    commentAfterSpace: true,
    strings: ['"', "'"],
    keywords: words('if then else elif fi for while until do done case esac in function return local export set unset shift exit source'),
    literals: words('true false'),
  },
  go: {
    ...C_LIKE,
    strings: ['"', "'", '`'],
    keywords: words(
      'break case chan const continue default defer else fallthrough for func go goto if import interface map package range return select struct switch type var',
    ),
    literals: words('true false nil iota'),
  },
  rust: {
    ...C_LIKE,
    strings: ['"'],
    keywords: words(
      'as async await break const continue crate dyn else enum extern fn for if impl in let loop match mod move mut pub ref return self Self static struct super trait type unsafe use where while',
    ),
    literals: words('true false None Some Ok Err'),
  },
  java: {
    ...C_LIKE,
    keywords: words(
      'abstract assert break case catch class const continue default do else enum extends final finally for if implements import instanceof interface native new package private protected public return static super switch synchronized this throw throws try void volatile while var record',
    ),
  },
  c: {
    ...C_LIKE,
    keywords: words(
      'auto break case char const continue default do double else enum extern float for goto if inline int long register return short signed sizeof static struct switch typedef union unsigned void volatile while bool class namespace template typename public private protected virtual override new delete using nullptr this throw try catch include define',
    ),
    literals: words('true false NULL nullptr'),
  },
  sql: {
    lineComments: ['--'],
    blockComments: [['/*', '*/']],
    strings: ["'"],
    caseInsensitive: true,
    keywords: words(
      'select from where and or not insert into values update set delete create table drop alter add index primary key foreign references join left right inner outer full on group by order asc desc having limit offset as distinct union all case when then else end is in like between exists returning with default',
    ),
    literals: words('true false null'),
  },
  yaml: { lineComments: ['#'], commentAfterSpace: true, strings: ['"', "'"], literals: words('true false null yes no on off') },
};

const ALIASES = {
  py: 'python',
  python3: 'python',
  js: 'javascript',
  jsx: 'javascript',
  mjs: 'javascript',
  ts: 'javascript',
  tsx: 'javascript',
  typescript: 'javascript',
  sh: 'bash',
  shell: 'bash',
  zsh: 'bash',
  console: 'bash',
  golang: 'go',
  rs: 'rust',
  kotlin: 'java',
  kt: 'java',
  csharp: 'java',
  cs: 'java',
  cpp: 'c',
  'c++': 'c',
  h: 'c',
  hpp: 'c',
  yml: 'yaml',
  jsonc: 'json',
};

export function languageOf(name) {
  const key = String(name ?? '').toLowerCase();
  return LANGUAGES[key] ? key : ALIASES[key] ?? null;
}

const NUMBER = /^(?:0[xX][\da-fA-F_]+|0[bB][01_]+|(?:\d[\d_]*)?\.?\d[\d_]*(?:[eE][+-]?\d+)?)[a-zA-Z]*/;
const WORD = /^[A-Za-z_$][\w$]*/;

/** `code` as a fragment of text and token spans, or null for a language we do not colour. */
export function highlight(code, language) {
  const name = languageOf(language);
  if (!name) return null;
  const spec = LANGUAGES[name];
  const fragment = document.createDocumentFragment();
  let plain = '';
  const flush = () => {
    if (plain) fragment.append(document.createTextNode(plain));
    plain = '';
  };
  const token = (kind, text) => {
    flush();
    const span = document.createElement('span');
    span.className = `tok-${kind}`;
    span.textContent = text;
    fragment.append(span);
  };

  let i = 0;
  while (i < code.length) {
    const rest = code.slice(i);
    const previous = code[i - 1] ?? '\n';

    const line = (spec.lineComments ?? []).find((mark) => rest.startsWith(mark));
    if (line && (!spec.commentAfterSpace || /\s/.test(previous))) {
      const end = code.indexOf('\n', i);
      const stop = end === -1 ? code.length : end;
      token('com', code.slice(i, stop));
      i = stop;
      continue;
    }
    const block = (spec.blockComments ?? []).find(([open]) => rest.startsWith(open));
    if (block) {
      const end = code.indexOf(block[1], i + block[0].length);
      const stop = end === -1 ? code.length : end + block[1].length;
      token('com', code.slice(i, stop));
      i = stop;
      continue;
    }
    const prefix = spec.prefixes && !/[\w$]/.test(previous) ? rest.match(spec.prefixes)?.[0] ?? '' : '';
    const quote = (spec.strings ?? []).find((q) => rest.startsWith(q, prefix.length));
    if (quote) {
      const stop = stringEnd(code, i + prefix.length, quote, spec.triple);
      token('str', code.slice(i, stop));
      i = stop;
      continue;
    }
    if (/\d/.test(code[i]) || (code[i] === '.' && /\d/.test(code[i + 1] ?? ''))) {
      if (!/[\w$]/.test(previous)) {
        const number = rest.match(NUMBER)?.[0];
        if (number) {
          token('num', number);
          i += number.length;
          continue;
        }
      }
    }
    const word = rest.match(WORD)?.[0];
    if (word && !/[\w$]/.test(previous)) {
      const key = spec.caseInsensitive ? word.toLowerCase() : word;
      if (spec.keywords?.has(key)) token('kw', word);
      else if (spec.literals?.has(key)) token('lit', word);
      else plain += word;
      i += word.length;
      continue;
    }
    plain += code[i];
    i += 1;
  }
  flush();
  return fragment;
}

/** Where a string that opens at `start` with `quote` ends (past its closing quote). */
function stringEnd(code, start, quote, triple) {
  const delimiter = triple && code.startsWith(quote.repeat(3), start) ? quote.repeat(3) : quote;
  let i = start + delimiter.length;
  while (i < code.length) {
    if (code[i] === '\\') {
      i += 2;
      continue;
    }
    if (code.startsWith(delimiter, i)) return i + delimiter.length;
    // A one-line string ends at the line's end (unclosed, or a shell word like don't).
    if (delimiter.length === 1 && quote !== '`' && code[i] === '\n') return i;
    i += 1;
  }
  return code.length;
}

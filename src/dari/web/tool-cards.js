// Tool calls of an answer as collapsible cards: the tool's name and state in the summary, its
// arguments (as the model writes them) and its result or error inside. Each `tool` frame holds
// the call's whole state so far, so the newest frame of a call replaces what we had.

import { h, icon } from './dom.js';
import { lang } from './i18n.js';

const TEXT = {
  en: {
    started: 'calling…',
    arguments: 'writing arguments…',
    finished: 'done',
    failed: 'failed',
    args: 'Arguments',
    result: 'Result',
    error: 'Error',
    label: 'Tool call {name}',
  },
  ko: {
    started: '호출 중…',
    arguments: '인자 작성 중…',
    finished: '완료',
    failed: '실패',
    args: '인자',
    result: '결과',
    error: '오류',
    label: '도구 호출 {name}',
  },
};
const tx = (key, vars = {}) => (TEXT[lang] ?? TEXT.en)[key].replace(/\{(\w+)\}/g, (_, k) => String(vars[k] ?? ''));

/** A call's state as saved and snapshotted: the frame's fields but the answer's own. */
function stateOf(frame) {
  const { tool_call_id, name, state, arguments: args, result, error } = frame;
  const out = { tool_call_id, name, state, arguments: typeof args === 'string' ? args : '' };
  if (state === 'finished') out.result = result ?? null;
  if (state === 'failed') out.error = error ?? '';
  return out;
}

/** Tool calls from history or a snapshot. */
export function toolsFrom(list) {
  return Array.isArray(list) ? list.filter((t) => t && t.tool_call_id).map(stateOf) : [];
}

/** Apply one `tool` frame to an answer's calls (in the order the calls began). */
export function applyTool(tools, frame) {
  const next = stateOf(frame);
  const index = tools.findIndex((t) => t.tool_call_id === next.tool_call_id);
  if (index >= 0) tools[index] = next;
  else tools.push(next);
}

function pretty(value) {
  if (typeof value !== 'string') return JSON.stringify(value, null, 2) ?? '';
  try {
    return JSON.stringify(JSON.parse(value), null, 2);
  } catch {
    return value; // still being written, or not JSON
  }
}

/** Draw `tools` into `container`, reusing each call's card so an opened one stays open. */
export function renderToolCards(container, tools) {
  container.hidden = tools.length === 0;
  const cards = new Map([...container.children].map((card) => [card.dataset.call, card]));
  const ordered = tools.map((call) => {
    let card = cards.get(call.tool_call_id);
    if (!card) {
      card = h('details', { className: 'tool-card', dataset: { call: call.tool_call_id } }, [
        h('summary', {}, [
          h('span', { className: 'tool-icon', 'aria-hidden': 'true', text: '⚙' }),
          h('span', { className: 'tool-name' }),
          h('span', { className: 'tool-state' }),
        ]),
        h('div', { className: 'tool-body' }),
      ]);
    }
    card.dataset.state = call.state;
    card.setAttribute('aria-label', tx('label', { name: call.name }));
    card.querySelector('.tool-name').textContent = call.name;
    const state = card.querySelector('.tool-state');
    state.replaceChildren(call.state === 'finished' ? icon('check') : call.state === 'failed' ? icon('warn') : '', tx(call.state));
    const body = card.querySelector('.tool-body');
    const parts = [h('div', { className: 'tool-label', text: tx('args') }), h('pre', { className: 'tool-args', text: pretty(call.arguments) })];
    if (call.state === 'finished') {
      parts.push(h('div', { className: 'tool-label', text: tx('result') }), h('pre', { className: 'tool-result', text: pretty(call.result) }));
    } else if (call.state === 'failed') {
      parts.push(h('div', { className: 'tool-label', text: tx('error') }), h('pre', { className: 'tool-error', text: call.error ?? '' }));
    }
    body.replaceChildren(...parts);
    return card;
  });
  if (ordered.some((card, i) => container.children[i] !== card) || container.children.length !== ordered.length) {
    container.replaceChildren(...ordered);
  }
}

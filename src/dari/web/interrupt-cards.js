// An agent's questions (interrupts) as approval cards: the question, a button per choice (or a
// text box), and once settled what was answered. A question is answered once: a `resume` that
// comes too late (another tab answered first) gets an error, shown on the card.

import { h, icon } from './dom.js';
import { lang } from './i18n.js';

const TEXT = {
  en: {
    title: 'The agent asks',
    send: 'Send',
    placeholder: 'Your answer',
    answered: 'Answered: {value}',
    cancelled: 'Cancelled',
    expired: 'Expired without an answer',
    already: 'Already answered',
    sending: 'Sending…',
  },
  ko: {
    title: '에이전트의 질문',
    send: '보내기',
    placeholder: '답변',
    answered: '답변함: {value}',
    cancelled: '취소됨',
    expired: '답변 없이 만료됨',
    already: '이미 답변되었습니다',
    sending: '보내는 중…',
  },
};
const tx = (key, vars = {}) => (TEXT[lang] ?? TEXT.en)[key].replace(/\{(\w+)\}/g, (_, k) => String(vars[k] ?? ''));

// Refusals of this page's answers, by interrupt id (kept across re-renders of the card).
const refusals = new Map();

function stateOf(frame) {
  const { interrupt_id, payload, expires_at, state, value } = frame;
  const out = { interrupt_id, payload: payload ?? {}, expires_at: expires_at ?? null, state: state ?? 'pending' };
  if (out.state === 'answered') out.value = value ?? null;
  return out;
}

export function interruptsFrom(list) {
  return Array.isArray(list) ? list.filter((q) => q && q.interrupt_id).map(stateOf) : [];
}

/** Apply one `interrupt` frame to an answer's questions. */
export function applyInterrupt(questions, frame) {
  const next = stateOf(frame);
  const index = questions.findIndex((q) => q.interrupt_id === next.interrupt_id);
  if (index >= 0) questions[index] = next;
  else questions.push(next);
}

/** A `resume` of ours was refused (e.g. already_answered): say so on its card. */
export function noteRefusal(root, frame, text) {
  const id = frame.interrupt_id;
  refusals.set(id, frame.code === 'already_answered' ? tx('already') : text);
  for (const card of root.querySelectorAll('.interrupt-card')) {
    if (card.dataset.interrupt === id) showRefusal(card);
  }
}

function showRefusal(card) {
  const note = card.querySelector('.interrupt-refusal');
  const text = refusals.get(card.dataset.interrupt);
  note.hidden = !text;
  if (text) note.replaceChildren(icon('warn'), text);
}

const shown = (value) => (typeof value === 'string' ? value : JSON.stringify(value));

/** Draw `questions` into `container`; `onAnswer(interruptId, value)` sends a `resume`. */
export function renderInterruptCards(container, questions, onAnswer) {
  container.hidden = questions.length === 0;
  const cards = new Map([...container.children].map((card) => [card.dataset.interrupt, card]));
  const ordered = questions.map((q) => {
    let card = cards.get(q.interrupt_id);
    if (!card) {
      card = h('section', { className: 'interrupt-card', dataset: { interrupt: q.interrupt_id }, role: 'group' }, [
        h('header', { className: 'interrupt-title', text: tx('title') }),
        h('p', { className: 'interrupt-question' }),
        h('div', { className: 'interrupt-actions' }),
        h('p', { className: 'interrupt-outcome', hidden: true }),
        h('p', { className: 'interrupt-refusal', role: 'alert', hidden: true }),
      ]);
    }
    const drawn = card.dataset.state;
    card.dataset.state = q.state;
    card.setAttribute('aria-label', tx('title'));
    card.querySelector('.interrupt-question').textContent = q.payload.question ?? '';
    const actions = card.querySelector('.interrupt-actions');
    const outcome = card.querySelector('.interrupt-outcome');
    if (q.state === 'pending') {
      if (drawn !== 'pending') actions.replaceChildren(...controls(q, onAnswer, card));
      actions.hidden = false;
      outcome.hidden = true;
    } else {
      actions.hidden = true;
      actions.replaceChildren();
      outcome.hidden = false;
      outcome.textContent = q.state === 'answered' ? tx('answered', { value: shown(q.value) }) : tx(q.state);
    }
    showRefusal(card);
    return card;
  });
  if (ordered.some((card, i) => container.children[i] !== card) || container.children.length !== ordered.length) {
    container.replaceChildren(...ordered);
  }
}

function controls(q, onAnswer, card) {
  const answer = (value) => {
    for (const control of card.querySelectorAll('.interrupt-actions button, .interrupt-actions input')) control.disabled = true;
    card.querySelector('.interrupt-outcome').hidden = false;
    card.querySelector('.interrupt-outcome').textContent = tx('sending');
    onAnswer?.(q.interrupt_id, value);
  };
  const choices = Array.isArray(q.payload.choices) ? q.payload.choices : null;
  if (choices?.length) {
    return choices.map((choice) =>
      h('button', { type: 'button', className: 'interrupt-choice', onclick: () => answer(choice) }, [shown(choice)]),
    );
  }
  const input = h('input', { type: 'text', className: 'interrupt-input', placeholder: tx('placeholder'), 'aria-label': tx('placeholder') });
  const form = h('form', { className: 'interrupt-form' }, [input, h('button', { type: 'submit', className: 'interrupt-send', text: tx('send') })]);
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    answer(input.value);
  });
  return [form];
}

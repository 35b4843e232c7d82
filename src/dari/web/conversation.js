// The open conversation as data: its messages in order, kept up to date from live frames and
// from history. It knows nothing about the DOM; the view listens to its events:
//   'reset'        everything changed (history loaded): render all messages again
//   'update'       { message } one message was added or changed
//   'need-history' { reason } live frames alone cannot give the exact text; reload history
//
// Merging rules, so that no text is lost or doubled:
//   - a finished answer in history (complete, cancelled, failed) is the saved text and wins;
//   - an answer still streaming keeps the live text when this page has it (start or snapshot
//     seen), because live frames are newer than any saved checkpoint;
//   - pieces for an answer whose beginning this page never saw are shown, but marked
//     approximate, and history is reloaded when the answer ends.

import { applyInterrupt, interruptsFrom } from './interrupt-cards.js';
import { applyTool, toolsFrom } from './tool-cards.js';

const TERMINAL = new Set(['complete', 'cancelled', 'failed']);
const FINISH_STATUS = { stop: 'complete', cancelled: 'cancelled', error: 'failed' };

export function conversationKey({ projectId, agentName, threadId }) {
  return `${projectId}\u0000${agentName}\u0000${threadId}`;
}

export function frameConversationKey(frame) {
  return conversationKey({ projectId: frame.project_id, agentName: frame.agent_name, threadId: frame.thread_id ?? 'main' });
}

function toMillis(value) {
  if (typeof value === 'number') return value < 1e12 ? value * 1000 : value;
  // Times without a zone are UTC on the server; Date.parse would read them as local time.
  const text = typeof value === 'string' && /T[\d:.]+$/.test(value) ? `${value}Z` : value;
  const parsed = Date.parse(text ?? '');
  return Number.isNaN(parsed) ? Date.now() : parsed;
}

/** Add one step event to `steps`: "started" opens a step, "finished" closes the open one. */
function applyStep(steps, event) {
  const step = typeof event === 'string' ? { content: event, name: '', state: 'finished' } : event ?? {};
  const content = step.content ?? step.name ?? '';
  const name = step.name ?? '';
  if (step.state === 'finished') {
    const open = [...steps].reverse().find((s) => s.state !== 'finished' && s.name === name);
    if (open) {
      open.state = 'finished';
      if (content) open.content = content; // "정리 완료" says more than "생각 중..." afterwards
      return;
    }
  }
  steps.push({ content, name, state: step.state === 'finished' ? 'finished' : 'started' });
}

/** Steps as saved or snapshotted are the list of step events; fold them into steps. */
function foldSteps(events) {
  const steps = [];
  if (Array.isArray(events)) for (const event of events) applyStep(steps, event);
  return steps;
}

function fromHistory(m) {
  const role = m.role === 'assistant' || m.role === 'user' || m.role === 'report' ? m.role : 'assistant';
  const prefix = role === 'user' ? 'u:' : role === 'assistant' ? 'a:' : 'r:';
  const key = m.request_id && role !== 'report' ? prefix + m.request_id : `h:${m.id}`;
  return {
    key,
    role,
    id: m.id,
    requestId: m.request_id ?? null,
    content: m.content ?? '',
    images: Array.isArray(m.images) ? m.images : [],
    createdAt: toMillis(m.created_at),
    // Paused on a question (interrupt): still in progress, like a streaming answer.
    status: m.status === 'interrupted' ? 'streaming' : m.status ?? 'complete',
    steps: foldSteps(m.steps),
    tools: toolsFrom(m.tools),
    interrupts: interruptsFrom(m.interrupts),
    reasoning: typeof m.reasoning === 'string' ? m.reasoning : '',
    usage: m.usage ?? null,
    finishReason: m.finish_reason ?? null,
    agentName: m.agent_name ?? null,
    origin: 'history',
    live: false,
    approx: false,
    error: null,
    queued: 0,
  };
}

/**
 * Each answer right after its question. History comes ordered by when rows were written, and
 * with queued chats that is question, question, answer, answer; people expect pairs.
 */
function arrange(messages) {
  const questions = new Set(messages.filter((m) => m.role === 'user' && m.requestId).map((m) => m.requestId));
  const answers = new Map(messages.filter((m) => m.role === 'assistant' && questions.has(m.requestId)).map((m) => [m.requestId, m]));
  const out = [];
  for (const m of messages) {
    if (m.role === 'assistant' && answers.get(m.requestId) === m) continue; // placed with its question
    out.push(m);
    if (m.role === 'user' && answers.has(m.requestId)) out.push(answers.get(m.requestId));
  }
  return out;
}

export class Conversation extends EventTarget {
  constructor({ projectId, agentName, threadId = 'main' }) {
    super();
    this.projectId = projectId;
    this.agentName = agentName;
    this.threadId = threadId;
    this.key = conversationKey(this);
    this.messages = [];
    this.byKey = new Map();
    this.oldestId = null;
    this.hasOlder = false;
    this.historyLoaded = false;
  }

  owns(frame) {
    return frameConversationKey(frame) === this.key;
  }

  /** The answer being written now, if any (the newest one still streaming). */
  get streaming() {
    for (let i = this.messages.length - 1; i >= 0; i -= 1) {
      const m = this.messages[i];
      if (m.role === 'assistant' && m.status === 'streaming') return m;
    }
    return null;
  }

  /** Chats of this page that have no finished answer yet (sending, queued or answering). */
  get inFlight() {
    return this.messages.filter(
      (m) => m.role === 'user' && m.origin === 'live' && ['sending', 'sent', 'queued'].includes(m.status) && !this.answerFinished(m.requestId),
    );
  }

  /** The question an answer replies to, if this page has it. */
  questionOf(answer) {
    return answer?.requestId ? this.byKey.get(`u:${answer.requestId}`) ?? null : null;
  }

  /** The newest answer, if it is the last message (what "regenerate" would redo). */
  get lastAnswer() {
    const last = this.messages[this.messages.length - 1];
    return last?.role === 'assistant' ? last : null;
  }

  answerFinished(requestId) {
    const answer = this.byKey.get(`a:${requestId}`);
    return Boolean(answer && TERMINAL.has(answer.status));
  }

  // --- changes from this page ---------------------------------------------------------------

  addOwnChat({ id, message, images }) {
    return this._add({
      key: `u:${id}`,
      role: 'user',
      id: null,
      requestId: id,
      content: message,
      images,
      createdAt: Date.now(),
      status: 'sending',
      steps: [],
      reasoning: '',
      usage: null,
      origin: 'live',
      live: true,
      approx: false,
      error: null,
      queued: 0,
    });
  }

  markChatFailed(id, errorText) {
    const m = this.byKey.get(`u:${id}`);
    if (!m) return;
    m.status = 'failed';
    m.error = errorText;
    this._changed(m);
  }

  // --- live frames --------------------------------------------------------------------------

  /** Apply one frame of this conversation. Returns the message it changed, if any. */
  apply(frame, { errorText } = {}) {
    switch (frame.type) {
      case 'ack':
        return this._onAck(frame);
      case 'start':
        return this._onStart(frame);
      case 'snapshot':
        return this._onSnapshot(frame);
      case 'response':
        return this._onResponse(frame);
      case 'reasoning':
        return this._onReasoning(frame);
      case 'step':
        return this._onStep(frame);
      case 'tool':
      case 'interrupt':
        return this._onToolOrQuestion(frame);
      case 'end':
        return this._onEnd(frame);
      case 'error':
        return this._onError(frame, errorText);
      default:
        return null;
    }
  }

  _onAck(frame) {
    const m = this.byKey.get(`u:${frame.id ?? frame.request_id}`);
    if (!m || m.status === 'failed') return null;
    if (m.status === 'sending' || m.status === 'queued') {
      m.status = frame.queued > 0 ? 'queued' : 'sent';
      m.queued = frame.queued ?? 0;
    }
    return this._changed(m);
  }

  _answer(frame) {
    const key = `a:${frame.request_id}`;
    let m = this.byKey.get(key);
    if (!m) {
      m = {
        key,
        role: 'assistant',
        id: null,
        requestId: frame.request_id,
        content: '',
        images: [],
        createdAt: Date.now(),
        status: 'streaming',
        steps: [],
        tools: [],
        interrupts: [],
        reasoning: '',
        usage: null,
        finishReason: null,
        agentName: frame.agent_name,
        origin: 'live',
        live: false,
        approx: false,
        error: null,
        queued: 0,
      };
      const question = this.byKey.get(`u:${frame.request_id}`);
      this._add(m, question ?? null);
      if (!question) this._needHistory('unknown_question');
    }
    return m;
  }

  _onStart(frame) {
    const m = this._answer(frame);
    if (m.live || TERMINAL.has(m.status)) return null;
    m.live = true;
    m.status = 'streaming';
    m.content = '';
    m.reasoning = '';
    m.approx = false;
    this._questionAnswering(frame.request_id);
    return this._changed(m);
  }

  _onSnapshot(frame) {
    const m = this._answer(frame);
    if (TERMINAL.has(m.status)) return null;
    m.content = frame.content ?? '';
    if (Array.isArray(frame.steps)) m.steps = foldSteps(frame.steps);
    if (Array.isArray(frame.tools)) m.tools = toolsFrom(frame.tools);
    if (Array.isArray(frame.interrupts)) m.interrupts = interruptsFrom(frame.interrupts);
    // Snapshots from several nodes carry no reasoning yet: keep what this page has then.
    if (typeof frame.reasoning === 'string') m.reasoning = frame.reasoning;
    m.status = 'streaming';
    m.live = true;
    m.approx = false;
    this._questionAnswering(frame.request_id);
    return this._changed(m);
  }

  _onResponse(frame) {
    const m = this._answer(frame);
    if (TERMINAL.has(m.status)) return null; // already final: the saved text is complete
    if (!m.live) m.approx = true;
    m.content += frame.content ?? '';
    return this._changed(m);
  }

  _onReasoning(frame) {
    const m = this._answer(frame);
    if (TERMINAL.has(m.status)) return null;
    if (!m.live) m.approx = true;
    m.reasoning += frame.content ?? '';
    return this._changed(m);
  }

  _onStep(frame) {
    const m = this._answer(frame);
    if (TERMINAL.has(m.status)) return null;
    applyStep(m.steps, { content: frame.content, name: frame.name, state: frame.state ?? 'started' });
    return this._changed(m);
  }

  /** A tool call's or a question's whole state so far (tool-cards.js, interrupt-cards.js). */
  _onToolOrQuestion(frame) {
    const m = this._answer(frame);
    if (TERMINAL.has(m.status)) return null;
    m.tools ??= [];
    m.interrupts ??= [];
    if (frame.type === 'tool') applyTool(m.tools, frame);
    else applyInterrupt(m.interrupts, frame);
    return this._changed(m);
  }

  _onEnd(frame) {
    const m = this._answer(frame);
    if (TERMINAL.has(m.status) && !m.approx) return null;
    m.status = FINISH_STATUS[frame.finish_reason] ?? 'complete';
    m.finishReason = frame.finish_reason ?? null;
    if (frame.usage) m.usage = frame.usage;
    for (const step of m.steps) step.state = 'finished';
    const question = this.byKey.get(`u:${frame.request_id}`);
    if (question && question.status !== 'failed') {
      question.status = 'sent';
      this._changed(question);
    }
    if (m.approx || !question) this._needHistory('inexact');
    return this._changed(m);
  }

  _onError(frame, errorText) {
    const question = this.byKey.get(`u:${frame.request_id}`);
    const answer = this.byKey.get(`a:${frame.request_id}`);
    if (answer) {
      answer.error = errorText;
      if (answer.status === 'streaming') answer.status = 'failed';
      return this._changed(answer);
    }
    if (question) {
      question.status = 'failed';
      question.error = errorText;
      return this._changed(question);
    }
    return null;
  }

  _questionAnswering(requestId) {
    const question = this.byKey.get(`u:${requestId}`);
    if (question && (question.status === 'sending' || question.status === 'queued')) {
      question.status = 'sent';
      this._changed(question);
    }
  }

  /** An auto_report for this conversation (saved in its history as message `message_id`). */
  addReport(frame) {
    const key = frame.message_id ? `h:${frame.message_id}` : `r:${frame.task_id ?? frame.seq}`;
    if (this.byKey.has(key) || this.messages.some((m) => m.role === 'report' && m.content === frame.content)) return null;
    return this._add({
      key,
      role: 'report',
      id: null,
      requestId: null,
      content: frame.content ?? '',
      images: [],
      createdAt: Date.now(),
      status: 'complete',
      steps: [],
      reasoning: '',
      usage: null,
      agentName: frame.agent_name ?? null, // the agent that did the work
      origin: 'live',
      live: true,
      approx: false,
      error: null,
      queued: 0,
    });
  }

  // --- history ------------------------------------------------------------------------------

  /** Replace what we show with `messages` from history, keeping newer live state. */
  loadHistory(messages, { limit }) {
    const next = messages.map(fromHistory);
    const nextKeys = new Map(next.map((m) => [m.key, m]));
    for (const h of next) {
      const live = this.byKey.get(h.key);
      if (!live) continue;
      if (h.role === 'assistant' && !TERMINAL.has(h.status) && (live.live || live.content.length >= h.content.length)) {
        Object.assign(h, {
          content: live.content,
          reasoning: live.reasoning || h.reasoning,
          status: live.status,
          steps: live.steps.length ? live.steps : h.steps,
          tools: live.tools?.length ? live.tools : h.tools,
          interrupts: live.interrupts?.length ? live.interrupts : h.interrupts,
          live: live.live,
          approx: live.approx,
        });
      }
      if (h.role === 'assistant' && TERMINAL.has(h.status)) {
        if (!h.steps.length) h.steps = live.steps;
        h.usage ??= live.usage ?? null;
        h.reasoning ||= live.reasoning ?? '';
      }
      h.error = live.error;
      h.agentName ??= live.agentName;
      if (h.role === 'user' && live.origin === 'live') {
        // Sent from this page: keep what only this page knows (queued, failed), and the stop button.
        Object.assign(h, { origin: 'live', status: live.status, queued: live.queued });
      }
    }
    const historyReports = new Set(next.filter((m) => m.role === 'report').map((m) => m.content));
    // Live messages that history does not have yet (just sent, just started, just reported).
    const trailing = this.messages.filter(
      (m) => m.origin === 'live' && !nextKeys.has(m.key) && !(m.role === 'report' && historyReports.has(m.content)),
    );
    this.messages = arrange([...next, ...trailing]);
    this.byKey = new Map(this.messages.map((m) => [m.key, m]));
    this.oldestId = next.length ? next[0].id : null;
    this.hasOlder = messages.length >= limit;
    this.historyLoaded = true;
    this.dispatchEvent(new CustomEvent('reset'));
  }

  /** Older messages, fetched with `before`: put them in front. */
  prependHistory(messages, { limit }) {
    const older = messages.map(fromHistory).filter((m) => !this.byKey.has(m.key));
    this.messages = arrange([...older, ...this.messages]);
    for (const m of older) this.byKey.set(m.key, m);
    if (older.length) this.oldestId = older[0].id;
    this.hasOlder = messages.length >= limit;
    this.dispatchEvent(new CustomEvent('reset'));
  }

  // --- internals ------------------------------------------------------------------------------

  _add(message, after = null) {
    const index = after ? this.messages.indexOf(after) : -1;
    if (index >= 0) this.messages.splice(index + 1, 0, message);
    else this.messages.push(message);
    this.byKey.set(message.key, message);
    return this._changed(message);
  }

  _changed(message) {
    this.dispatchEvent(new CustomEvent('update', { detail: { message } }));
    return message;
  }

  _needHistory(reason) {
    this.dispatchEvent(new CustomEvent('need-history', { detail: { reason } }));
  }
}

// Draws a Conversation into the message list and keeps it scrolled sensibly: it follows new
// text while the reader is at the bottom and offers a "jump to latest" button otherwise.
// Answer text is re-rendered at most once per animation frame while it streams.

import { copyFromButton } from './copy.js';
import { h, icon, initial, replace, safeImageSrc } from './dom.js';
import { formatNumber, formatTime, t } from './i18n.js';
import { renderInterruptCards } from './interrupt-cards.js';
import { renderMarkdown } from './markdown.js';
import { renderToolCards } from './tool-cards.js';

const NEAR_BOTTOM_PX = 80;

export class MessagesView {
  constructor({ list, scroller, empty, jumpButton, olderButton, onLoadOlder, onOpenImage, onRegenerate, onResume }) {
    this.list = list;
    this.scroller = scroller;
    this.empty = empty;
    this.jumpButton = jumpButton;
    this.olderButton = olderButton;
    this.onOpenImage = onOpenImage;
    this.onRegenerate = onRegenerate;
    this.onResume = onResume; // (interruptId, value): answer an agent's question
    this.nodes = new Map(); // message key -> element
    this.dirty = new Set();
    this.frame = 0;
    this.atBottom = true;
    this.loading = false;
    this.agentRunning = true;
    this.conversation = null;
    this.unbind = () => {};
    scroller.addEventListener('scroll', () => {
      this.atBottom = this._nearBottom();
      if (this.atBottom) this.jumpButton.hidden = true;
    });
    jumpButton.addEventListener('click', () => this.scrollToBottom(true));
    olderButton.addEventListener('click', () => onLoadOlder?.());
  }

  show(conversation, { loading = false } = {}) {
    this.unbind();
    this.conversation = conversation;
    const onReset = () => this.renderAll();
    const onUpdate = (event) => this.schedule(event.detail.message);
    conversation.addEventListener('reset', onReset);
    conversation.addEventListener('update', onUpdate);
    this.unbind = () => {
      conversation.removeEventListener('reset', onReset);
      conversation.removeEventListener('update', onUpdate);
    };
    this.list.setAttribute('aria-label', t('chat.label', { agent: conversation.agentName }));
    this.renderAll({ loading });
  }

  /** A stopped agent gets a different empty state than "ask anything". */
  setAgentRunning(running) {
    this.agentRunning = running;
    if (this.conversation) this._updateEmpty();
  }

  renderAll({ loading = false } = {}) {
    const conversation = this.conversation;
    const keepPosition = !this.atBottom && this.nodes.size > 0;
    const previousHeight = this.scroller.scrollHeight - this.scroller.scrollTop;
    this.nodes.clear();
    this.dirty.clear();
    this.list.replaceChildren(...conversation.messages.map((m) => this._node(m)));
    this.olderButton.hidden = !conversation.hasOlder;
    this.loading = loading;
    this._updateEmpty();
    if (keepPosition) this.scroller.scrollTop = this.scroller.scrollHeight - previousHeight;
    else this.scrollToBottom(false);
  }

  /** Mark one message for redraw on the next animation frame. */
  schedule(message) {
    this.dirty.add(message);
    if (!this.frame) this.frame = requestAnimationFrame(() => this._flush());
  }

  scrollToBottom(smooth) {
    this.scroller.scrollTo({ top: this.scroller.scrollHeight, behavior: smooth ? 'smooth' : 'auto' });
    this.atBottom = true;
    this.jumpButton.hidden = true;
  }

  _flush() {
    this.frame = 0;
    const follow = this.atBottom;
    for (const message of this.dirty) {
      const old = this.nodes.get(message.key);
      if (old) {
        this._fill(old, message);
      } else {
        this._insert(message);
      }
    }
    this.dirty.clear();
    this.loading = false;
    this._updateEmpty();
    if (follow) this.scrollToBottom(false);
    else this.jumpButton.hidden = false;
  }

  _insert(message) {
    const node = this._node(message);
    const messages = this.conversation.messages;
    const index = messages.indexOf(message);
    // Insert before the next message that is already on screen, to keep the model's order.
    for (let k = index + 1; k < messages.length; k += 1) {
      const next = this.nodes.get(messages[k].key);
      if (next && next !== node) {
        this.list.insertBefore(node, next);
        return;
      }
    }
    this.list.append(node);
  }

  _updateEmpty() {
    const none = this.conversation.messages.length === 0;
    this.empty.hidden = !none;
    if (none) {
      const agent = this.conversation.agentName;
      this.empty.replaceChildren(
        this.loading
          ? h('p', { className: 'empty-loading', text: t('chat.loading') })
          : h('div', {}, [
              h('div', { className: 'empty-avatar', 'aria-hidden': 'true', text: initial(this.conversation.agentName) }),
              h('h2', { text: t('chat.emptyTitle') }),
              h('p', { text: this.agentRunning ? t('chat.emptyBody', { agent }) : t('agent.stoppedNotice', { agent }) }),
            ]),
      );
    }
  }

  _nearBottom() {
    const s = this.scroller;
    return s.scrollHeight - s.scrollTop - s.clientHeight < NEAR_BOTTOM_PX;
  }

  // --- message elements -------------------------------------------------------------------

  _node(message) {
    const node = h('article', { className: `msg msg-${message.role}`, dataset: { key: message.key } });
    this.nodes.set(message.key, node);
    this._fill(node, message);
    return node;
  }

  _fill(node, message) {
    node.dataset.status = message.status;
    if (message.requestId) node.dataset.requestId = message.requestId;
    if (message.role === 'user') this._fillUser(node, message);
    else if (message.role === 'report') this._fillReport(node, message);
    else this._fillAssistant(node, message);
  }

  _fillUser(node, m) {
    const status = {
      sending: t('chat.sending'),
      queued: t('chat.queued', { n: m.queued }),
      failed: t('chat.notSent'),
    }[m.status];
    replace(
      node,
      h('div', { className: 'bubble' }, [
        this._images(m.images),
        m.content ? h('div', { className: 'user-text', text: m.content }) : null,
      ]),
      h('div', { className: 'meta' }, [
        h('time', { datetime: new Date(m.createdAt).toISOString(), text: formatTime(m.createdAt) }),
        status ? h('span', { className: `status status-${m.status}`, text: status }) : null,
      ]),
      m.error ? h('p', { className: 'msg-error', role: 'alert' }, [icon('warn'), m.error]) : null,
    );
  }

  _fillAssistant(node, m) {
    const agent = m.agentName ?? this.conversation.agentName;
    const streaming = m.status === 'streaming';
    let main = node.querySelector('.msg-main');
    if (!main) {
      // Built once; later updates touch only the parts that change, so focus and
      // an open <details> survive streaming.
      main = h('div', { className: 'msg-main' }, [
        h('header', { className: 'meta' }),
        h('div', { className: 'progress', hidden: true }),
        // Reasoning is closed by default: it is there for whoever wants it, not in the way.
        h('details', { className: 'reasoning', hidden: true }, [h('summary'), h('div', { className: 'reasoning-text' })]),
        h('details', { className: 'steps', hidden: true }, [h('summary'), h('ol')]),
        h('div', { className: 'tool-cards', hidden: true }),
        h('div', { className: 'content md' }),
        h('div', { className: 'interrupt-cards', hidden: true }),
        h('p', { className: 'cut-mark', hidden: true }, [icon('warn'), h('span', { text: t('chat.cutOffNote') })]),
        h('div', { className: 'typing', hidden: true, 'aria-hidden': 'true' }, [h('span'), h('span'), h('span')]),
        h('p', { className: 'msg-error', role: 'alert', hidden: true }),
        this._answerActions(node),
      ]);
      node.replaceChildren(h('div', { className: 'avatar', 'aria-hidden': 'true', text: initial(agent) }), main);
    }
    // Failed with text: the server stopped mid-answer and saved what was written so far.
    const cut = m.status === 'failed' && Boolean(m.content);
    node.dataset.cut = String(cut);
    const badge = cut ? t('chat.cutOff') : { cancelled: t('chat.stopped'), failed: t('chat.failed') }[m.status];
    replace(
      main.querySelector('.meta'),
      h('span', { className: 'name', text: agent }),
      h('time', { datetime: new Date(m.createdAt).toISOString(), text: formatTime(m.createdAt) }),
      badge ? h('span', { className: `badge badge-${m.status}`, text: badge }) : null,
    );

    // The current step, as one compact line above the answer ("데이터 분석 중...").
    const progress = main.querySelector('.progress');
    // While a question waits for people, nothing is in progress: the card says what is needed.
    const asking = (m.interrupts ?? []).some((q) => q.state === 'pending');
    const current = streaming && !asking ? [...m.steps].reverse().find((s) => s.state !== 'finished') : null;
    progress.hidden = !current;
    if (current) progress.replaceChildren(h('span', { className: 'spinner', 'aria-hidden': 'true' }), h('span', { text: current.content || current.name }));

    const reasoning = main.querySelector('.reasoning');
    reasoning.hidden = !m.reasoning;
    if (m.reasoning) {
      const thinking = streaming && !m.content;
      reasoning.querySelector('summary').replaceChildren(icon('bulb'), thinking ? t('chat.reasoningLive') : t('chat.reasoning'));
      const body = reasoning.querySelector('.reasoning-text');
      if (body.textContent !== m.reasoning) body.textContent = m.reasoning;
    }

    const steps = main.querySelector('.steps');
    const done = m.steps.filter((s) => s.state === 'finished');
    steps.hidden = done.length === 0;
    if (done.length) {
      steps.querySelector('summary').replaceChildren(icon('check'), done.length === 1 ? t('chat.step') : t('chat.steps', { n: done.length }));
      steps.querySelector('ol').replaceChildren(...done.map((s) => h('li', { text: s.content || s.name })));
    }

    renderToolCards(main.querySelector('.tool-cards'), m.tools ?? []);
    renderInterruptCards(main.querySelector('.interrupt-cards'), m.interrupts ?? [], this.onResume);

    const content = main.querySelector('.content');
    content.setAttribute('aria-busy', streaming ? 'true' : 'false');
    if (content.renderedText !== m.content) {
      content.replaceChildren(renderMarkdown(m.content));
      content.renderedText = m.content; // a property, not an attribute: no DOM churn
    }
    main.querySelector('.typing').hidden = !(streaming && !m.content && !current && !m.reasoning && !asking);
    main.querySelector('.cut-mark').hidden = !cut;

    const actions = main.querySelector('.msg-actions');
    actions.hidden = streaming;
    const usage = actions.querySelector('.usage');
    usage.hidden = !m.usage;
    if (m.usage) {
      usage.textContent = t('chat.usage', { n: formatNumber(m.usage.total_tokens ?? 0) });
      let detail = t('chat.usageDetail', { prompt: formatNumber(m.usage.prompt_tokens ?? 0), completion: formatNumber(m.usage.completion_tokens ?? 0) });
      if (m.usage.reasoning_tokens !== undefined) detail += t('chat.usageReasoning', { n: formatNumber(m.usage.reasoning_tokens) });
      usage.title = detail;
      usage.setAttribute('aria-label', `${usage.textContent} (${detail})`);
    }

    const error = main.querySelector('.msg-error');
    error.hidden = !m.error;
    if (m.error) error.replaceChildren(icon('warn'), m.error);
  }

  /** Copy, regenerate (shown on the last answer only, by the stylesheet) and token usage. */
  _answerActions(node) {
    const message = () => this.conversation.byKey.get(node.dataset.key);
    const copy = h('button', { type: 'button', className: 'msg-action copy-answer', title: t('chat.copyAnswer'), 'aria-label': t('chat.copyAnswer') }, [
      icon('copy'),
      h('span', { className: 'copy-label', text: t('code.copy') }),
    ]);
    copy.addEventListener('click', () =>
      copyFromButton(copy, message()?.content ?? '', { label: t('code.copy'), doneLabel: t('code.copied'), failedLabel: t('code.copyFailed') }),
    );
    const regenerate = h('button', { type: 'button', className: 'msg-action regenerate', title: t('chat.regenerate'), 'aria-label': t('chat.regenerate') }, [
      icon('redo'),
      h('span', { text: t('chat.regenerate') }),
    ]);
    regenerate.addEventListener('click', () => {
      const answer = message();
      if (answer) this.onRegenerate?.(answer);
    });
    return h('footer', { className: 'msg-actions', hidden: true }, [copy, regenerate, h('span', { className: 'usage', hidden: true })]);
  }

  _fillReport(node, m) {
    const agent = m.agentName;
    node.replaceChildren(
      h('div', { className: 'report-card' }, [
        h('header', { className: 'report-head' }, [
          icon('report', 'icon report-icon'),
          h('span', { className: 'name', text: agent ? t('chat.reportFrom', { agent }) : t('chat.report') }),
          h('time', { datetime: new Date(m.createdAt).toISOString(), text: formatTime(m.createdAt) }),
        ]),
        h('div', { className: 'content md' }, [renderMarkdown(m.content)]),
      ]),
    );
  }

  _images(images) {
    const shown = (images ?? []).map(safeImageSrc).filter(Boolean);
    if (!shown.length) return null;
    return h(
      'div',
      { className: `msg-images count-${Math.min(shown.length, 4)}` },
      shown.map((src, index) =>
        h('button', { type: 'button', className: 'msg-image', onclick: () => this.onOpenImage?.(src, t('chat.imageAlt', { n: index + 1 })) }, [
          h('img', { src, alt: t('chat.imageAlt', { n: index + 1 }), loading: 'lazy', decoding: 'async' }),
        ]),
      ),
    );
  }
}

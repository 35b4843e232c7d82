// The user's conversations in the sidebar (GET /api/threads): newest activity first, a page at
// a time, with the open one highlighted, unread counts, rename in place, delete after a
// confirmation, and a search box that filters the titles loaded so far ("Load more" fetches
// older pages, which the filter then covers too).
//
// A conversation appears in the server's list once it has a message; the one just started
// with "New chat" is shown on top as "New chat" until then.

import { api } from './api.js';
import { conversationKey } from './conversation.js';
import { h, icon } from './dom.js';
import { errorText, formatTime, t } from './i18n.js';
import { conversationHash } from './sidebar.js';

const PAGE = 50;
const REFRESH_DELAY_MS = 300;

const itemKey = (item) => conversationKey({ projectId: item.project_id, agentName: item.agent_name, threadId: item.thread_id });
const targetOf = (item) => ({ projectId: item.project_id, agentName: item.agent_name, threadId: item.thread_id });

function normalize(text) {
  return String(text ?? '').normalize('NFKC').toLocaleLowerCase();
}

export class ThreadList {
  constructor({ list, more, search, confirmDialog, notices, onNavigate, onDeleted, onChange }) {
    Object.assign(this, { list, more, search, confirmDialog, notices, onNavigate, onDeleted, onChange });
    this.items = [];
    this.next = null;
    this.loaded = false;
    this.current = null; // { projectId, agentName, threadId }
    this.unreadHere = new Map(); // conversation key -> answers finished here while not shown
    this.timer = 0;
    this.editing = null; // key of the item being renamed
    this.draft = ''; // what was typed there (a refresh meanwhile must not lose it)
    search.addEventListener('input', () => this.render());
    search.addEventListener('keydown', (event) => {
      if (event.key === 'Escape' && search.value) {
        search.value = '';
        this.render();
      }
    });
    more.addEventListener('click', () => this.loadMore());
  }

  /** The title of a conversation, when the list has it. */
  titleOf(target) {
    return this.items.find((item) => itemKey(item) === conversationKey(target))?.title ?? null;
  }

  setCurrent(target) {
    this.current = target;
    if (target) this.unreadHere.delete(conversationKey(target));
    this.render();
  }

  /** An answer ended in a conversation that is not on screen: count it until it is opened. */
  noteAnswer(key) {
    if (this.current && conversationKey(this.current) === key) return;
    this.unreadHere.set(key, (this.unreadHere.get(key) ?? 0) + 1);
    this.render();
  }

  /** Reload soon (several reasons in a burst make one request). */
  refreshSoon(delayMs = REFRESH_DELAY_MS) {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.refresh(), delayMs);
  }

  /** Reload from the newest, as many items as are loaded now (at least one page). */
  async refresh() {
    clearTimeout(this.timer);
    const limit = Math.min(200, Math.max(PAGE, this.items.length));
    try {
      const data = await api.threads({ limit });
      this.items = data.items ?? [];
      this.next = data.next ?? null;
      this.loaded = true;
      this.render();
      this.onChange?.();
    } catch (error) {
      if (error.status === 401) return; // signing in again reloads it
      this.loaded = true;
      this.render();
      this.notices.toast({ kind: 'error', text: t('threads.loadFailed', { msg: errorText(error.code, error.message) }) });
    }
  }

  async loadMore() {
    if (this.next === null) return;
    this.more.disabled = true;
    try {
      const data = await api.threads({ limit: PAGE, before: this.next });
      const known = new Set(this.items.map(itemKey));
      this.items.push(...(data.items ?? []).filter((item) => !known.has(itemKey(item))));
      this.next = data.next ?? null;
      this.render();
    } catch (error) {
      this.notices.toast({ kind: 'error', text: t('threads.loadFailed', { msg: errorText(error.code, error.message) }) });
    } finally {
      this.more.disabled = false;
    }
  }

  // --- drawing ------------------------------------------------------------------------------

  render() {
    const query = normalize(this.search.value.trim());
    const currentKey = this.current ? conversationKey(this.current) : null;
    let items = this.items;
    // The conversation on screen that has no message yet (a new chat) heads the list.
    if (this.current && !items.some((item) => itemKey(item) === currentKey) && this.current.threadId !== 'main') {
      items = [{ project_id: this.current.projectId, agent_name: this.current.agentName, thread_id: this.current.threadId, title: null, fresh: true }, ...items];
    }
    const shown = query ? items.filter((item) => normalize(item.title).includes(query) || normalize(item.agent_name).includes(query)) : items;
    const rows = shown.map((item) => this._row(item, itemKey(item) === currentKey));
    if (!rows.length && this.loaded) {
      rows.push(h('li', { className: 'nav-note thread-none', text: query ? t('threads.noMatch', { q: this.search.value.trim() }) : t('threads.empty') }));
    }
    this.list.replaceChildren(...rows);
    this.list.setAttribute('aria-busy', String(!this.loaded));
    this.more.hidden = this.next === null;
    if (this.editing) {
      const input = this.list.querySelector('.thread-rename-input');
      input?.focus();
      input?.setSelectionRange(input.value.length, input.value.length);
    }
  }

  _row(item, isCurrent) {
    const key = itemKey(item);
    const title = item.title || t('threads.untitled');
    const unread = isCurrent ? 0 : (item.unread ?? 0) + (this.unreadHere.get(key) ?? 0);
    const row = h('li', { className: 'thread-item', dataset: { key, thread: item.thread_id, agent: item.agent_name } });
    if (this.editing === key) {
      row.append(this._renameForm(item, title));
      return row;
    }
    row.append(
      h(
        'a',
        {
          className: 'thread-link',
          href: conversationHash(targetOf(item)),
          'aria-current': isCurrent ? 'page' : null,
          onclick: () => this.onNavigate?.(),
        },
        [
          h('span', { className: 'thread-title', text: title }),
          h('span', { className: 'thread-sub' }, [
            h('span', { text: item.agent_name }),
            item.updated_at ? h('time', { datetime: item.updated_at, text: formatTime(asUtc(item.updated_at)) }) : null,
          ]),
          unread ? h('span', { className: 'unread', 'aria-label': t('threads.unread', { n: unread }), text: String(unread) }) : null,
        ],
      ),
    );
    if (!item.fresh && item.mine !== false) {
      row.append(
        h('div', { className: 'thread-actions' }, [
          h('button', { type: 'button', className: 'icon-btn thread-rename', title: t('threads.rename'), 'aria-label': `${t('threads.rename')}: ${title}`, onclick: () => this._startRename(key) }, [icon('edit')]),
          h('button', { type: 'button', className: 'icon-btn thread-delete', title: t('threads.delete'), 'aria-label': `${t('threads.delete')}: ${title}`, onclick: () => this._confirmDelete(item, title) }, [icon('trash')]),
        ]),
      );
    }
    return row;
  }

  // --- rename -------------------------------------------------------------------------------

  _startRename(key) {
    this.editing = key;
    this.draft = this.items.find((item) => itemKey(item) === key)?.title ?? '';
    this.render();
    this.list.querySelector('.thread-rename-input')?.select();
  }

  _renameForm(item, title) {
    const input = h('input', { className: 'thread-rename-input', type: 'text', maxlength: '200', value: this.draft, 'aria-label': t('threads.renameLabel', { title }) });
    input.addEventListener('input', () => (this.draft = input.value));
    let done = false;
    const finish = async (save) => {
      if (done) return;
      done = true;
      this.editing = null;
      const value = input.value.trim();
      if (!save || !value || value === item.title) {
        this.render();
        return;
      }
      item.title = value; // shown at once; the server's answer confirms it
      this.render();
      try {
        const answer = await api.renameThread(targetOf(item), value);
        item.title = answer.title ?? value;
        this.render();
        this.onChange?.();
      } catch (error) {
        this.notices.toast({ kind: 'error', text: t('threads.failed', { msg: errorText(error.code, error.message) }) });
        this.refresh();
      }
    };
    const form = h('form', { className: 'thread-rename' }, [input]);
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      finish(true);
    });
    input.addEventListener('keydown', (event) => {
      if (event.key === 'Escape') {
        event.preventDefault();
        finish(false);
      }
    });
    input.addEventListener('blur', () => finish(true));
    return form;
  }

  // --- delete -------------------------------------------------------------------------------

  async _confirmDelete(item, title) {
    if (!(await this._confirm(title))) return;
    try {
      await api.deleteThread(targetOf(item));
    } catch (error) {
      this.notices.toast({ kind: 'error', text: t('threads.failed', { msg: errorText(error.code, error.message) }) });
      return;
    }
    this.items = this.items.filter((other) => other !== item);
    this.render();
    this.notices.toast({ kind: 'info', text: t('threads.deleted') });
    this.onDeleted?.(targetOf(item));
  }

  /** Ask in the confirmation dialog; resolves true when the user chose Delete. */
  _confirm(title) {
    const dialog = this.confirmDialog;
    dialog.querySelector('.confirm-body').textContent = t('threads.deleteBody', { title });
    dialog.returnValue = '';
    dialog.showModal();
    dialog.querySelector('.confirm-cancel').focus();
    return new Promise((resolve) => {
      dialog.addEventListener('close', () => resolve(dialog.returnValue === 'delete'), { once: true });
    });
  }
}

/** updated_at is UTC; a value without a zone must not be read as local time. */
function asUtc(value) {
  return typeof value === 'string' && /T[\d:.]+$/.test(value) ? `${value}Z` : value;
}

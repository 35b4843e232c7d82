// Banners (persistent, at the top of the chat: broadcasts, "opened elsewhere") and toasts
// (short-lived notifications: auto reports, errors not tied to a message).

import { h, icon } from './dom.js';
import { t } from './i18n.js';

const TOAST_MS = 9000;

export class Notices {
  constructor({ banners, toasts }) {
    this.banners = banners;
    this.toasts = toasts;
  }

  /** Show or replace the banner called `id`. actions: [{ label, onClick }]. */
  banner(id, { kind = 'info', title, text, actions = [], dismissible = true }) {
    const node = h('div', { className: `banner banner-${kind}`, dataset: { banner: id }, role: kind === 'error' ? 'alert' : 'status' }, [
      icon(kind === 'broadcast' ? 'megaphone' : 'warn', 'icon banner-icon'),
      h('div', { className: 'banner-text' }, [title ? h('strong', { text: title }) : null, h('span', { text })]),
      ...actions.map((action) => h('button', { type: 'button', className: 'btn btn-small', onclick: action.onClick, text: action.label })),
      dismissible
        ? h('button', { type: 'button', className: 'icon-btn', 'aria-label': t('common.dismiss'), title: t('common.dismiss'), onclick: () => node.remove() }, [icon('close')])
        : null,
    ]);
    const old = this.banners.querySelector(`[data-banner="${CSS.escape(id)}"]`);
    if (old) old.replaceWith(node);
    else this.banners.append(node);
    return node;
  }

  clearBanner(id) {
    this.banners.querySelector(`[data-banner="${CSS.escape(id)}"]`)?.remove();
  }

  /** A notification in the corner that goes away by itself. */
  toast({ kind = 'info', title, text, action }) {
    const node = h('div', { className: `toast toast-${kind}`, role: kind === 'error' ? 'alert' : 'status' }, [
      icon(kind === 'report' ? 'report' : kind === 'error' ? 'warn' : 'check', 'icon toast-icon'),
      h('div', { className: 'toast-text' }, [title ? h('strong', { text: title }) : null, text ? h('span', { text }) : null]),
      action
        ? h('button', {
            type: 'button',
            className: 'btn btn-small',
            text: action.label,
            onclick: () => {
              action.onClick();
              node.remove();
            },
          })
        : null,
      h('button', { type: 'button', className: 'icon-btn', 'aria-label': t('common.dismiss'), onclick: () => node.remove() }, [icon('close')]),
    ]);
    this.toasts.append(node);
    let timer = setTimeout(() => node.remove(), TOAST_MS);
    // Keep it while the pointer or focus is on it, so it can be read and used.
    node.addEventListener('mouseenter', () => clearTimeout(timer));
    node.addEventListener('focusin', () => clearTimeout(timer));
    node.addEventListener('mouseleave', () => {
      timer = setTimeout(() => node.remove(), TOAST_MS);
    });
    return node;
  }
}

// The message box: text, image attachments (picker, paste, drag and drop) with previews and
// size checks, Enter to send and Shift+Enter for a new line, and the stop button.
// Limits come from GET /api/config; anything too large is refused here with a clear message
// instead of being sent and refused by the server.

import { h, icon } from './dom.js';
import { formatBytes, t } from './i18n.js';

const IMAGE_TYPES = new Set(['image/png', 'image/jpeg', 'image/gif', 'image/webp']);
const MAX_INPUT_HEIGHT_PX = 220;

function readAsDataUrl(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

export class Composer {
  constructor(elements, { onSend, onStop }) {
    Object.assign(this, elements); // form, input, fileInput, attachButton, sendButton, stopButton, attachmentsEl, errorEl, dropOverlay, label
    this.onSend = onSend;
    this.onStop = onStop;
    this.attachments = [];
    this.limits = { maxImageBytes: 768 * 1024, maxMessageBytes: 1024 * 1024, maxImages: 4 };
    this.enabled = true;
    this._wire();
  }

  setLimits({ maxImageBytes, maxMessageBytes, maxImages }) {
    if (maxImageBytes) this.limits.maxImageBytes = maxImageBytes;
    if (maxMessageBytes) this.limits.maxMessageBytes = maxMessageBytes;
    if (maxImages !== undefined && maxImages !== null) this.limits.maxImages = maxImages;
    this.attachButton.hidden = this.limits.maxImages === 0;
  }

  setAgent(agentName, running) {
    this.enabled = running;
    this.input.placeholder = t(running ? 'composer.placeholder' : 'composer.placeholderStopped', { agent: agentName });
    this.label.textContent = t('composer.label', { agent: agentName });
    this.input.disabled = !running;
    this.attachButton.disabled = !running;
    this._updateSend();
  }

  /** Show the stop button while an answer of this conversation is being written or queued. */
  setAnswering(answering) {
    this.stopButton.hidden = !answering;
  }

  focus() {
    if (!this.input.disabled && matchMedia('(pointer: fine)').matches) this.input.focus();
  }

  showError(text) {
    this.errorEl.textContent = text;
    this.errorEl.hidden = !text;
  }

  // --- sending ------------------------------------------------------------------------------

  submit() {
    const text = this.input.value;
    if (!this.enabled || (!text.trim() && this.attachments.length === 0)) return;
    try {
      this.onSend({ message: text.trim(), images: this.attachments.map((a) => a.dataUrl) });
    } catch (error) {
      if (error.code === 'too_large') {
        this.showError(t('composer.messageTooLarge', { size: formatBytes(error.size), max: formatBytes(error.limit) }));
        return;
      }
      throw error;
    }
    this.input.value = '';
    this.attachments = [];
    this._renderAttachments();
    this.showError('');
    this._autosize();
    this._updateSend();
  }

  // --- attachments --------------------------------------------------------------------------

  async addFiles(files) {
    const errors = [];
    for (const file of files) {
      if (!IMAGE_TYPES.has(file.type)) {
        errors.push(t('composer.notImage', { name: file.name || file.type }));
        continue;
      }
      if (file.size > this.limits.maxImageBytes) {
        errors.push(t('composer.imageTooLarge', { name: file.name || file.type, size: formatBytes(file.size), max: formatBytes(this.limits.maxImageBytes) }));
        continue;
      }
      if (this.attachments.length >= this.limits.maxImages) {
        errors.push(t('composer.tooManyImages', { n: this.limits.maxImages }));
        break;
      }
      try {
        const dataUrl = await readAsDataUrl(file);
        this.attachments.push({ id: crypto.getRandomValues(new Uint32Array(1))[0], name: file.name || 'image', size: file.size, dataUrl });
      } catch {
        errors.push(t('composer.unreadable', { name: file.name }));
      }
    }
    this.showError(errors.join(' '));
    this._renderAttachments();
    this._updateSend();
  }

  _renderAttachments() {
    this.attachmentsEl.hidden = this.attachments.length === 0;
    this.attachmentsEl.replaceChildren(
      ...this.attachments.map((a) =>
        h('li', { className: 'attachment' }, [
          h('img', { src: a.dataUrl, alt: a.name }),
          h('span', { className: 'attachment-size', text: formatBytes(a.size) }),
          h(
            'button',
            {
              type: 'button',
              className: 'attachment-remove',
              'aria-label': t('composer.remove', { name: a.name }),
              title: t('composer.remove', { name: a.name }),
              onclick: () => {
                this.attachments = this.attachments.filter((x) => x !== a);
                this._renderAttachments();
                this._updateSend();
                this.input.focus();
              },
            },
            [icon('close')],
          ),
        ]),
      ),
    );
  }

  // --- events -------------------------------------------------------------------------------

  _wire() {
    this.form.addEventListener('submit', (event) => {
      event.preventDefault();
      this.submit();
    });
    this.input.addEventListener('keydown', (event) => {
      // isComposing: Enter that confirms a Korean/Japanese/Chinese IME syllable must not send.
      if (event.key === 'Enter' && !event.shiftKey && !event.isComposing && event.keyCode !== 229) {
        event.preventDefault();
        this.submit();
      } else if (event.key === 'Escape' && !this.stopButton.hidden) {
        event.preventDefault();
        this.onStop();
      }
    });
    this.input.addEventListener('input', () => {
      this._autosize();
      this._updateSend();
    });
    this.input.addEventListener('paste', (event) => {
      const files = [...(event.clipboardData?.files ?? [])].filter((f) => f.type.startsWith('image/'));
      if (files.length === 0) return;
      if (!event.clipboardData.getData('text/plain')) event.preventDefault();
      this.addFiles(files);
    });
    this.attachButton.addEventListener('click', () => this.fileInput.click());
    this.fileInput.addEventListener('change', () => {
      this.addFiles([...this.fileInput.files]);
      this.fileInput.value = ''; // picking the same file again must fire change
    });
    this.stopButton.addEventListener('click', () => this.onStop());
    this._wireDrop();
  }

  _wireDrop() {
    let depth = 0;
    const hasFiles = (event) => [...(event.dataTransfer?.types ?? [])].includes('Files');
    window.addEventListener('dragenter', (event) => {
      if (!hasFiles(event) || !this.enabled) return;
      depth += 1;
      this.dropOverlay.hidden = false;
    });
    window.addEventListener('dragleave', (event) => {
      if (!hasFiles(event)) return;
      depth = Math.max(0, depth - 1);
      if (depth === 0) this.dropOverlay.hidden = true;
    });
    window.addEventListener('dragover', (event) => {
      if (hasFiles(event)) event.preventDefault(); // allow dropping
    });
    window.addEventListener('drop', (event) => {
      if (!hasFiles(event)) return;
      event.preventDefault();
      depth = 0;
      this.dropOverlay.hidden = true;
      if (this.enabled) this.addFiles([...event.dataTransfer.files]);
    });
  }

  _autosize() {
    this.input.style.height = 'auto';
    this.input.style.height = `${Math.min(this.input.scrollHeight, MAX_INPUT_HEIGHT_PX)}px`;
  }

  _updateSend() {
    this.sendButton.disabled = !this.enabled || (!this.input.value.trim() && this.attachments.length === 0);
  }
}

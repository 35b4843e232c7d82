// Copying text to the clipboard from a button, with feedback on the button itself.
// navigator.clipboard needs a secure context (https, or localhost); a page served over plain
// http on a LAN address falls back to the older selection-and-execCommand way.

const FEEDBACK_MS = 2000;

async function writeClipboard(text) {
  if (globalThis.isSecureContext && navigator.clipboard?.writeText) {
    await navigator.clipboard.writeText(text);
    return;
  }
  const area = document.createElement('textarea');
  area.value = text;
  area.setAttribute('readonly', '');
  area.className = 'copy-buffer';
  document.body.append(area);
  area.select();
  try {
    if (!document.execCommand('copy')) throw new Error('copy refused');
  } finally {
    area.remove();
  }
}

/**
 * Copy `text` when `button` is pressed; the button shows `doneLabel` for a moment and carries
 * data-copied="true" from then on ("false" when the browser refused).
 */
export async function copyFromButton(button, text, { label, doneLabel, failedLabel }) {
  let ok = true;
  try {
    await writeClipboard(text);
  } catch {
    ok = false;
  }
  button.dataset.copied = String(ok);
  const shown = button.querySelector('.copy-label') ?? button;
  shown.textContent = ok ? doneLabel : failedLabel;
  clearTimeout(button.copyTimer);
  button.copyTimer = setTimeout(() => {
    shown.textContent = label;
  }, FEEDBACK_MS);
  return ok;
}

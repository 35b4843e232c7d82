// The sign-in step when the server runs with auth "jwt". The user pastes a token; it is POSTed
// once to /api/auth/session, which answers with an httpOnly session cookie. The token is never
// written to localStorage or sessionStorage, and the field is cleared as soon as it was sent.

import { api } from './api.js';
import { errorText, t } from './i18n.js';

export function askToSignIn(dialog) {
  const form = dialog.querySelector('form');
  const field = dialog.querySelector('textarea');
  const error = dialog.querySelector('.auth-error');
  const submit = dialog.querySelector('button[type="submit"]');
  error.hidden = true;
  if (!dialog.open) dialog.showModal();
  field.focus();

  return new Promise((resolve) => {
    const onCancel = (event) => event.preventDefault(); // nothing works without a session
    const onSubmit = async (event) => {
      event.preventDefault();
      const token = field.value.trim();
      if (!token) return;
      submit.disabled = true;
      submit.textContent = t('auth.working');
      try {
        await api.signIn(token);
        field.value = '';
        dialog.close();
        form.removeEventListener('submit', onSubmit);
        dialog.removeEventListener('cancel', onCancel);
        resolve();
      } catch (failure) {
        error.textContent = t('auth.failed', { msg: failure.message || errorText(failure.code) });
        error.hidden = false;
        field.select();
      } finally {
        submit.disabled = false;
        submit.textContent = t('auth.submit');
      }
    };
    form.addEventListener('submit', onSubmit);
    dialog.addEventListener('cancel', onCancel);
  });
}

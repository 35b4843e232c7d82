// The sign-in step when the server runs with auth "jwt". The user pastes a token, or, when the
// server names an OpenID Connect / OAuth 2 provider ([auth.oidc], see oidc.js), signs in there
// and comes back with one. Either way the token is POSTed once to /api/auth/session, which
// answers with an httpOnly session cookie. The token is never written to localStorage or
// sessionStorage, and the field is cleared as soon as it was sent.

import { api } from './api.js';
import { errorText, t } from './i18n.js';
import * as oidc from './oidc.js';

/** The provider's name for the button: its configured label, else its host. */
function providerName(settings) {
  if (settings.name) return settings.name;
  try {
    return new URL(settings.issuer || settings.authorization_endpoint).host;
  } catch {
    return 'SSO';
  }
}

/**
 * When this page load is the provider sending the browser back, finish signing in there.
 * Returns null when there was nothing to finish or it worked, else the text of the failure
 * (shown in the sign-in dialog).
 */
export async function finishProviderSignIn(config) {
  if (!config.oidc || !oidc.isCallback()) return null;
  try {
    await api.signIn(await oidc.finish(config.oidc));
    return null;
  } catch (failure) {
    return t('auth.oidcFailed', { name: providerName(config.oidc), msg: failure.message || errorText(failure.code) });
  }
}

export function askToSignIn(dialog, { config = {}, failure = null } = {}) {
  const form = dialog.querySelector('form');
  const field = dialog.querySelector('textarea');
  const error = dialog.querySelector('.auth-error');
  const submit = dialog.querySelector('button[type="submit"]');
  const provider = dialog.querySelector('.oidc');
  const providerButton = dialog.querySelector('.oidc-signin');
  error.hidden = !failure;
  error.textContent = failure ?? '';
  provider.hidden = !config.oidc;
  if (config.oidc) {
    providerButton.textContent = t('auth.oidc', { name: providerName(config.oidc) });
    providerButton.onclick = async () => {
      providerButton.disabled = true;
      providerButton.textContent = t('auth.redirecting');
      try {
        await oidc.start(config.oidc);
      } catch (startFailure) {
        providerButton.disabled = false;
        providerButton.textContent = t('auth.oidc', { name: providerName(config.oidc) });
        error.textContent = t('auth.oidcFailed', { name: providerName(config.oidc), msg: startFailure.message });
        error.hidden = false;
      }
    };
  }
  if (!dialog.open) dialog.showModal();
  (config.oidc ? providerButton : field).focus();

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

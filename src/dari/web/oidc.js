// Signing in with an OpenID Connect / OAuth 2 provider: the authorization code flow with PKCE
// (RFC 7636) for a public client, done in the browser.
//
//   1. start(): make a random code verifier, state and nonce; keep them in sessionStorage (this
//      tab only) and go to the provider's authorization endpoint with the verifier's SHA-256
//      (code_challenge, S256).
//   2. The provider sends the browser back to redirect_path with ?code=…&state=….
//   3. finish(): check that state is the one this tab made (a code from someone else's sign-in
//      is refused), exchange the code and the verifier at the token endpoint, and hand the
//      token to the caller, which gives it to dari's /api/auth/session as a pasted token is.
//
// The settings come from GET /api/config (`oidc`), which the server fills from [auth.oidc].

const PENDING_KEY = 'dari.oidc.pending';

function base64url(bytes) {
  let text = '';
  for (const byte of bytes) text += String.fromCharCode(byte);
  return btoa(text).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

function randomString(bytes = 32) {
  return base64url(crypto.getRandomValues(new Uint8Array(bytes)));
}

export async function codeChallenge(verifier) {
  const digest = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(verifier));
  return base64url(new Uint8Array(digest));
}

export function redirectUri(oidc) {
  return new URL(oidc.redirect_path || '/', location.origin).href;
}

/** Go to the provider to sign in. Never returns normally (the page navigates away). */
export async function start(oidc) {
  if (!globalThis.isSecureContext || !crypto.subtle) throw new Error('signing in with a provider needs https (or localhost)');
  const pending = {
    verifier: randomString(32), // 43 characters, the minimum RFC 7636 allows
    state: randomString(16),
    nonce: randomString(16),
    redirectUri: redirectUri(oidc),
    returnTo: location.hash, // the conversation to come back to
  };
  sessionStorage.setItem(PENDING_KEY, JSON.stringify(pending));
  const url = new URL(oidc.authorization_endpoint);
  const params = {
    ...(oidc.extra_params ?? {}),
    response_type: 'code',
    client_id: oidc.client_id,
    redirect_uri: pending.redirectUri,
    scope: (oidc.scopes ?? ['openid']).join(' '),
    state: pending.state,
    nonce: pending.nonce,
    code_challenge: await codeChallenge(pending.verifier),
    code_challenge_method: 'S256',
  };
  for (const [name, value] of Object.entries(params)) url.searchParams.set(name, value);
  location.assign(url.href);
}

/** True when this page load is the provider sending the browser back. */
export function isCallback() {
  const params = new URLSearchParams(location.search);
  return params.has('state') && (params.has('code') || params.has('error'));
}

/**
 * Finish a sign-in the provider sent us back from: returns the token to use with dari.
 * Throws with a message for people when the provider refused, the state does not match or
 * the exchange fails. The address loses its ?code=… either way.
 */
export async function finish(oidc) {
  const params = new URLSearchParams(location.search);
  let pending = null;
  try {
    pending = JSON.parse(sessionStorage.getItem(PENDING_KEY) ?? 'null');
  } catch {
    pending = null;
  }
  sessionStorage.removeItem(PENDING_KEY); // a code and its verifier are used once
  history.replaceState(null, '', `${location.pathname}${pending?.returnTo ?? ''}`);

  if (params.get('error')) throw new Error(params.get('error_description') || params.get('error'));
  if (!pending || params.get('state') !== pending.state) throw new Error('the sign-in answer does not belong to this tab (state mismatch)');

  let response;
  try {
    response = await fetch(oidc.token_endpoint, {
      method: 'POST',
      headers: { 'Content-Type': 'application/x-www-form-urlencoded', Accept: 'application/json' },
      body: new URLSearchParams({
        grant_type: 'authorization_code',
        code: params.get('code') ?? '',
        redirect_uri: pending.redirectUri,
        client_id: oidc.client_id,
        code_verifier: pending.verifier,
      }),
    });
  } catch (error) {
    throw new Error(`the token endpoint could not be reached (${error.message})`);
  }
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(data.error_description || data.error || `token endpoint answered ${response.status}`);
  const field = oidc.token === 'id_token' ? 'id_token' : 'access_token';
  const token = data[field];
  if (typeof token !== 'string' || !token) throw new Error(`the provider sent no ${field}`);
  if (data.id_token && !nonceMatches(data.id_token, pending.nonce)) throw new Error('the ID token was not issued for this sign-in (nonce mismatch)');
  return token;
}

/** The ID token's nonce claim (its signature is dari's server's to check, not the page's). */
function nonceMatches(idToken, nonce) {
  try {
    const payload = idToken.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const claims = JSON.parse(atob(payload.padEnd(Math.ceil(payload.length / 4) * 4, '=')));
    return claims.nonce === undefined || claims.nonce === nonce;
  } catch {
    return false;
  }
}

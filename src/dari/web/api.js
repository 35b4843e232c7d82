// The REST calls the UI makes. Paths are relative to the page so the UI also works when the
// server is mounted under a prefix. Errors become ApiError with the server's stable code.

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

const base = new URL('./', globalThis.location?.href ?? 'http://localhost/');

async function request(path, { method = 'GET', body } = {}) {
  let response;
  try {
    response = await fetch(new URL(path, base), {
      method,
      credentials: 'same-origin',
      headers: body === undefined ? { Accept: 'application/json' } : { Accept: 'application/json', 'Content-Type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (error) {
    throw new ApiError(0, 'network', String(error?.message ?? error));
  }
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    const error = data?.error ?? {};
    const fallbackCode = { 401: 'unauthorized', 403: 'forbidden', 404: 'not_found', 413: 'too_large' }[response.status] ?? 'internal';
    throw new ApiError(response.status, error.code ?? fallbackCode, error.message ?? (data?.detail ? String(data.detail) : response.statusText));
  }
  return data;
}

const seg = encodeURIComponent;

export const api = {
  config: () => request('api/config'),
  projects: () => request('api/projects'),
  startAgent: (projectId, agentName) => request(`api/projects/${seg(projectId)}/agents/${seg(agentName)}/start`, { method: 'POST' }),
  messages: ({ projectId, agentName, threadId, limit = 50, before }) => {
    const query = new URLSearchParams({ limit: String(limit) });
    if (before !== undefined && before !== null) query.set('before', String(before));
    return request(`api/projects/${seg(projectId)}/agents/${seg(agentName)}/threads/${seg(threadId)}/messages?${query}`);
  },
  // The user's conversations, newest activity first; `before` is the previous page's `next`.
  threads: ({ limit = 50, before } = {}) => {
    const query = new URLSearchParams({ limit: String(limit) });
    if (before !== undefined && before !== null) query.set('before', String(before));
    return request(`api/threads?${query}`);
  },
  renameThread: ({ projectId, agentName, threadId }, title) =>
    request(`api/projects/${seg(projectId)}/agents/${seg(agentName)}/threads/${seg(threadId)}`, { method: 'PATCH', body: { title } }),
  deleteThread: ({ projectId, agentName, threadId }) =>
    request(`api/projects/${seg(projectId)}/agents/${seg(agentName)}/threads/${seg(threadId)}`, { method: 'DELETE' }),
  // The token goes to the server once; the session lives in an httpOnly cookie.
  signIn: (token) => request('api/auth/session', { method: 'POST', body: { token } }),
  signOut: () => request('api/auth/session', { method: 'DELETE' }),
};

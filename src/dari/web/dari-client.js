/**
 * dari-client.js — WebSocket client for the dari gateway (wire protocol v1).
 *
 * An ES module with no dependencies. It runs in browsers and in any runtime that has a
 * WHATWG WebSocket (pass `WebSocket` in the options otherwise). The chat UI is built on it,
 * but it does not need the UI.
 *
 *   import { DariClient } from './dari-client.js';
 *
 *   const client = new DariClient();              // ws(s)://<this host>/ws/chat/<tab id>
 *   client.on('start',    (f) => console.log('answer', f.request_id, 'started'));
 *   client.on('response', (f) => out.append(f.content));
 *   client.on('end',      (f) => console.log('finished:', f.finish_reason));
 *   client.on('state',    (s) => console.log('connection is', s.state));
 *   client.connect();
 *
 *   const id = client.chat({ projectId: 'project_001', agentName: '집사', message: '안녕하세요' });
 *   client.cancel(id);                            // the chat's id is its request_id
 *
 * What it does for you
 *   - client id: one per browser tab, kept in sessionStorage (`tabClientId`, or
 *     `claimTabClientId` which also notices a duplicated tab and takes a fresh id);
 *   - seq bookkeeping (docs/PROTOCOL.md section 5): on `welcome` position := welcome.seq; a frame with
 *     seq <= position was already seen and is dropped; seq == position + 1 is delivered; a larger
 *     seq is a gap and the client reconnects with last_seq=position;
 *   - resume: reconnects carry `last_seq` and `epoch`; if the server cannot resume, a `resync`
 *     event tells the application to reload finished messages (answers still running come back
 *     as `snapshot` frames) and subscriptions are sent again;
 *   - chats are kept until their `ack` (or an `error` naming them, except `shutting_down`) and
 *     resent with the same id after a reconnect, so the server runs each exactly once;
 *   - JSON `ping` every few seconds; no frame within `pongTimeoutMs` means a dead link;
 *   - reconnects with exponential back-off and jitter, except after close codes 1000, 4401,
 *     4403 (final) and 4409 (another connection with this client id replaced this one). A 4409
 *     within twice the handshake timeout of a handshake this client gave up on (no welcome) may
 *     be that handshake arriving late through a slow proxy: then it reconnects.
 *
 * Options (all optional)
 *   url              base WebSocket URL without the client id (default: same origin + /ws/chat)
 *   clientId         default: tabClientId()
 *   token            sent as the `token` query parameter (browsers normally use the cookie)
 *   WebSocket        WebSocket constructor (default: globalThis.WebSocket)
 *   pingIntervalMs   default: half of welcome.heartbeat_s, between 5 and 25 seconds
 *   pongTimeoutMs    default 10000
 *   backoff          { initialMs: 500, maxMs: 15000, factor: 2 }
 *   offlineAfter     failed attempts before the state says `offline` instead of `reconnecting` (3)
 *   maxResends       times one unacknowledged chat is sent before giving up on it (5)
 *   maxMessageBytes  refuse to send larger frames (default: no limit; the UI sets it from /api/config)
 *   handshakeTimeoutMs  time allowed from opening the socket to `welcome` (default 15000)
 *
 * Events — `client.on(name, fn)` returns an unsubscribe function; the client is also an
 * EventTarget whose events carry the payload in `event.detail`.
 *   <frame type>   every server frame by its type: welcome, ack, start, response, step, end,
 *                  snapshot, history, auto_report, broadcast, error, pong, subscribed, unsubscribed
 *   frame          every delivered frame, in order
 *   state          { state, code, reason, attempt, retryInMs }; states: idle, connecting,
 *                  connected, reconnecting, offline, closed, unauthorized, forbidden, replaced
 *   resync         { reason } the server could not resume: reload finished messages
 *   chat_dropped   { id, frame, reason } an unacknowledged chat the client gave up on
 *
 * Methods
 *   connect(), close(), reconnectNow()
 *   chat({ projectId, agentName, message, threadId = 'main', images = [], id }) -> id
 *   cancel(requestId) | cancel({ projectId, agentName, threadId })
 *   requestHistory({ projectId, agentName, threadId, limit, before })
 *   subscribe({ projectId, agentName, threadId }), unsubscribe(...)
 *   send(frame) -> true if written now, false if queued until the next connection
 */

const FINAL_CLOSE = { 1000: 'closed', 4401: 'unauthorized', 4403: 'forbidden', 4409: 'replaced' };
const CLIENT_ID_KEY = 'dari.client_id';
const ID_CHANNEL = 'dari.client_ids';

/** A random id that also works outside secure contexts (crypto.randomUUID needs https). */
export function newId(prefix = '') {
  const bytes = new Uint8Array(16);
  globalThis.crypto.getRandomValues(bytes);
  return prefix + Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

function sessionStore() {
  try {
    return globalThis.sessionStorage ?? null;
  } catch {
    return null; // storage can be blocked by privacy settings
  }
}

/** This tab's client id: stable across reloads, different in every tab. */
export function tabClientId(storage = sessionStore(), key = CLIENT_ID_KEY) {
  let id = storage?.getItem(key);
  if (!id || !/^[A-Za-z0-9._:-]{1,128}$/.test(id)) {
    id = newId('web-');
    storage?.setItem(key, id);
  }
  return id;
}

let idChannel = null;

/**
 * Like tabClientId, but a duplicated tab (which inherits a copy of sessionStorage) notices that
 * another open tab holds the id and takes a new one instead of replacing the other tab (4409).
 */
export async function claimTabClientId({ storage = sessionStore(), key = CLIENT_ID_KEY, waitMs = 150 } = {}) {
  let id = tabClientId(storage, key);
  if (typeof BroadcastChannel === 'undefined') return id;
  idChannel ??= new BroadcastChannel(ID_CHANNEL);
  const taken = await new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), waitMs);
    idChannel.onmessage = (event) => {
      if (event.data?.type === 'taken' && event.data.id === id) {
        clearTimeout(timer);
        resolve(true);
      }
    };
    idChannel.postMessage({ type: 'probe', id });
  });
  if (taken) {
    id = newId('web-');
    storage?.setItem(key, id);
  }
  // From now on, answer other tabs that ask about this id.
  idChannel.onmessage = (event) => {
    if (event.data?.type === 'probe' && event.data.id === id) idChannel.postMessage({ type: 'taken', id });
  };
  return id;
}

function defaultUrl() {
  const loc = globalThis.location;
  if (!loc) throw new Error('DariClient: pass { url } outside a browser');
  return `${loc.protocol === 'https:' ? 'wss' : 'ws'}://${loc.host}/ws/chat`;
}

function byteLength(text) {
  return new TextEncoder().encode(text).length;
}

export class DariClient extends EventTarget {
  constructor(options = {}) {
    super();
    this.url = (options.url ?? defaultUrl()).replace(/\/+$/, '');
    this.clientId = options.clientId ?? tabClientId();
    this.token = options.token ?? null;
    this.WebSocketImpl = options.WebSocket ?? globalThis.WebSocket;
    this.pingIntervalMs = options.pingIntervalMs ?? null;
    this.pongTimeoutMs = options.pongTimeoutMs ?? 10_000;
    this.backoff = { initialMs: 500, maxMs: 15_000, factor: 2, ...options.backoff };
    this.offlineAfter = options.offlineAfter ?? 3;
    this.maxResends = options.maxResends ?? 5;
    this.maxMessageBytes = options.maxMessageBytes ?? Infinity;
    this.handshakeTimeoutMs = options.handshakeTimeoutMs ?? 15_000;

    this.state = 'idle';
    this.position = null; // last seq delivered; null until the first welcome
    this.epoch = null;
    this.heartbeatS = 20;
    this.serverVersion = null;

    this._ws = null;
    this._ready = false; // welcome seen on the current socket
    // Until when a handshake given up on may still reach a server and replace us (4409).
    this._orphansUntil = 0;
    this._wanted = false; // the application wants a connection
    this._attempt = 0;
    this._pending = new Map(); // chat id -> { frame, sends }
    this._outbox = []; // other frames written while disconnected
    this._subscriptions = new Map(); // key -> subscribe frame, re-sent after a lost resume
    this._timers = {};
    this._onOnline = () => this.reconnectNow();
    globalThis.addEventListener?.('online', this._onOnline);
  }

  // --- public API -------------------------------------------------------------------------

  on(name, fn) {
    const listener = (event) => fn(event.detail);
    this.addEventListener(name, listener);
    return () => this.removeEventListener(name, listener);
  }

  get connected() {
    return this._ready;
  }

  connect() {
    this._wanted = true;
    if (!this._ws) this._open();
  }

  /** Close for good (code 1000); call connect() to start again. */
  close() {
    this._wanted = false;
    this._clearTimers();
    const ws = this._ws;
    this._detach();
    try {
      ws?.close(1000, 'client closed');
    } catch {
      /* already closed */
    }
    this._setState('closed', { code: 1000 });
  }

  /** Skip the back-off wait (e.g. the user pressed "retry" or the network came back). */
  reconnectNow() {
    if (!this._wanted || this._ws) return;
    clearTimeout(this._timers.retry);
    this._open();
  }

  chat({ projectId, agentName, message, threadId = 'main', images = [], id = newId('m-') }) {
    const frame = {
      type: 'chat',
      id,
      message,
      agent_name: agentName,
      project_id: projectId,
      thread_id: threadId,
      images,
    };
    this._checkSize(frame);
    this._pending.set(id, { frame, sends: 0 });
    if (this._ready) this._sendPending(id);
    return id;
  }

  cancel(target) {
    const frame =
      typeof target === 'string'
        ? { type: 'cancel', request_id: target }
        : { type: 'cancel', project_id: target.projectId, agent_name: target.agentName, thread_id: target.threadId ?? 'main' };
    if (frame.request_id && this._pending.has(frame.request_id) && this._pending.get(frame.request_id).sends === 0) {
      // Never sent: nothing to cancel on the server.
      this._pending.delete(frame.request_id);
      return true;
    }
    return this.send(frame);
  }

  requestHistory({ projectId, agentName, threadId = 'main', limit = 50, before }) {
    const frame = { type: 'history', project_id: projectId, agent_name: agentName, thread_id: threadId, limit };
    if (before !== undefined) frame.before = before;
    return this.send(frame);
  }

  subscribe({ projectId, agentName, threadId = 'main' }) {
    const frame = subscriptionFrame('subscribe', projectId, agentName, threadId);
    this._subscriptions.set(subscriptionKey(frame), frame);
    return this.send(frame);
  }

  unsubscribe({ projectId, agentName, threadId = 'main' }) {
    const frame = subscriptionFrame('unsubscribe', projectId, agentName, threadId);
    this._subscriptions.delete(subscriptionKey(frame));
    return this.send(frame);
  }

  send(frame) {
    this._checkSize(frame);
    if (this._ready && this._write(frame)) return true;
    this._outbox.push(frame);
    return false;
  }

  // --- connection lifecycle ---------------------------------------------------------------

  _open() {
    this._clearTimers();
    const params = new URLSearchParams();
    this._askedResume = this.position !== null;
    if (this._askedResume) {
      params.set('last_seq', String(this.position));
      if (this.epoch) params.set('epoch', this.epoch);
    }
    if (this.token) params.set('token', this.token);
    const query = params.toString();
    const url = `${this.url}/${encodeURIComponent(this.clientId)}${query ? `?${query}` : ''}`;
    this._setState(this.position === null && this._attempt === 0 ? 'connecting' : this._retryState());

    let ws;
    try {
      ws = new this.WebSocketImpl(url);
    } catch (error) {
      this._scheduleReconnect({ reason: String(error) });
      return;
    }
    this._ws = ws;
    this._ready = false;
    ws.onmessage = (event) => this._onMessage(ws, event);
    ws.onclose = (event) => this._onClose(ws, event);
    ws.onerror = () => {}; // a close event follows
    this._timers.handshake = setTimeout(() => this._drop(ws, 'handshake_timeout'), this.handshakeTimeoutMs);
  }

  _onMessage(ws, event) {
    if (ws !== this._ws) return;
    let frame;
    try {
      frame = JSON.parse(event.data);
    } catch {
      return; // not ours to interpret
    }
    if (!frame || typeof frame !== 'object') return;
    this._alive();

    if (frame.type === 'welcome') {
      this._onWelcome(frame);
      return;
    }
    const seq = frame.seq;
    if (typeof seq === 'number' && this.position !== null) {
      if (seq <= this.position) return; // seen before (replayed after a resume)
      if (seq !== this.position + 1) {
        this._drop(ws, 'gap'); // resume from the last frame we have
        return;
      }
      this.position = seq;
    } else if (typeof seq === 'number') {
      this.position = seq;
    }
    this._track(frame);
    this._emit(frame.type, frame);
    this._emit('frame', frame);
  }

  _onWelcome(frame) {
    clearTimeout(this._timers.handshake);
    if (typeof frame.seq === 'number') this.position = frame.seq;
    this.epoch = typeof frame.epoch === 'string' ? frame.epoch : null;
    this.heartbeatS = typeof frame.heartbeat_s === 'number' ? frame.heartbeat_s : this.heartbeatS;
    this.serverVersion = frame.server_version ?? this.serverVersion;
    this._ready = true;
    this._attempt = 0;
    this._setState('connected');
    this._emit('welcome', frame);
    this._emit('frame', frame);
    if (!frame.resumed) {
      // Subscriptions may be gone with the server's log; ask again (idempotent).
      for (const sub of this._subscriptions.values()) this._write(sub);
      if (this._askedResume) this._emit('resync', { reason: frame.reason ?? 'not_resumed' });
    }
    for (const id of [...this._pending.keys()]) this._sendPending(id);
    const outbox = this._outbox.splice(0);
    for (const queued of outbox) this._write(queued);
    this._startPing();
  }

  _onClose(ws, event) {
    if (ws !== this._ws) return;
    const lateOwnHandshake = event.code === 4409 && Date.now() < this._orphansUntil;
    this._detach();
    const code = event.code;
    const final = lateOwnHandshake ? null : FINAL_CLOSE[code];
    if (final) {
      this._wanted = false;
      this._setState(final, { code, reason: event.reason });
      return;
    }
    if (code === 1009) this._dropOversizedPending();
    this._scheduleReconnect({ code, reason: event.reason });
  }

  /** Abandon a socket we no longer trust (dead link, gap, handshake timeout) and reconnect. */
  _drop(ws, reason) {
    if (ws !== this._ws) return;
    this._detach();
    try {
      ws.close(4000, reason);
    } catch {
      /* closing a dead socket may throw */
    }
    this._scheduleReconnect({ reason });
  }

  _detach() {
    const ws = this._ws;
    if (ws && !this._ready) this._orphansUntil = Date.now() + 2 * this.handshakeTimeoutMs;
    if (ws) ws.onmessage = ws.onclose = ws.onerror = null;
    this._ws = null;
    this._ready = false;
    this._clearTimers();
  }

  _scheduleReconnect(detail = {}) {
    if (!this._wanted) return;
    const { initialMs, maxMs, factor } = this.backoff;
    const ceiling = Math.min(maxMs, initialMs * factor ** this._attempt);
    const delay = Math.round(ceiling / 2 + (Math.random() * ceiling) / 2); // "equal jitter"
    this._attempt += 1;
    this._setState(this._retryState(), { ...detail, attempt: this._attempt, retryInMs: delay });
    this._timers.retry = setTimeout(() => this._open(), delay);
  }

  _retryState() {
    const browserOffline = globalThis.navigator?.onLine === false;
    return browserOffline || this._attempt > this.offlineAfter ? 'offline' : 'reconnecting';
  }

  // --- heartbeat --------------------------------------------------------------------------

  _startPing() {
    const every = this.pingIntervalMs ?? Math.min(25_000, Math.max(5_000, (this.heartbeatS * 1000) / 2));
    clearInterval(this._timers.ping);
    this._timers.ping = setInterval(() => {
      if (!this._ready) return;
      this._write({ type: 'ping', ts: Date.now() });
      if (!this._timers.pong) {
        const ws = this._ws;
        this._timers.pong = setTimeout(() => this._drop(ws, 'pong_timeout'), this.pongTimeoutMs);
      }
    }, every);
  }

  /** Any frame proves the link works, not only `pong`. */
  _alive() {
    clearTimeout(this._timers.pong);
    this._timers.pong = null;
  }

  // --- outgoing ---------------------------------------------------------------------------

  _sendPending(id) {
    const entry = this._pending.get(id);
    if (!entry) return;
    if (entry.sends >= this.maxResends) {
      this._pending.delete(id);
      this._emit('chat_dropped', { id, frame: entry.frame, reason: 'too_many_attempts' });
      return;
    }
    if (this._write(entry.frame)) entry.sends += 1;
  }

  _write(frame) {
    const ws = this._ws;
    if (!ws || ws.readyState !== 1) return false;
    try {
      ws.send(JSON.stringify(frame));
      return true;
    } catch {
      return false;
    }
  }

  _checkSize(frame) {
    if (this.maxMessageBytes === Infinity) return;
    const size = byteLength(JSON.stringify(frame));
    if (size > this.maxMessageBytes) {
      const error = new Error(`frame is ${size} bytes; the limit is ${this.maxMessageBytes}`);
      error.code = 'too_large';
      error.size = size;
      error.limit = this.maxMessageBytes;
      throw error;
    }
  }

  _dropOversizedPending() {
    // 1009: the server refused a frame as too big. Resending it would loop forever.
    for (const [id, entry] of this._pending) {
      if (entry.sends > 0 && byteLength(JSON.stringify(entry.frame)) > 64 * 1024) {
        this._pending.delete(id);
        this._emit('chat_dropped', { id, frame: entry.frame, reason: 'too_large' });
      }
    }
  }

  /** Bookkeeping for chats in flight. */
  _track(frame) {
    if (frame.type === 'ack') {
      this._pending.delete(frame.id ?? frame.request_id);
    } else if (frame.type === 'error' && frame.request_id && frame.code !== 'shutting_down') {
      // Refused: resending would be refused again. A draining node's refusal is the
      // exception: it closes with 1012 next, and the chat goes again on the next connection.
      this._pending.delete(frame.request_id);
    }
  }

  // --- helpers ----------------------------------------------------------------------------

  _clearTimers() {
    clearTimeout(this._timers.retry);
    clearTimeout(this._timers.handshake);
    clearTimeout(this._timers.pong);
    clearInterval(this._timers.ping);
    this._timers = {};
  }

  _setState(state, detail = {}) {
    this.state = state;
    this._emit('state', { state, attempt: this._attempt, ...detail });
  }

  _emit(name, detail) {
    this.dispatchEvent(new CustomEvent(name, { detail }));
  }
}

function subscriptionFrame(type, projectId, agentName, threadId) {
  const frame = { type, project_id: projectId };
  if (agentName) Object.assign(frame, { agent_name: agentName, thread_id: threadId });
  return frame;
}

function subscriptionKey(frame) {
  return [frame.project_id, frame.agent_name ?? '', frame.thread_id ?? ''].join('\u0000');
}

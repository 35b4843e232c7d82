// The chat page: loads the configuration and the projects, signs in when the server asks for
// it, connects one DariClient for this tab and routes its frames to the conversations.
// Conversations once opened stay in memory and keep receiving frames, so switching agents
// and coming back never loses an answer in progress.

import { askToSignIn, finishProviderSignIn } from './auth.js';
import { api } from './api.js';
import { Composer } from './composer.js';
import { Conversation, conversationKey, frameConversationKey } from './conversation.js';
import { DariClient, claimTabClientId, newId } from './dari-client.js';
import { errorText, t, translatePage } from './i18n.js';
import { noteRefusal } from './interrupt-cards.js';
import { MessagesView } from './messages-view.js';
import { Notices } from './notices.js';
import { conversationHash, parseConversationHash, renderSidebar } from './sidebar.js';
import { ThreadList } from './threads-list.js';

const $ = (id) => document.getElementById(id);
const HISTORY_LIMIT = 50;
const LAST_OPENED_KEY = 'dari.last_conversation';

// Remembering the last conversation is a convenience; storage may be blocked by the browser.
const remember = {
  get: () => {
    try {
      return sessionStorage.getItem(LAST_OPENED_KEY);
    } catch {
      return null;
    }
  },
  set: (value) => {
    try {
      sessionStorage.setItem(LAST_OPENED_KEY, value);
    } catch {
      /* not remembered */
    }
  },
};

const app = {
  config: null,
  projects: [],
  client: null,
  conversations: new Map(), // conversation key -> Conversation (opened in this page)
  current: null,
  unread: new Map(), // "project\0agent" -> count of answers started while not shown
  requestConversation: new Map(), // request_id -> conversation key, to route error frames
  historyTimers: new Map(),
};

const notices = new Notices({ banners: $('banners'), toasts: $('toasts') });

const view = new MessagesView({
  list: $('messages'),
  scroller: $('scroller'),
  empty: $('empty'),
  jumpButton: $('jump'),
  olderButton: $('older'),
  onLoadOlder: () => loadOlder(app.current),
  onOpenImage: openLightbox,
  onRegenerate: regenerate,
  onResume: (interruptId, value) => app.client?.send({ type: 'resume', interrupt_id: interruptId, value }),
});

const threadList = new ThreadList({
  list: $('thread-list'),
  more: $('threads-more'),
  search: $('thread-search'),
  confirmDialog: $('confirm-delete'),
  notices,
  onNavigate: () => closeNav(),
  onDeleted: forgetConversation,
  onChange: () => app.current && showHeader(app.current),
});

const composer = new Composer(
  {
    form: $('composer'),
    input: $('input'),
    label: $('input-label'),
    fileInput: $('file-input'),
    attachButton: $('attach'),
    sendButton: $('send'),
    stopButton: $('stop'),
    attachmentsEl: $('attachments'),
    errorEl: $('composer-error'),
    dropOverlay: $('drop-overlay'),
  },
  { onSend: sendChat, onStop: stopAnswer },
);

// --- start-up ---------------------------------------------------------------------------------

async function main() {
  translatePage();
  wireChrome();
  try {
    app.config = await api.config();
  } catch (error) {
    showFatal(t('fatal.config', { msg: error.message }));
    return;
  }
  composer.setLimits({
    maxImageBytes: app.config.max_image_bytes,
    maxMessageBytes: app.config.max_message_bytes,
    maxImages: app.config.max_images,
  });
  $('version').textContent = app.config.server_version ? `dari ${app.config.server_version}` : '';
  $('sign-out').hidden = app.config.auth !== 'jwt';

  app.signInFailure = await finishProviderSignIn(app.config);
  if (!(await loadProjects())) return;

  const clientId = await claimTabClientId();
  app.client = new DariClient({ clientId, maxMessageBytes: app.config.max_message_bytes ?? Infinity });
  wireClient(app.client);
  app.client.connect();

  window.addEventListener('hashchange', openFromAddress);
  openFromAddress();
}

/** Fetch projects (signing in first if needed). Returns false if the page cannot go on. */
async function loadProjects() {
  for (;;) {
    try {
      app.projects = await api.projects();
      $('nav').removeAttribute('aria-busy');
      drawSidebar();
      return true;
    } catch (error) {
      if (error.status === 401 && app.config.auth === 'jwt') {
        await askToSignIn($('signin'), { config: app.config, failure: app.signInFailure });
        app.signInFailure = null;
        continue;
      }
      $('nav').replaceChildren(
        Object.assign(document.createElement('p'), { className: 'nav-note', textContent: t('nav.loadFailed', { msg: error.message }) }),
        Object.assign(document.createElement('button'), { type: 'button', className: 'btn btn-small', textContent: t('nav.retry'), onclick: () => location.reload() }),
      );
      return false;
    }
  }
}

async function refreshProjects() {
  try {
    app.projects = await api.projects();
    drawSidebar();
    if (app.current) showHeader(app.current);
  } catch {
    /* keep the list we have */
  }
}

function findAgent({ projectId, agentName }) {
  const project = app.projects.find((p) => p.id === projectId);
  return project ? { project, agent: project.agents?.find((a) => a.name === agentName) } : {};
}

function defaultTarget() {
  const preferred = { projectId: app.config.default_project, agentName: app.config.default_agent, threadId: 'main' };
  if (findAgent(preferred).agent) return preferred;
  for (const project of app.projects) {
    const agent = project.agents?.find((a) => a.running) ?? project.agents?.[0];
    if (agent) return { projectId: project.id, agentName: agent.name, threadId: 'main' };
  }
  return null;
}

function openFromAddress() {
  let target = parseConversationHash(location.hash);
  if (!target || !findAgent(target).agent) {
    const remembered = parseConversationHash(remember.get());
    target = remembered && findAgent(remembered).agent ? remembered : defaultTarget();
    if (!target) return;
    history.replaceState(null, '', conversationHash(target));
  }
  openConversation(target);
}

// --- conversations ------------------------------------------------------------------------------

function conversationFor(target) {
  const key = conversationKey(target);
  let conversation = app.conversations.get(key);
  if (!conversation) {
    conversation = new Conversation(target);
    conversation.addEventListener('update', () => conversation === app.current && updateAnswering());
    conversation.addEventListener('reset', () => conversation === app.current && updateAnswering());
    conversation.addEventListener('need-history', () => scheduleHistory(conversation));
    app.conversations.set(key, conversation);
  }
  return conversation;
}

function openConversation(target) {
  const conversation = conversationFor(target);
  if (conversation === app.current) return;
  app.current = conversation;
  remember.set(conversationHash(target));
  app.unread.delete(`${target.projectId}\u0000${target.agentName}`);
  view.show(conversation, { loading: !conversation.historyLoaded });
  showHeader(conversation);
  drawSidebar();
  threadList.setCurrent(target);
  updateAnswering();
  closeNav();
  composer.focus();
  app.client.subscribe(target);
  scheduleHistory(conversation, 0);
}

function showHeader(conversation) {
  const { project, agent } = findAgent(conversation);
  const running = agent?.running ?? false;
  $('agent-title').textContent = conversation.agentName;
  $('agent-sub').replaceChildren(
    Object.assign(document.createElement('span'), { className: `agent-state state-${running ? 'running' : 'stopped'}`, textContent: t(running ? 'agent.running' : 'agent.stopped') }),
    document.createTextNode(` · ${project?.name || conversation.projectId}`),
  );
  const title = threadList.titleOf(conversation);
  $('agent-sub').dataset.thread = conversation.threadId;
  if (title) $('agent-sub').append(document.createTextNode(' · '), Object.assign(document.createElement('span'), { className: 'thread-name', textContent: title }));
  $('start-agent').hidden = running || !agent;
  composer.setAgent(conversation.agentName, running);
  view.setAgentRunning(running);
  document.title = `${conversation.agentName} · dari`;
}

function drawSidebar() {
  renderSidebar($('nav'), { projects: app.projects, current: app.current, unread: app.unread, onNavigate: closeNav });
}

function updateAnswering() {
  const conversation = app.current;
  composer.setAnswering(Boolean(conversation && (conversation.streaming || conversation.inFlight.length)));
}

/** Reload a conversation's history soon (several reasons in a burst cause one request). */
function scheduleHistory(conversation, delayMs = 250) {
  clearTimeout(app.historyTimers.get(conversation.key));
  app.historyTimers.set(conversation.key, setTimeout(() => loadHistory(conversation), delayMs));
}

async function loadHistory(conversation) {
  const ticket = (conversation.historyTicket = (conversation.historyTicket ?? 0) + 1);
  try {
    const data = await api.messages({ ...conversation, limit: HISTORY_LIMIT });
    if (ticket !== conversation.historyTicket) return; // a newer request is on its way
    conversation.loadHistory(data?.messages ?? [], { limit: HISTORY_LIMIT });
  } catch (error) {
    if (ticket !== conversation.historyTicket) return;
    if (error.status === 401) return; // the connection's 4401 handling signs in again
    conversation.historyLoaded = true;
    if (conversation === app.current) {
      view.renderAll();
      notices.toast({ kind: 'error', text: t('chat.historyFailed', { msg: errorText(error.code, error.message) }) });
    }
  }
}

async function loadOlder(conversation) {
  if (!conversation?.oldestId) return;
  try {
    const data = await api.messages({ ...conversation, limit: HISTORY_LIMIT, before: conversation.oldestId });
    conversation.prependHistory(data?.messages ?? [], { limit: HISTORY_LIMIT });
  } catch (error) {
    notices.toast({ kind: 'error', text: t('chat.historyFailed', { msg: errorText(error.code, error.message) }) });
  }
}

// --- sending ------------------------------------------------------------------------------------

function sendChat({ message, images }) {
  const conversation = app.current;
  // chat() throws { code: 'too_large' } before anything is sent; the composer shows it.
  const id = app.client.chat({ ...conversation, message, images });
  app.requestConversation.set(id, conversation.key);
  conversation.addOwnChat({ id, message, images });
  view.scrollToBottom(true);
}

/** Ask the last question again, as a new chat (a new id): the new answer follows it. */
function regenerate(answer) {
  const conversation = app.current;
  const question = conversation?.questionOf(answer);
  if (!question || conversation.streaming || conversation.inFlight.length) return;
  try {
    sendChat({ message: question.content, images: question.images ?? [] });
  } catch (error) {
    notices.toast({ kind: 'error', text: errorText(error.code, error.message) });
  }
}

/** A conversation of its own with the agent on screen (the list shows it once it has a message). */
function newChat() {
  const base = app.current ?? defaultTarget();
  if (!base) return;
  location.hash = conversationHash({ projectId: base.projectId, agentName: base.agentName, threadId: newId('c-') });
  composer.focus();
}

/** A conversation was deleted: drop what this page kept of it; leave it if it was on screen. */
function forgetConversation(target) {
  const key = conversationKey(target);
  const conversation = app.conversations.get(key);
  app.conversations.delete(key);
  if (conversation) app.client.unsubscribe(target);
  if (conversation && conversation === app.current) {
    app.current = null;
    location.hash = conversationHash({ ...target, threadId: newId('c-') });
  }
}

function stopAnswer() {
  const conversation = app.current;
  const target = conversation?.streaming ?? conversation?.inFlight[0];
  if (target) app.client.cancel(target.requestId);
}

// --- frames from the server ---------------------------------------------------------------------

function wireClient(client) {
  client.on('state', showConnection);
  client.on('welcome', (frame) => {
    notices.clearBanner('connection');
    if (app.welcomed) refreshProjects(); // agents may have started or stopped meanwhile
    app.welcomed = true;
    threadList.refreshSoon(0);
    if (frame.server_version) $('version').textContent = `dari ${frame.server_version}`;
  });
  client.on('resync', () => {
    for (const conversation of app.conversations.values()) scheduleHistory(conversation, 0);
  });
  client.on('frame', onFrame);
  client.on('chat_dropped', ({ id }) => {
    const conversation = app.conversations.get(app.requestConversation.get(id));
    conversation?.markChatFailed(id, t('chat.notSent'));
  });
}

const ANSWER_FRAMES = new Set(['ack', 'start', 'response', 'reasoning', 'snapshot', 'step', 'tool', 'interrupt', 'end']);

function onFrame(frame) {
  if (ANSWER_FRAMES.has(frame.type)) {
    onAnswerFrame(frame);
  } else if (frame.type === 'error') {
    onError(frame);
  } else if (frame.type === 'auto_report') {
    onReport(frame);
  } else if (frame.type === 'broadcast') {
    notices.banner(`broadcast-${frame.seq ?? Date.now()}`, { kind: 'broadcast', title: t('banner.announcement'), text: frame.content ?? '' });
  }
}

function onAnswerFrame(frame) {
  // A chat makes its conversation the newest (or a new one); an end may too, elsewhere.
  if (frame.type === 'ack' && !frame.duplicate) threadList.refreshSoon();
  if (frame.type === 'end') {
    if (frame.project_id !== undefined) threadList.noteAnswer(frameConversationKey(frame));
    threadList.refreshSoon();
  }
  if (frame.project_id === undefined) {
    // An ack without conversation fields: route by the chat's id.
    const key = app.requestConversation.get(frame.id ?? frame.request_id);
    app.conversations.get(key)?.apply(frame);
    return;
  }
  const key = frameConversationKey(frame);
  if (frame.request_id) app.requestConversation.set(frame.request_id, key);
  const conversation = app.conversations.get(key);
  if (conversation) {
    conversation.apply(frame);
  } else if (frame.type === 'start') {
    const agentKey = `${frame.project_id}\u0000${frame.agent_name}`;
    app.unread.set(agentKey, (app.unread.get(agentKey) ?? 0) + 1);
    drawSidebar();
  }
}

function onError(frame) {
  const text = errorText(frame.code, frame.message);
  if (frame.interrupt_id) {
    noteRefusal($('messages'), frame, text); // a resume of ours came too late: on its card
    return;
  }
  const conversation = frame.request_id ? app.conversations.get(app.requestConversation.get(frame.request_id)) : null;
  const changed = conversation?.apply(frame, { errorText: text });
  if (!changed) notices.toast({ kind: 'error', text });
  if (frame.code === 'agent_not_running') refreshProjects();
}

function onReport(frame) {
  // agent_name did the work; origin_agent's conversation asked for it and keeps the report.
  const target = { projectId: frame.project_id, agentName: frame.origin_agent ?? frame.agent_name, threadId: frame.thread_id ?? 'main' };
  const conversation = app.conversations.get(conversationKey(target));
  conversation?.addReport(frame);
  threadList.refreshSoon();
  const from = frame.agent_name;
  const shown = conversation && conversation === app.current;
  notices.toast({
    kind: 'report',
    title: t('toast.report', { agent: from }),
    text: summary(frame.content),
    action: shown ? null : { label: t('toast.open'), onClick: () => (location.hash = conversationHash(target)) },
  });
}

function summary(text, max = 140) {
  const flat = String(text ?? '').replace(/[#*_`>~[\]]/g, '').replace(/\s+/g, ' ').trim();
  return flat.length > max ? `${flat.slice(0, max - 1)}…` : flat;
}

// --- connection state ---------------------------------------------------------------------------

function showConnection({ state, retryInMs }) {
  const box = $('conn');
  box.dataset.state = state;
  $('conn-label').textContent = t(`conn.${state}`);
  box.title = retryInMs ? t('conn.retryIn', { s: Math.max(1, Math.round(retryInMs / 1000)) }) : '';
  $('conn-retry').hidden = state !== 'offline';

  if (state === 'replaced') {
    // Another tab or window took this client id over: do not fight it, say so.
    notices.banner('connection', {
      kind: 'warning',
      text: t('banner.replaced'),
      dismissible: false,
      actions: [{ label: t('banner.useHere'), onClick: () => app.client.connect() }],
    });
  } else if (state === 'forbidden') {
    notices.banner('connection', { kind: 'error', text: t('banner.forbidden'), dismissible: false });
  } else if (state === 'closed') {
    notices.banner('connection', {
      kind: 'warning',
      text: t('banner.closed'),
      actions: [{ label: t('banner.reconnect'), onClick: () => app.client.connect() }],
    });
  } else if (state === 'unauthorized') {
    askToSignIn($('signin'), { config: app.config }).then(() => {
      app.client.connect();
      refreshProjects();
      threadList.refresh();
      if (app.current) scheduleHistory(app.current, 0);
    });
  }
}

// --- page chrome --------------------------------------------------------------------------------

function wireChrome() {
  $('nav-open').addEventListener('click', openNav);
  $('nav-close').addEventListener('click', closeNav);
  $('scrim').addEventListener('click', closeNav);
  document.addEventListener('keydown', (event) => {
    if (event.key === 'Escape' && document.body.classList.contains('nav-open')) closeNav();
  });
  $('conn-retry').addEventListener('click', () => app.client?.reconnectNow());
  $('start-agent').addEventListener('click', startCurrentAgent);
  $('new-chat').addEventListener('click', newChat);
  $('sign-out').addEventListener('click', async () => {
    app.client?.close();
    await api.signOut().catch(() => {});
    location.reload();
  });
}

function openNav() {
  document.body.classList.add('nav-open');
  $('scrim').hidden = false;
  $('nav-open').setAttribute('aria-expanded', 'true');
  ($('sidebar').querySelector('[aria-current="page"]') ?? $('nav-close')).focus();
}

function closeNav() {
  if (!document.body.classList.contains('nav-open')) return;
  document.body.classList.remove('nav-open');
  $('scrim').hidden = true;
  $('nav-open').setAttribute('aria-expanded', 'false');
  $('nav-open').focus();
}

async function startCurrentAgent() {
  const conversation = app.current;
  const button = $('start-agent');
  button.disabled = true;
  try {
    await api.startAgent(conversation.projectId, conversation.agentName);
    await refreshProjects();
    composer.focus();
  } catch (error) {
    notices.toast({ kind: 'error', text: t('agent.startFailed', { agent: conversation.agentName, msg: errorText(error.code, error.message) }) });
  } finally {
    button.disabled = false;
  }
}

function openLightbox(src, alt) {
  const dialog = $('lightbox');
  const img = dialog.querySelector('img');
  img.src = src;
  img.alt = alt;
  dialog.showModal();
}

function showFatal(text) {
  const box = $('fatal');
  box.replaceChildren(
    Object.assign(document.createElement('p'), { textContent: text }),
    Object.assign(document.createElement('button'), { type: 'button', className: 'btn btn-primary', textContent: t('fatal.retry'), onclick: () => location.reload() }),
  );
  box.hidden = false;
}

main();

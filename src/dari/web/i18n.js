// UI text in English and Korean. The language follows the browser (navigator.language starting
// with "ko" gives Korean); `?lang=en|ko` in the page address overrides it.

const STRINGS = {
  en: {
    'app.tagline': 'Chat with your agents',
    'app.skip': 'Skip to the message box',
    'nav.open': 'Show projects and agents',
    'nav.close': 'Hide projects and agents',
    'nav.label': 'Projects and agents',
    'nav.loading': 'Loading projects…',
    'nav.empty': 'No projects are available to you.',
    'nav.loadFailed': 'Could not load projects: {msg}',
    'nav.retry': 'Try again',
    'agent.running': 'running',
    'agent.stopped': 'stopped',
    'agent.start': 'Start agent',
    'agent.startFailed': 'Could not start {agent}: {msg}',
    'agent.stoppedNotice': '{agent} is stopped. Start it to chat.',
    'agent.unread': '{n} new',
    'conn.idle': 'Not connected',
    'conn.connecting': 'Connecting…',
    'conn.connected': 'Connected',
    'conn.reconnecting': 'Reconnecting…',
    'conn.offline': 'Offline',
    'conn.closed': 'Disconnected',
    'conn.unauthorized': 'Signed out',
    'conn.forbidden': 'No access',
    'conn.replaced': 'Open elsewhere',
    'conn.retryIn': 'retrying in {s}s',
    'conn.retryNow': 'Retry now',
    'banner.replaced': 'This chat was opened in another tab or window with the same session, so this one stopped receiving messages.',
    'banner.useHere': 'Use here',
    'banner.forbidden': 'You are not allowed to use this connection.',
    'banner.closed': 'The connection was closed.',
    'banner.reconnect': 'Reconnect',
    'banner.announcement': 'Announcement',
    'common.dismiss': 'Dismiss',
    'common.close': 'Close',
    'chat.label': 'Conversation with {agent}',
    'chat.emptyTitle': 'Start a conversation',
    'chat.emptyBody': 'Ask {agent} anything. Answers appear as they are written.',
    'chat.loading': 'Loading the conversation…',
    'chat.loadOlder': 'Load earlier messages',
    'chat.historyFailed': 'Could not load the conversation: {msg}',
    'chat.jumpLatest': 'Jump to the latest message',
    'chat.you': 'You',
    'chat.sending': 'Sending…',
    'chat.queued': 'Queued (#{n})',
    'chat.notSent': 'Not sent',
    'chat.thinking': 'Thinking…',
    'chat.stopped': 'Stopped',
    'chat.failed': 'The answer failed',
    'chat.partial': 'Answering…',
    'chat.steps': '{n} steps',
    'chat.step': '1 step',
    'chat.answerDone': 'Answer from {agent} finished.',
    'chat.imageAlt': 'Attached image {n}',
    'chat.reportFrom': 'Report from {agent}',
    'chat.report': 'Report',
    'composer.label': 'Message to {agent}',
    'composer.placeholder': 'Message {agent}…',
    'composer.placeholderStopped': '{agent} is stopped',
    'composer.send': 'Send',
    'composer.stop': 'Stop answering',
    'composer.attach': 'Attach images',
    'composer.remove': 'Remove {name}',
    'composer.hint': 'Enter to send · Shift+Enter for a new line',
    'composer.drop': 'Drop images to attach',
    'composer.imageTooLarge': '“{name}” is {size}. Images can be at most {max}.',
    'composer.notImage': '“{name}” is not a supported image (PNG, JPEG, GIF or WebP).',
    'composer.tooManyImages': 'You can attach at most {n} images to one message.',
    'composer.messageTooLarge': 'This message is {size} with its images; the limit is {max}. Remove an image or shorten the text.',
    'composer.unreadable': 'Could not read “{name}”.',
    'toast.report': '{agent} finished a delegated task',
    'toast.open': 'Open',
    'auth.title': 'Sign in',
    'auth.body': 'Paste your access token. It is sent once to the server, which keeps your session in a secure cookie; this page does not store the token.',
    'auth.token': 'Access token',
    'auth.submit': 'Sign in',
    'auth.working': 'Signing in…',
    'auth.failed': 'The token was not accepted: {msg}',
    'auth.signOut': 'Sign out',
    'fatal.config': 'Could not reach the server: {msg}',
    'fatal.retry': 'Try again',
    'error.bad_request': 'The server could not understand the request.',
    'error.too_large': 'The message is too large.',
    'error.unauthorized': 'Please sign in again.',
    'error.forbidden': 'You do not have access to this agent.',
    'error.project_not_found': 'This project does not exist.',
    'error.agent_not_found': 'This agent does not exist.',
    'error.agent_not_running': 'This agent is stopped.',
    'error.not_found': 'Not found.',
    'error.queue_full': 'Too many messages are waiting; try again in a moment.',
    'error.busy': 'The agent is busy; try again in a moment.',
    'error.rate_limited': 'You are sending too fast; slow down a little.',
    'error.agent_failed': 'The agent failed to answer.',
    'error.internal': 'The server had a problem.',
    'error.network': 'Network error.',
    'code.copy': 'Copy',
    'code.copyLang': 'Copy the {lang} code',
    'code.copied': 'Copied',
    'code.copyFailed': 'Copy failed',
    'chat.copyAnswer': 'Copy the answer',
    'chat.regenerate': 'Regenerate',
    'chat.reasoning': 'Reasoning',
    'chat.reasoningLive': 'Thinking…',
    'chat.usage': '{n} tokens',
    'chat.usageDetail': 'prompt {prompt} · completion {completion}',
    'chat.usageReasoning': ' · reasoning {n}',
    'chat.cutOff': 'Cut off',
    'chat.cutOffNote': 'The answer was cut off here: the server stopped while writing it.',
    'threads.title': 'Conversations',
    'threads.new': 'New chat',
    'threads.search': 'Search conversations',
    'threads.empty': 'No conversations yet.',
    'threads.noMatch': 'No loaded conversation matches “{q}”.',
    'threads.more': 'Load more',
    'threads.untitled': 'New chat',
    'threads.rename': 'Rename',
    'threads.renameLabel': 'New name for “{title}”',
    'threads.delete': 'Delete',
    'threads.deleteTitle': 'Delete this conversation?',
    'threads.deleteBody': '“{title}” and all of its messages will be deleted. This cannot be undone.',
    'threads.cancel': 'Cancel',
    'threads.deleted': 'Conversation deleted.',
    'threads.failed': 'Could not change the conversation: {msg}',
    'threads.loadFailed': 'Could not load your conversations: {msg}',
    'threads.unread': '{n} unread',
    'nav.agents': 'Agents',
    'auth.oidc': 'Sign in with {name}',
    'auth.or': 'or',
    'auth.oidcFailed': 'Signing in with {name} failed: {msg}',
    'auth.redirecting': 'Redirecting…',
  },
  ko: {
    'app.tagline': '에이전트와 대화하기',
    'app.skip': '메시지 입력으로 건너뛰기',
    'nav.open': '프로젝트와 에이전트 보기',
    'nav.close': '프로젝트와 에이전트 닫기',
    'nav.label': '프로젝트와 에이전트',
    'nav.loading': '프로젝트를 불러오는 중…',
    'nav.empty': '사용할 수 있는 프로젝트가 없습니다.',
    'nav.loadFailed': '프로젝트를 불러오지 못했습니다: {msg}',
    'nav.retry': '다시 시도',
    'agent.running': '실행 중',
    'agent.stopped': '중지됨',
    'agent.start': '에이전트 시작',
    'agent.startFailed': '{agent}을(를) 시작하지 못했습니다: {msg}',
    'agent.stoppedNotice': '{agent}이(가) 중지되어 있습니다. 대화하려면 시작하세요.',
    'agent.unread': '새 메시지 {n}개',
    'conn.idle': '연결 안 됨',
    'conn.connecting': '연결 중…',
    'conn.connected': '연결됨',
    'conn.reconnecting': '재연결 중…',
    'conn.offline': '오프라인',
    'conn.closed': '연결 끊김',
    'conn.unauthorized': '로그인 필요',
    'conn.forbidden': '접근 권한 없음',
    'conn.replaced': '다른 곳에서 열림',
    'conn.retryIn': '{s}초 후 다시 시도',
    'conn.retryNow': '지금 다시 연결',
    'banner.replaced': '같은 세션으로 다른 탭이나 창에서 이 채팅을 열었기 때문에 이 창은 더 이상 메시지를 받지 않습니다.',
    'banner.useHere': '여기서 사용',
    'banner.forbidden': '이 연결을 사용할 권한이 없습니다.',
    'banner.closed': '연결이 종료되었습니다.',
    'banner.reconnect': '다시 연결',
    'banner.announcement': '공지',
    'common.dismiss': '닫기',
    'common.close': '닫기',
    'chat.label': '{agent}와(과)의 대화',
    'chat.emptyTitle': '대화를 시작하세요',
    'chat.emptyBody': '{agent}에게 무엇이든 물어보세요. 답변은 작성되는 대로 표시됩니다.',
    'chat.loading': '대화를 불러오는 중…',
    'chat.loadOlder': '이전 메시지 더 보기',
    'chat.historyFailed': '대화를 불러오지 못했습니다: {msg}',
    'chat.jumpLatest': '최신 메시지로 이동',
    'chat.you': '나',
    'chat.sending': '보내는 중…',
    'chat.queued': '대기 중 ({n}번째)',
    'chat.notSent': '보내지 못함',
    'chat.thinking': '생각 중…',
    'chat.stopped': '중지됨',
    'chat.failed': '답변에 실패했습니다',
    'chat.partial': '답변 중…',
    'chat.steps': '{n}단계',
    'chat.step': '1단계',
    'chat.answerDone': '{agent}의 답변이 끝났습니다.',
    'chat.imageAlt': '첨부 이미지 {n}',
    'chat.reportFrom': '{agent}의 보고',
    'chat.report': '보고',
    'composer.label': '{agent}에게 보낼 메시지',
    'composer.placeholder': '{agent}에게 메시지 보내기…',
    'composer.placeholderStopped': '{agent}이(가) 중지되어 있습니다',
    'composer.send': '보내기',
    'composer.stop': '답변 중지',
    'composer.attach': '이미지 첨부',
    'composer.remove': '{name} 제거',
    'composer.hint': 'Enter로 보내기 · Shift+Enter로 줄바꿈',
    'composer.drop': '여기에 이미지를 놓아 첨부하세요',
    'composer.imageTooLarge': '“{name}” 파일은 {size}입니다. 이미지는 최대 {max}까지 보낼 수 있습니다.',
    'composer.notImage': '“{name}”은(는) 지원하지 않는 이미지 형식입니다 (PNG, JPEG, GIF, WebP).',
    'composer.tooManyImages': '메시지 하나에 이미지는 최대 {n}개까지 첨부할 수 있습니다.',
    'composer.messageTooLarge': '이미지를 포함한 메시지 크기가 {size}로 한도 {max}를 넘습니다. 이미지를 빼거나 글을 줄여 주세요.',
    'composer.unreadable': '“{name}” 파일을 읽지 못했습니다.',
    'toast.report': '{agent}이(가) 위임된 작업을 마쳤습니다',
    'toast.open': '열기',
    'auth.title': '로그인',
    'auth.body': '액세스 토큰을 붙여 넣으세요. 토큰은 서버로 한 번만 전송되고, 서버가 보안 쿠키로 세션을 유지합니다. 이 페이지는 토큰을 저장하지 않습니다.',
    'auth.token': '액세스 토큰',
    'auth.submit': '로그인',
    'auth.working': '로그인 중…',
    'auth.failed': '토큰이 거부되었습니다: {msg}',
    'auth.signOut': '로그아웃',
    'fatal.config': '서버에 연결할 수 없습니다: {msg}',
    'fatal.retry': '다시 시도',
    'error.bad_request': '서버가 요청을 이해하지 못했습니다.',
    'error.too_large': '메시지가 너무 큽니다.',
    'error.unauthorized': '다시 로그인해 주세요.',
    'error.forbidden': '이 에이전트에 접근할 권한이 없습니다.',
    'error.project_not_found': '존재하지 않는 프로젝트입니다.',
    'error.agent_not_found': '존재하지 않는 에이전트입니다.',
    'error.agent_not_running': '이 에이전트는 중지되어 있습니다.',
    'error.not_found': '찾을 수 없습니다.',
    'error.queue_full': '대기 중인 메시지가 너무 많습니다. 잠시 후 다시 시도하세요.',
    'error.busy': '에이전트가 바쁩니다. 잠시 후 다시 시도하세요.',
    'error.rate_limited': '너무 빠르게 보내고 있습니다. 조금 천천히 보내 주세요.',
    'error.agent_failed': '에이전트가 답변하지 못했습니다.',
    'error.internal': '서버에 문제가 발생했습니다.',
    'error.network': '네트워크 오류가 발생했습니다.',
    'code.copy': '복사',
    'code.copyLang': '{lang} 코드 복사',
    'code.copied': '복사됨',
    'code.copyFailed': '복사 실패',
    'chat.copyAnswer': '답변 복사',
    'chat.regenerate': '다시 생성',
    'chat.reasoning': '추론 과정',
    'chat.reasoningLive': '생각하는 중…',
    'chat.usage': '토큰 {n}개',
    'chat.usageDetail': '입력 {prompt} · 출력 {completion}',
    'chat.usageReasoning': ' · 추론 {n}',
    'chat.cutOff': '중간에 끊김',
    'chat.cutOffNote': '서버가 답변을 쓰는 도중 멈춰서 답변이 여기서 끊겼습니다.',
    'threads.title': '대화',
    'threads.new': '새 대화',
    'threads.search': '대화 검색',
    'threads.empty': '아직 대화가 없습니다.',
    'threads.noMatch': '“{q}”와(과) 일치하는 대화가 없습니다.',
    'threads.more': '더 보기',
    'threads.untitled': '새 대화',
    'threads.rename': '이름 바꾸기',
    'threads.renameLabel': '“{title}”의 새 이름',
    'threads.delete': '삭제',
    'threads.deleteTitle': '이 대화를 삭제할까요?',
    'threads.deleteBody': '“{title}”와(과) 그 안의 모든 메시지가 삭제됩니다. 되돌릴 수 없습니다.',
    'threads.cancel': '취소',
    'threads.deleted': '대화를 삭제했습니다.',
    'threads.failed': '대화를 변경하지 못했습니다: {msg}',
    'threads.loadFailed': '대화 목록을 불러오지 못했습니다: {msg}',
    'threads.unread': '읽지 않음 {n}개',
    'nav.agents': '에이전트',
    'auth.oidc': '{name}(으)로 로그인',
    'auth.or': '또는',
    'auth.oidcFailed': '{name} 로그인에 실패했습니다: {msg}',
    'auth.redirecting': '이동하는 중…',
  },
};

export function pickLanguage(nav = globalThis.navigator, search = globalThis.location?.search ?? '') {
  const forced = new URLSearchParams(search).get('lang');
  if (forced && STRINGS[forced]) return forced;
  return (nav?.language ?? '').toLowerCase().startsWith('ko') ? 'ko' : 'en';
}

export const lang = pickLanguage();

/** The text for `key` in the page language, with {placeholders} filled from `vars`. */
export function t(key, vars = {}) {
  const text = STRINGS[lang][key] ?? STRINGS.en[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (whole, name) => (name in vars ? String(vars[name]) : whole));
}

/** Text for an error frame or API error: the translated code, or the server's message. */
export function errorText(code, fallback) {
  const key = `error.${code}`;
  return STRINGS[lang][key] ?? fallback ?? STRINGS[lang]['error.internal'];
}

/** Fill every [data-i18n] (text) and [data-i18n-*] (attribute) element under `root`. */
export function translatePage(root = document) {
  document.documentElement.lang = lang;
  for (const el of root.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
  for (const attr of ['aria-label', 'placeholder', 'title']) {
    for (const el of root.querySelectorAll(`[data-i18n-${attr}]`)) {
      el.setAttribute(attr, t(el.getAttribute(`data-i18n-${attr}`)));
    }
  }
}

const SIZE_UNITS = { en: ['B', 'KB', 'MB'], ko: ['B', 'KB', 'MB'] };

export function formatBytes(bytes) {
  const units = SIZE_UNITS[lang];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value >= 10 || unit === 0 ? Math.round(value) : value.toFixed(1)} ${units[unit]}`;
}

const numberFormat = new Intl.NumberFormat(lang === 'ko' ? 'ko-KR' : 'en-US');

export function formatNumber(value) {
  return numberFormat.format(value);
}

const timeFormat = new Intl.DateTimeFormat(lang === 'ko' ? 'ko-KR' : undefined, { hour: 'numeric', minute: '2-digit' });
const dateTimeFormat = new Intl.DateTimeFormat(lang === 'ko' ? 'ko-KR' : undefined, {
  month: 'short',
  day: 'numeric',
  hour: 'numeric',
  minute: '2-digit',
});

/** Short time for a message: just the time today, date and time otherwise. */
export function formatTime(value) {
  const date = value instanceof Date ? value : new Date(value);
  if (Number.isNaN(date.getTime())) return '';
  const today = new Date();
  return date.toDateString() === today.toDateString() ? timeFormat.format(date) : dateTimeFormat.format(date);
}

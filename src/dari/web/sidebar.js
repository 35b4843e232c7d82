// The list of projects and their agents (from GET /api/projects), with running/stopped state
// and unread counts. Each agent is a link to "#/c/<project>/<agent>/<thread>", so the browser's
// own keyboard handling, history and "open in new tab" work.

import { h, initial } from './dom.js';
import { t } from './i18n.js';

export function conversationHash({ projectId, agentName, threadId = 'main' }) {
  return `#/c/${encodeURIComponent(projectId)}/${encodeURIComponent(agentName)}/${encodeURIComponent(threadId)}`;
}

export function parseConversationHash(hash) {
  const match = /^#\/c\/([^/]+)\/([^/]+)(?:\/([^/]+))?$/.exec(hash ?? '');
  if (!match) return null;
  try {
    return {
      projectId: decodeURIComponent(match[1]),
      agentName: decodeURIComponent(match[2]),
      threadId: match[3] ? decodeURIComponent(match[3]) : 'main',
    };
  } catch {
    return null;
  }
}

export function renderSidebar(container, { projects, current, unread, onNavigate }) {
  if (!projects.length) {
    container.replaceChildren(h('p', { className: 'nav-note', text: t('nav.empty') }));
    return;
  }
  container.replaceChildren(
    ...projects.map((project) =>
      h('section', { className: 'project', 'aria-labelledby': `project-${project.id}` }, [
        h('h2', { className: 'project-name', id: `project-${project.id}` }, [
          h('span', { text: project.name || project.id }),
          project.name && project.name !== project.id ? h('small', { text: project.id }) : null,
        ]),
        h(
          'ul',
          { className: 'agents' },
          (project.agents ?? []).map((agent) => {
            const target = { projectId: project.id, agentName: agent.name, threadId: current?.projectId === project.id && current?.agentName === agent.name ? current.threadId : 'main' };
            const isCurrent = current && current.projectId === project.id && current.agentName === agent.name;
            const count = unread.get(`${project.id}\u0000${agent.name}`) ?? 0;
            const state = agent.running ? 'running' : 'stopped';
            return h('li', {}, [
              h(
                'a',
                {
                  className: 'agent',
                  href: conversationHash(target),
                  'aria-current': isCurrent ? 'page' : null,
                  onclick: () => onNavigate?.(),
                },
                [
                  h('span', { className: 'avatar', 'aria-hidden': 'true', text: initial(agent.name) }),
                  h('span', { className: 'agent-text' }, [
                    h('span', { className: 'agent-name', text: agent.name }),
                    agent.description ? h('span', { className: 'agent-desc', text: agent.description }) : null,
                  ]),
                  h('span', { className: `agent-state state-${state}` }, [h('span', { className: 'dot', 'aria-hidden': 'true' }), t(`agent.${state}`)]),
                  count ? h('span', { className: 'unread', 'aria-label': t('agent.unread', { n: count }), text: String(count) }) : null,
                ],
              ),
            ]);
          }),
        ),
      ]),
    ),
  );
}

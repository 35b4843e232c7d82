"""Which conversation a user's names mean, and whether the user may use it. Pure: no I/O.

- A thread named in the settings' ``shared_threads`` of its project is one conversation for
  every user of the project (who may use the agent), as every thread was before ownership.
- The default thread (``main``) is otherwise **per user**: each user's ``main`` is a
  conversation of their own (its key's ``scope`` is the user id). A client written against
  the seed never names a thread, so its users never meet in one.
- Any other thread belongs to the user who started it (the store's conversation ``owner``):
  others may use it only once it is shared (``POST …/share``).
- ``auth.mode = "none"`` means one local user: no scope, no ownership, as before.
"""

from __future__ import annotations

from dataclasses import dataclass

from dari.protocol.frames import DEFAULT_THREAD, ConversationKey
from dari.settings import Settings
from dari.stores.threads import Ownership


@dataclass(frozen=True, slots=True)
class ThreadPolicy:
    single_user: bool
    declared: frozenset[tuple[str, str]]  # (project, thread) shared by the settings

    @classmethod
    def from_settings(cls, settings: Settings) -> ThreadPolicy:
        declared = frozenset(
            (project.id, thread)
            for project in settings.projects
            for thread in project.shared_threads
        )
        return cls(single_user=settings.auth.mode == "none", declared=declared)

    def declared_shared(self, project_id: str, thread_id: str) -> bool:
        return (project_id, thread_id) in self.declared

    def key(
        self, user_id: str, project_id: str, agent_name: str, thread_id: str
    ) -> ConversationKey:
        """The conversation ``user_id`` means by these names."""
        per_user = (
            thread_id == DEFAULT_THREAD
            and not self.single_user
            and not self.declared_shared(project_id, thread_id)
        )
        return ConversationKey(project_id, agent_name, thread_id, user_id if per_user else "")

    def open_to_all(self, key: ConversationKey) -> bool:
        """Whether every user who may use the agent may use ``key``, whoever started it."""
        return self.single_user or self.declared_shared(key.project_id, key.thread_id)

    def needs_owner(self, key: ConversationKey) -> bool:
        """Whether using ``key`` depends on its recorded owner (not open to all, not per user)."""
        return not self.open_to_all(key) and not key.scope

    def may_use(self, key: ConversationKey, user_id: str, ownership: Ownership | None) -> bool:
        """``ownership``: the stored record, None when nobody has used the conversation yet."""
        if self.open_to_all(key):
            return True
        if key.scope:
            return key.scope == user_id
        return ownership is None or ownership.owner == user_id or ownership.shared

    def shared(self, key: ConversationKey, ownership: Ownership | None) -> bool:
        """Whether every user of the project may use ``key`` (the settings or its flag)."""
        if self.declared_shared(key.project_id, key.thread_id):
            return True
        return ownership is not None and ownership.shared and not key.scope

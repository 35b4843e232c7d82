"""One node: every log in process memory, every subscriber attached (or absent) here.

Appends never await, so a fan-out is atomic with respect to everything else on the loop: a
snapshot taken between two pieces sees exactly the pieces logged before it.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from dari.hub.delivery import Delivery
from dari.hub.replay import MemoryReplayLog
from dari.protocol import frames
from dari.protocol.frames import ConversationKey, Frame
from dari.runner.jobs import Progress


class MemoryDelivery(Delivery):
    def __init__(self, replay: MemoryReplayLog) -> None:
        super().__init__()
        self.replay = replay
        self._log = replay
        self._append_now = replay.append_now
        replay.attached = self._has_socket  # past the total budget, absent clients lose first
        # Answers running on this node, by conversation (one at a time in each).
        self._running: dict[ConversationKey, Progress] = {}

    # Nothing to connect to and nothing shared: one node knows everything already.

    async def start(self) -> None:
        return None

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def subscriptions(self, client_id: str) -> tuple[set[ConversationKey], set[str]]:
        return set(), set()

    async def subscribe(self, client_id: str, key: ConversationKey) -> None:
        return None

    async def unsubscribe(self, client_id: str, key: ConversationKey) -> None:
        return None

    async def subscribe_project(self, client_id: str, project_id: str) -> None:
        return None

    async def unsubscribe_project(self, client_id: str, project_id: str) -> None:
        return None

    async def project_subscribers(self, project_id: str) -> set[str]:
        return set()

    async def all_clients(self) -> set[str]:
        return set()

    async def attached(self, client_id: str) -> None:
        return None

    async def detached(self, client_id: str) -> None:
        return None

    async def refresh(self, attached: Iterable[str]) -> None:
        # Run by the janitor: logs of clients that left and whose frames all expired go.
        self._log.sweep()

    def _has_socket(self, client_id: str) -> bool:
        state = self.clients.get(client_id)
        return state is not None and state.connection is not None

    async def forget(self, client_id: str, *, force: bool = False) -> None:
        await self.replay.forget(client_id)

    async def send(self, client_id: str, frame: Frame, merge_key: str | None = None) -> int:
        seq = self._append_now(client_id, frame, merge_key)
        state = self.clients.get(client_id)
        if state is not None and state.connection is not None:
            state.connection.notify()
        return seq

    def _deliver_now(
        self,
        client_ids: Collection[str],
        frame: Frame,
        merge_key: str | None,
        gather_s: float = 0.0,
    ) -> int:
        """Log for each client and notify its socket, without awaiting (the per-piece path:
        no coroutine per subscriber)."""
        append_now = self._append_now
        copy = len(client_ids) > 1  # each client numbers its own frames: each gets its own copy
        clients = self.clients
        for client_id in client_ids:
            append_now(client_id, dict(frame) if copy else frame, merge_key)
            state = clients.get(client_id)
            if state is not None and state.connection is not None:
                state.connection.notify(gather_s)
        return len(client_ids)

    async def send_many(
        self, client_ids: Collection[str], frame: Frame, merge_key: str | None = None
    ) -> int:
        return self._deliver_now(client_ids, frame, merge_key)

    async def publish(
        self,
        key: ConversationKey,
        local: Collection[str],
        frame: Frame,
        merge_key: str | None = None,
        gather_s: float = 0.0,
    ) -> int:
        return self._deliver_now(local, frame, merge_key, gather_s)

    async def answer_began(self, progress: Progress) -> None:
        self._running[progress.key] = progress

    async def answer_ended(self, progress: Progress) -> None:
        if self._running.get(progress.key) is progress:
            del self._running[progress.key]

    async def snapshots(self, client_id: str, keys: Iterable[ConversationKey]) -> int | None:
        first: int | None = None
        for key in keys:
            progress = self._running.get(key)
            if progress is not None:
                snapshot = frames.answer_frame(
                    "snapshot",
                    key,
                    progress.request_id,
                    content=progress.text(),
                    steps=list(progress.steps),
                    reasoning=progress.reasoning_text(),
                    tools=progress.tool_list(),
                    interrupts=progress.interrupt_list(),
                )
                seq = await self.send(client_id, snapshot)
                first = seq if first is None else first
        return first

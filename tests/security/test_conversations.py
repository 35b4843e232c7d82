"""Conversations owned by users, on one node with JWT users: each user's ``main`` is their own,
threads belong to whoever started them unless shared, reports reach the owner, and the
``threads`` listing, rename and delete work (frames and REST)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from dari.client import DariClient
from tests.conftest import ServerFactory
from tests.security.conftest import HS_AUTH, bearer, start, token
from tests.security.test_isolation import leaked, marker, open_as, settle
from tests.support.client import WsClient
from tests.support.server import RunningServer

PROJECTS: list[dict[str, Any]] = [
    {
        "id": "p1",
        "shared_threads": ["team-room"],
        "agents": [
            {"name": "echo", "backend": "echo"},
            {"name": "slow", "backend": "echo", "options": {"delay_ms": 40}},
            # `/delegate worker <task>` hands the task to the echo worker.
            {"name": "desk", "backend": "offline", "options": {"delay_ms": 0}},
            {"name": "worker", "backend": "echo"},
        ],
    }
]
SETTINGS: dict[str, Any] = {
    "auth": HS_AUTH,
    "projects": PROJECTS,
    "limits": {"rate_per_s": 10_000, "rate_burst": 10_000},
}
P1 = {"projects": ["p1"]}


async def server_with(server_factory: ServerFactory, **overrides: Any) -> RunningServer:
    return await start(server_factory, **{**SETTINGS, **overrides})


def rid() -> str:
    return f"r-{uuid.uuid4().hex[:8]}"


async def answered(client: WsClient, message: str, *, agent: str = "echo", **extra: Any) -> str:
    request_id = rid()
    await client.chat(message, project="p1", agent=agent, id=request_id, **extra)
    text, end = await client.answer(request_id, timeout=30)
    assert end["finish_reason"] == "stop"
    return text


async def ask(client: WsClient, frame: dict[str, Any], reply: str) -> dict[str, Any]:
    """Send ``frame``; its answer (``reply`` type) or the error it caused."""
    await client.send(frame)
    answer: dict[str, Any] = await client.until(lambda f: f["type"] in (reply, "error"))
    return answer


async def history(client: WsClient, thread: str | None = None, agent: str = "echo") -> Any:
    frame: dict[str, Any] = {"type": "history", "project_id": "p1", "agent_name": agent}
    if thread is not None:
        frame["thread_id"] = thread
    return await ask(client, frame, "history")


async def listing(client: WsClient, **fields: Any) -> dict[str, Any]:
    return await ask(client, {"type": "threads", **fields}, "threads")


def http(server: RunningServer, user: str, **claims: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=server.http, headers=bearer(token(user, **{**P1, **claims})), timeout=10
    )


# --- each user's main is their own ----------------------------------------------------------


async def test_two_users_on_main_see_only_their_own_live_in_history_on_resume_and_listed(
    server_factory: ServerFactory,
) -> None:
    server = await server_with(server_factory)
    alice = await open_as(server, "alice-1", "alice", **P1)
    alice_tab = await open_as(server, "alice-2", "alice", **P1)
    bob = await open_as(server, "bob-1", "bob", **P1)
    # Alice's second tab follows her main; bob would follow "main" too, but his is his own.
    for client in (alice_tab, bob):
        reply = await ask(
            client, {"type": "subscribe", "project_id": "p1", "agent_name": "slow"}, "subscribed"
        )
        assert reply["type"] == "subscribed" and reply["thread_id"] == "main"

    alice_secret, bob_secret = marker(), marker()
    # The seed's chat: no thread_id, so thread "main", both at once on the slow agent.
    a_id, b_id = rid(), rid()
    await alice.chat(f"{alice_secret} " + "word " * 20, project="p1", agent="slow", id=a_id)
    await bob.chat(f"{bob_secret} " + "word " * 20, project="p1", agent="slow", id=b_id)
    a_text, a_end = await alice.answer(a_id, timeout=30)
    b_text, b_end = await bob.answer(b_id, timeout=30)
    assert alice_secret in a_text and bob_secret in b_text
    assert a_end["thread_id"] == b_end["thread_id"] == "main"

    # Live: alice's tab got her answer, nobody got the other's.
    tab_text, _ = await alice_tab.answer(a_id, timeout=30)
    assert tab_text == a_text
    for client in (alice, alice_tab, bob):
        await settle(client)
    assert not leaked(alice.frames + alice_tab.frames, bob_secret)
    assert not leaked(bob.frames, alice_secret)

    # history (frame and REST): one's own chat and answer only.
    for client, mine, theirs in (
        (alice, alice_secret, bob_secret),
        (bob, bob_secret, alice_secret),
    ):
        page = await history(client, agent="slow")
        assert [m["role"] for m in page["messages"]] == ["user", "assistant"]
        assert mine in page["messages"][0]["content"] and not leaked([page], theirs)
    async with http(server, "bob") as rest:
        response = await rest.get("/api/projects/p1/agents/slow/threads/main/messages")
    assert response.status_code == 200
    assert [m["role"] for m in response.json()["messages"]] == ["user", "assistant"]
    assert bob_secret in response.text and alice_secret not in response.text

    # threads: each lists their own main, titled by their own first words.
    alice_list, bob_list = await listing(alice), await listing(bob)
    assert [(i["agent_name"], i["thread_id"]) for i in alice_list["items"]] == [("slow", "main")]
    assert alice_list["items"][0]["title"].startswith(alice_secret)
    assert bob_list["items"][0]["title"].startswith(bob_secret)
    assert alice_list["next"] is None and bob_list["items"][0]["mine"] is True

    # Resume: alice's client comes back from seq 0 and gets her frames again, none of bob's.
    await alice.close()
    resumed = await WsClient.open(
        server.ws("/ws/chat/alice-1?last_seq=0"), additional_headers=bearer(token("alice", **P1))
    )
    welcome = await resumed.recv()
    assert welcome["resumed"] is True
    await settle(resumed)
    assert leaked(resumed.frames, alice_secret) and not leaked(resumed.frames, bob_secret)
    for client in (resumed, alice_tab, bob):
        await client.close()


async def test_one_local_user_without_auth_keeps_one_shared_main(
    server_factory: ServerFactory,
) -> None:
    # auth.mode = "none": one user, as before; every client_id shares "main".
    server = await server_factory(projects=PROJECTS)
    first = await WsClient.open(server.ws("/ws/chat/one"))
    second = await WsClient.open(server.ws("/ws/chat/two"))
    await first.recv(), await second.recv()
    await answered(first, "hello from one")
    page = await history(second)
    assert [m["content"] for m in page["messages"]] == ["hello from one", "hello from one"]
    items = (await listing(second))["items"]
    assert [(i["thread_id"], i["title"], i["mine"]) for i in items] == [
        ("main", "hello from one", True)
    ]
    for client in (first, second):
        await client.close()


# --- threads belong to whoever started them ----------------------------------------------------


async def test_a_user_cannot_chat_read_subscribe_cancel_or_manage_anothers_thread(
    server_factory: ServerFactory,
) -> None:
    server = await server_with(server_factory)
    alice = await open_as(server, "alice-t", "alice", **P1)
    secret = marker()
    assert await answered(alice, secret, thread_id="alice-plan") == secret
    bob = await open_as(server, "bob-t", "bob", **P1)
    names = {"project_id": "p1", "agent_name": "echo", "thread_id": "alice-plan"}
    for frame in (
        {"type": "chat", "message": "let me in", "id": "b-1", **names},
        {"type": "history", **names},
        {"type": "subscribe", **names},
        {"type": "cancel", **names},
        {"type": "thread", "action": "rename", "title": "mine now", **names},
        {"type": "thread", "action": "share", **names},
        {"type": "thread", "action": "delete", **names},
    ):
        await bob.send(frame)
        reply = await bob.until_type("error")
        assert reply["code"] == "forbidden", frame
    async with http(server, "bob") as rest:
        path = "/api/projects/p1/agents/echo/threads/alice-plan"
        responses = [
            await rest.get(f"{path}/messages"),
            await rest.patch(path, json={"title": "x"}),
            await rest.delete(path),
            await rest.post(f"{path}/share"),
        ]
    assert [r.status_code for r in responses] == [403] * 4
    assert all(r.json()["error"]["code"] == "forbidden" for r in responses)
    # Bob's attempts changed nothing: alice's thread still holds only her exchange.
    page = await history(alice, "alice-plan")
    assert [m["content"] for m in page["messages"]] == [secret, secret]
    await settle(bob)
    assert not leaked(bob.frames, secret) and (await listing(bob))["items"] == []
    assert not any(secret in r.text for r in responses)
    # A thread nobody has used is anyone's to start: bob's own "bob-plan" is his.
    assert await answered(bob, "mine", thread_id="bob-plan") == "mine"
    for client in (alice, bob):
        await client.close()


async def test_a_thread_claimed_by_subscribing_stays_its_subscribers(
    server_factory: ServerFactory,
) -> None:
    server = await server_with(server_factory)
    alice = await open_as(server, "alice-s", "alice", **P1)
    names = {"project_id": "p1", "agent_name": "echo", "thread_id": "watching"}
    assert (await ask(alice, {"type": "subscribe", **names}, "subscribed"))["type"] == "subscribed"
    bob = await open_as(server, "bob-s", "bob", **P1)
    await bob.chat("first!", project="p1", agent="echo", thread_id="watching", id="b-1")
    assert (await bob.until_type("error", request_id="b-1"))["code"] == "forbidden"
    for client in (alice, bob):
        await client.close()


async def test_a_declared_and_a_rest_shared_thread_are_seen_by_both(
    server_factory: ServerFactory,
) -> None:
    server = await server_with(server_factory)
    alice = await open_as(server, "alice-r", "alice", **P1)
    bob = await open_as(server, "bob-r", "bob", **P1)
    room = {"project_id": "p1", "agent_name": "echo", "thread_id": "team-room"}
    # The settings share "team-room": bob follows it and sees alice's chat live.
    assert (await ask(bob, {"type": "subscribe", **room}, "subscribed"))["type"] == "subscribed"
    hello = marker()
    request_id = rid()
    await alice.chat(hello, project="p1", agent="echo", thread_id="team-room", id=request_id)
    assert (await bob.answer(request_id))[0] == hello
    assert await answered(bob, "hi alice", thread_id="team-room") == "hi alice"
    page = await history(alice, "team-room")
    assert [m["content"] for m in page["messages"]] == [hello, hello, "hi alice", "hi alice"]
    (item,) = (await listing(bob))["items"]
    assert (item["thread_id"], item["shared"], item["mine"]) == ("team-room", True, False)

    # A private thread of alice's, shared by REST, then unshared.
    plan = marker()
    assert await answered(alice, plan, thread_id="plan") == plan
    path = "/api/projects/p1/agents/echo/threads/plan"
    async with http(server, "alice") as rest:
        shared = await rest.post(f"{path}/share")
    assert shared.status_code == 200 and shared.json()["shared"] is True
    plan_names = {**room, "thread_id": "plan"}
    page = await history(bob, "plan")
    assert [m["content"] for m in page["messages"]] == [plan, plan]
    assert (await ask(bob, {"type": "subscribe", **plan_names}, "subscribed"))["type"] == (
        "subscribed"
    )
    async with http(server, "alice") as rest:
        unshared = await rest.post(f"{path}/unshare")
    assert unshared.status_code == 200 and unshared.json()["shared"] is False
    # Bob lost it: no access, and his subscription ended (alice's next answer skips him).
    assert (await history(bob, "plan"))["code"] == "forbidden"
    later = marker()
    assert await answered(alice, later, thread_id="plan") == later
    await settle(bob)
    assert not leaked(bob.frames, later)
    # The default thread is each user's own: it cannot be shared by REST.
    async with http(server, "alice") as rest:
        refused = await rest.post("/api/projects/p1/agents/echo/threads/main/share")
    assert refused.status_code == 404  # alice has no main with echo yet
    await answered(alice, "in my main")
    async with http(server, "alice") as rest:
        refused = await rest.post("/api/projects/p1/agents/echo/threads/main/share")
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "bad_request"
    for client in (alice, bob):
        await client.close()


async def test_an_admin_may_share_a_users_thread(server_factory: ServerFactory) -> None:
    server = await server_with(server_factory)
    alice = await open_as(server, "alice-adm", "alice", **P1)
    await answered(alice, "ours", thread_id="audit")
    async with http(server, "root", admin=True) as rest:
        response = await rest.post("/api/projects/p1/agents/echo/threads/audit/share")
    assert response.status_code == 200 and response.json()["shared"] is True
    bob = await open_as(server, "bob-adm", "bob", **P1)
    assert [m["content"] for m in (await history(bob, "audit"))["messages"]] == ["ours", "ours"]
    for client in (alice, bob):
        await client.close()


# --- reports reach the owner --------------------------------------------------------------------


async def test_delegated_and_external_reports_reach_only_the_owner(
    server_factory: ServerFactory,
) -> None:
    server = await server_with(server_factory)
    alice = await open_as(server, "alice-d", "alice", **P1)
    alice_tab = await open_as(server, "alice-d2", "alice", **P1)
    bob = await open_as(server, "bob-d", "bob", **P1)
    for client in (alice_tab, bob):  # both follow the whole project
        reply = await ask(client, {"type": "subscribe", "project_id": "p1"}, "subscribed")
        assert reply["type"] == "subscribed"
    task = marker()
    await answered(alice, f"/delegate worker {task}", agent="desk")
    report = await alice.until_type("auto_report", timeout=30)
    assert report["content"] == task and report["thread_id"] == "main"
    assert (await alice_tab.until_type("auto_report", timeout=30))["content"] == task
    # The task's own conversation is alice's too.
    task_thread = f"task-{report['task_id']}"
    assert (await history(bob, task_thread, agent="worker"))["code"] == "forbidden"
    worker_page = await history(alice, task_thread, agent="worker")
    assert [m["content"] for m in worker_page["messages"]] == [task, task]

    # An external system reports into alice's main (the default thread is per user).
    external = marker()
    async with http(server, "root", admin=True) as rest:
        response = await rest.post(
            "/api/projects/p1/reports",
            json={"content": external, "agent_name": "desk", "user_id": "alice"},
        )
    assert response.status_code == 201
    assert (await alice.until_type("auto_report", content=external))["thread_id"] == "main"
    await settle(bob)
    assert not leaked(bob.frames, task) and not leaked(bob.frames, external)
    page = await history(alice, agent="desk")
    assert [m["role"] for m in page["messages"]][-2:] == ["report", "report"]
    assert (await history(bob, agent="desk"))["messages"] == []
    # The task record is alice's too: bob cannot read its result by id.
    async with http(server, "bob") as rest:
        response = await rest.get(f"/api/projects/p1/tasks/{report['task_id']}")
    assert response.status_code == 404 and task not in response.text
    async with http(server, "alice") as rest:
        response = await rest.get(f"/api/projects/p1/tasks/{report['task_id']}")
    assert response.status_code == 200 and response.json()["result"] == task
    for client in (alice, alice_tab, bob):
        await client.close()


async def test_a_report_into_a_shared_thread_reaches_everyone_in_the_project(
    server_factory: ServerFactory,
) -> None:
    server = await server_with(server_factory)
    bob = await open_as(server, "bob-rr", "bob", **P1)
    assert (await ask(bob, {"type": "subscribe", "project_id": "p1"}, "subscribed"))["type"] == (
        "subscribed"
    )
    content = marker()
    async with http(server, "root", admin=True) as rest:
        response = await rest.post(
            "/api/projects/p1/reports",
            json={"content": content, "agent_name": "echo", "thread_id": "team-room"},
        )
    assert response.status_code == 201
    assert (await bob.until_type("auto_report", content=content))["thread_id"] == "team-room"
    await bob.close()


# --- listing, unread, rename, delete ------------------------------------------------------------


async def test_listing_is_newest_first_paginated_with_unread_counts(
    server_factory: ServerFactory,
) -> None:
    server = await server_with(server_factory)
    alice = await open_as(server, "alice-l", "alice", **P1)
    for thread in ("one", "two", "three"):
        await answered(alice, f"about {thread}", thread_id=thread)
    await answered(alice, "and one again", thread_id="one")
    first = await listing(alice, limit=2)
    assert [i["thread_id"] for i in first["items"]] == ["one", "three"]
    assert first["next"] is not None
    rest_page = await listing(alice, limit=2, before=first["next"])
    assert [i["thread_id"] for i in rest_page["items"]] == ["two"] and rest_page["next"] is None
    assert all(i["unread"] == 0 for i in first["items"] + rest_page["items"])  # her own
    assert first["items"][0]["title"] == "about one"

    # Bob writes in the shared room: two messages alice has not seen, until she reads it.
    bob = await open_as(server, "bob-l", "bob", **P1)
    await answered(bob, "news for the team", thread_id="team-room")
    (room,) = [i for i in (await listing(alice))["items"] if i["thread_id"] == "team-room"]
    assert room["unread"] == 2 and room["title"] == "news for the team"
    await history(alice, "team-room")
    (room,) = [i for i in (await listing(alice))["items"] if i["thread_id"] == "team-room"]
    assert room["unread"] == 0

    # REST: the same listing, filtered by agent.
    async with http(server, "alice") as rest:
        response = await rest.get("/api/threads", params={"agent_name": "echo", "limit": 10})
        none = await rest.get("/api/threads", params={"agent_name": "slow"})
    assert [i["thread_id"] for i in response.json()["items"]] == [
        "team-room",
        "one",
        "three",
        "two",
    ]
    assert none.json() == {"items": [], "next": None}
    for client in (alice, bob):
        await client.close()


async def test_rename_and_delete_by_frame_and_rest(server_factory: ServerFactory) -> None:
    server = await server_with(server_factory)
    alice = await open_as(server, "alice-x", "alice", **P1)
    secret = marker()
    await answered(alice, secret, thread_id="draft")
    names = {"project_id": "p1", "agent_name": "echo", "thread_id": "draft"}
    renamed = await ask(
        alice, {"type": "thread", "action": "rename", "title": "Draft", **names}, "thread"
    )
    assert (renamed["action"], renamed["title"]) == ("rename", "Draft")
    assert (await listing(alice))["items"][0]["title"] == "Draft"
    async with http(server, "alice") as rest:
        response = await rest.patch(
            "/api/projects/p1/agents/echo/threads/draft", json={"title": None}
        )
    assert response.status_code == 200
    assert (await listing(alice))["items"][0]["title"] == secret

    # Delete: history gone, not listed, and the logged frames are withheld from replay.
    async with http(server, "alice") as rest:
        response = await rest.delete("/api/projects/p1/agents/echo/threads/draft")
    assert response.status_code == 200 and response.json()["action"] == "delete"
    assert (await history(alice, "draft"))["messages"] == []
    assert (await listing(alice))["items"] == []
    await alice.close()
    resumed = await WsClient.open(
        server.ws("/ws/chat/alice-x?last_seq=0"), additional_headers=bearer(token("alice", **P1))
    )
    assert (await resumed.recv())["resumed"] is True
    await settle(resumed)
    assert not leaked(resumed.frames, secret)
    assert any(f["type"] == "redacted" for f in resumed.frames)
    # The thread is still hers, empty: she may start it again, and the new answer shows.
    again = marker()
    assert await answered(resumed, again, thread_id="draft") == again
    bob = await open_as(server, "bob-x", "bob", **P1)
    assert (await history(bob, "draft"))["code"] == "forbidden"
    for client in (resumed, bob):
        await client.close()


async def test_deleting_a_thread_while_it_answers_is_refused_as_busy(
    server_factory: ServerFactory,
) -> None:
    server = await server_with(server_factory)
    alice = await open_as(server, "alice-b", "alice", **P1)
    request_id = rid()
    await alice.chat("word " * 60, project="p1", agent="slow", thread_id="long", id=request_id)
    await alice.until_type("response", request_id=request_id)
    names = {"project_id": "p1", "agent_name": "slow", "thread_id": "long"}
    reply = await ask(alice, {"type": "thread", "action": "delete", **names}, "thread")
    assert reply["type"] == "error" and reply["code"] == "busy"
    async with http(server, "alice") as rest:
        response = await rest.delete("/api/projects/p1/agents/slow/threads/long")
    assert response.status_code == 409
    await alice.send({"type": "cancel", "request_id": request_id})
    assert (await alice.until_type("end", request_id=request_id))["finish_reason"] == "cancelled"
    reply = await ask(alice, {"type": "thread", "action": "delete", **names}, "thread")
    assert reply["type"] == "thread"
    await alice.close()


async def test_the_python_client_lists_the_users_threads(server_factory: ServerFactory) -> None:
    server = await server_with(server_factory)
    bob = await open_as(server, "bob-py", "bob", **P1)
    await answered(bob, "not alice's", thread_id="bobs")
    url = f"ws://127.0.0.1:{server.port}"
    async with DariClient(url, "alice-py", token=token("alice", **P1)) as alice:
        for thread in ("one", "two"):
            request_id = await alice.chat(
                f"about {thread}", agent_name="echo", project_id="p1", thread_id=thread
            )
            assert (await alice.answer(request_id, timeout=30)).finish_reason == "stop"
        first = await alice.threads(limit=1)
        assert [i["thread_id"] for i in first["items"]] == ["two"]
        rest_page = await alice.threads(limit=1, before=first["next"])
        assert [i["thread_id"] for i in rest_page["items"]] == ["one"]
        assert rest_page["next"] is None
        assert (await alice.threads(agent_name="slow"))["items"] == []
    await bob.close()

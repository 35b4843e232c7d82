"""dari-client.js on its own, in the browser, against a scripted fake WebSocket: the rules of
the protocol that are hard to provoke with a real server (gaps, duplicates, close codes)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser

# Defines FakeSocket, waitFor and a client factory in the page; each scenario builds on it.
HARNESS = """
async () => {
  const { DariClient } = await import('/dari-client.js');
  class FakeSocket {
    static all = [];
    constructor(url) { this.url = url; this.sent = []; this.readyState = 0; FakeSocket.all.push(this); }
    open() { this.readyState = 1; }
    send(text) { this.sent.push(JSON.parse(text)); }
    close(code) { this.readyState = 3; this.closedWith = code; }
    recv(frame) { this.onmessage?.({ data: JSON.stringify(frame) }); }
    drop(code, reason = '') { this.readyState = 3; this.onclose?.({ code, reason }); }
  }
  const waitFor = async (check, ms = 3000) => {
    const end = performance.now() + ms;
    while (!check()) {
      if (performance.now() > end) throw new Error('timed out waiting for ' + check);
      await new Promise((r) => setTimeout(r, 5));
    }
  };
  const make = (options = {}) => {
    FakeSocket.all = [];
    const client = new DariClient({ url: 'ws://fake/ws/chat', clientId: 'tab-1', WebSocket: FakeSocket,
                                    backoff: { initialMs: 10, maxMs: 20 }, ...options });
    const seen = [];
    const states = [];
    client.on('frame', (f) => seen.push(f));
    client.on('state', (s) => states.push(s.state));
    return { client, seen, states, sockets: FakeSocket.all };
  };
  const welcome = (seq, extra = {}) => ({ type: 'welcome', seq, resumed: false, last_seq: seq, epoch: 'E1', heartbeat_s: 20, ...extra });
  window.harness = { make, waitFor, welcome };
}
"""


@pytest.fixture
async def page(browser, dari):
    page = await (await browser.new_context()).new_page()
    await page.goto(f"{dari.http}/healthz")  # any page of the origin, to import its modules
    await page.evaluate(HARNESS)
    return page


async def test_seq_rule_drops_duplicates_and_a_gap_resumes_from_the_last_frame(page):
    result = await page.evaluate(
        """async () => {
          const { make, waitFor, welcome } = window.harness;
          const { client, seen, sockets } = make();
          client.connect();
          const first = sockets[0];
          first.open();
          first.recv(welcome(5));
          first.recv({ type: 'response', seq: 6, content: 'a' });
          first.recv({ type: 'response', seq: 6, content: 'a' });   // seen before
          first.recv({ type: 'response', seq: 4, content: 'old' }); // seen before
          first.recv({ type: 'response', seq: 7, content: 'b' });
          first.recv({ type: 'response', seq: 9, content: 'gap' }); // 8 is missing
          await waitFor(() => sockets.length === 2);
          return { urls: sockets.map((s) => s.url), closed: first.closedWith,
                   contents: seen.filter((f) => f.type === 'response').map((f) => f.content), position: client.position };
        }"""
    )
    assert result["urls"][0] == "ws://fake/ws/chat/tab-1"
    assert result["urls"][1] == "ws://fake/ws/chat/tab-1?last_seq=7&epoch=E1"
    assert result["contents"] == ["a", "b"]
    assert result["closed"] == 4000
    assert result["position"] == 7


async def test_unacknowledged_chats_are_resent_with_the_same_id_after_a_reconnect(page):
    result = await page.evaluate(
        """async () => {
          const { make, waitFor, welcome } = window.harness;
          const { client, sockets } = make();
          client.connect();
          sockets[0].open();
          sockets[0].recv(welcome(0));
          const acked = client.chat({ projectId: 'p', agentName: 'a', message: 'one' });
          const lost = client.chat({ projectId: 'p', agentName: 'a', message: 'two' });
          sockets[0].recv({ type: 'ack', seq: 1, id: acked, request_id: acked, queued: 0, duplicate: false });
          sockets[0].drop(1006);
          await waitFor(() => sockets.length === 2);
          sockets[1].open();
          sockets[1].recv(welcome(1, { resumed: true }));
          return { first: sockets[0].sent.map((f) => f.id), second: sockets[1].sent.filter((f) => f.type === 'chat').map((f) => f.id),
                   acked, lost, url: sockets[1].url };
        }"""
    )
    assert result["first"] == [result["acked"], result["lost"]]
    assert result["second"] == [result["lost"]], (
        "only the chat without an ack is sent again, with its id"
    )
    assert "last_seq=1" in result["url"]


async def test_a_chat_refused_by_a_draining_node_is_sent_again_after_the_reconnect(page):
    result = await page.evaluate(
        """async () => {
          const { make, waitFor, welcome } = window.harness;
          const { client, sockets } = make();
          client.connect();
          sockets[0].open();
          sockets[0].recv(welcome(0));
          const draining = client.chat({ projectId: 'p', agentName: 'a', message: 'one' });
          const full = client.chat({ projectId: 'p', agentName: 'a', message: 'two' });
          sockets[0].recv({ type: 'error', seq: 1, code: 'shutting_down', message: 'm', request_id: draining });
          sockets[0].recv({ type: 'error', seq: 2, code: 'queue_full', message: 'm', request_id: full });
          sockets[0].drop(1012);
          await waitFor(() => sockets.length === 2);
          sockets[1].open();
          sockets[1].recv(welcome(2, { resumed: true }));
          return { again: sockets[1].sent.filter((f) => f.type === 'chat').map((f) => f.id), draining };
        }"""
    )
    assert result["again"] == [result["draining"]], "only the drain's refusal is worth resending"


@pytest.mark.parametrize(
    ("code", "state", "retries"),
    [
        (4401, "unauthorized", False),
        (4403, "forbidden", False),
        (1000, "closed", False),
        (4409, "replaced", False),
        (1011, "reconnecting", True),
        (1012, "reconnecting", True),  # a node drained: another one is up
        (1006, "reconnecting", True),
    ],
)
async def test_close_codes_decide_whether_to_reconnect(page, code, state, retries):
    result = await page.evaluate(
        """async (code) => {
          const { make, welcome } = window.harness;
          const { client, states, sockets } = make();
          client.connect();
          sockets[0].open();
          sockets[0].recv(welcome(0));
          sockets[0].drop(code);
          const stateAfterClose = client.state;
          // Several times the longest back-off: long enough for a retry to have happened.
          await new Promise((r) => setTimeout(r, 200));
          return { stateAfterClose, sockets: sockets.length };
        }""",
        code,
    )
    assert result["stateAfterClose"] == state
    assert (result["sockets"] > 1) is retries


async def test_a_4409_soon_after_an_abandoned_handshake_reconnects(page):
    # The abandoned handshake may reach the server late (a slow proxy) and replace the newer
    # socket: that 4409 is this client's own doing, not another tab's, so it reconnects.
    result = await page.evaluate(
        """async () => {
          const { make, waitFor, welcome } = window.harness;
          const { client, sockets } = make({ handshakeTimeoutMs: 50 });
          client.connect();
          sockets[0].open();  // no welcome: given up on after 50 ms
          await waitFor(() => sockets.length === 2);
          sockets[1].open();
          sockets[1].recv(welcome(0));
          sockets[1].drop(4409);
          const stateAfterClose = client.state;
          await waitFor(() => sockets.length === 3);
          sockets[2].open();
          sockets[2].recv(welcome(0));
          return { stateAfterClose, abandoned: sockets[0].closedWith, state: client.state };
        }"""
    )
    assert result["abandoned"] == 4000
    assert result["stateAfterClose"] == "reconnecting"
    assert result["state"] == "connected"


async def test_a_missing_pong_is_a_dead_link_and_any_frame_counts_as_life(page):
    result = await page.evaluate(
        """async () => {
          const { make, waitFor, welcome } = window.harness;
          const { client, sockets } = make({ pingIntervalMs: 20, pongTimeoutMs: 60 });
          client.connect();
          sockets[0].open();
          sockets[0].recv(welcome(0));
          await waitFor(() => sockets[0].sent.some((f) => f.type === 'ping'));
          const ping = sockets[0].sent.find((f) => f.type === 'ping');
          sockets[0].recv({ type: 'pong', seq: 1, ts: ping.ts });
          const aliveAfterPong = sockets.length === 1;
          await waitFor(() => sockets.length === 2);  // the next pings go unanswered
          return { aliveAfterPong, closedWith: sockets[0].closedWith, resumeUrl: sockets[1].url };
        }"""
    )
    assert result["aliveAfterPong"]
    assert result["closedWith"] == 4000
    assert "last_seq=1" in result["resumeUrl"]


async def test_a_lost_resume_asks_the_app_to_reload_and_subscribes_again(page):
    result = await page.evaluate(
        """async () => {
          const { make, waitFor, welcome } = window.harness;
          const { client, sockets } = make();
          const resyncs = [];
          client.on('resync', (r) => resyncs.push(r.reason));
          client.connect();
          sockets[0].open();
          sockets[0].recv(welcome(3));
          client.subscribe({ projectId: 'p', agentName: 'a', threadId: 'main' });
          sockets[0].drop(1012);
          await waitFor(() => sockets.length === 2);
          sockets[1].open();
          sockets[1].recv(welcome(40, { resumed: false, reason: 'epoch_changed', epoch: 'E2' }));
          sockets[1].recv({ type: 'response', seq: 41, content: 'x' });
          return { resyncs, resent: sockets[1].sent.filter((f) => f.type === 'subscribe').length, position: client.position, epoch: client.epoch };
        }"""
    )
    assert result["resyncs"] == ["epoch_changed"]
    assert result["resent"] == 1
    assert result["position"] == 41
    assert result["epoch"] == "E2"


async def test_a_frame_over_the_size_limit_is_refused_before_sending(page):
    result = await page.evaluate(
        """async () => {
          const { make } = window.harness;
          const { client } = make({ maxMessageBytes: 1000 });
          try {
            client.chat({ projectId: 'p', agentName: 'a', message: '가'.repeat(400) });  // 1200 bytes in UTF-8
            return null;
          } catch (error) {
            return { code: error.code, limit: error.limit, size: error.size };
          }
        }"""
    )
    assert result is not None and result["code"] == "too_large" and result["limit"] == 1000
    assert result["size"] > 1000

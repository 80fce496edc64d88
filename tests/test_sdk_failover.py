"""The SDK leaves a hung node: a cluster node frozen with SIGSTOP (it keeps its sockets, the
kernel even accepts new TCP connections for it, but it never answers) costs its clients
one reconnect to another node within ~10 s, and nothing else: no message is lost or
duplicated. A client whose endpoint list starts with the hung node goes past it, and so
does the HTTP API. Endpoints that accept TCP and hang in the WebSocket upgrade or in the
``auth`` exchange are abandoned after their timeout."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp import web

from yim.client import Client, ConnectionLost, HttpApi
from yim.node import NodeServer
from yim.protocol.frames import MessageOut

from .conftest import ServerProcess
from .sdk_helpers import PASSWORD, Chat, Inbox, history_of, login_device, poll
from .services import RedisServer
from .test_cluster import CLUSTER_TIMINGS, _data_dirs, _flush

#: the bound the failover must meet with the SDK's default timeouts (a ping every 5 s, given
#: up 4 s later, then the next endpoint); generous, the expected figure is under 10 s
FAILOVER_BOUND_S = 15.0


class Frozen:
    """SIGSTOP a node process; always SIGCONT it again (a stopped process ignores SIGTERM)."""

    def __init__(self, proc: ServerProcess) -> None:
        self.proc = proc
        self.stopped = False

    def stop(self) -> None:
        assert self.proc.proc is not None
        self.proc.proc.send_signal(signal.SIGSTOP)
        self.stopped = True

    def resume(self) -> None:
        if self.stopped and self.proc.proc is not None and self.proc.proc.poll() is None:
            self.proc.proc.send_signal(signal.SIGCONT)
        self.stopped = False


@pytest_asyncio.fixture
async def two_nodes(tmp_path: Path, postgres_dsn: str, redis_server: RedisServer) -> AsyncIterator[list[Frozen]]:
    """Two clustered ``yim serve`` processes on one PostgreSQL and Redis."""
    await _flush(redis_server.url)
    env = {
        "YIM_STORE": postgres_dsn,
        "YIM_REDIS_URL": redis_server.url,
        "YIM_NODE_ID_LEASE": "true",
        # node b takes whole bursts at once: a lease that outlives a late renewal (tests/test_cluster.py)
        "YIM_NODE_LEASE_TTL_S": str(CLUSTER_TIMINGS["node_lease_ttl_s"]),
        "YIM_CLUSTER_ROUTE_TTL_S": "3",
    }
    procs = [ServerProcess(d, **env) for d in _data_dirs(tmp_path, 2)]
    nodes = [Frozen(p) for p in procs]
    try:
        await asyncio.gather(*(asyncio.to_thread(p.start) for p in procs))
        yield nodes
    finally:
        for node in nodes:
            node.resume()  # first: SIGTERM does not reach a stopped process
        for p in procs:
            await asyncio.to_thread(p.stop)


def _texts(messages: list[MessageOut]) -> list[str]:
    return [m.body["text"] for m in messages]


def _from(inbox: Inbox, sender: Client) -> list[MessageOut]:
    return [m for m in inbox.messages() if m.sender_id == sender.user_id]


async def test_a_client_leaves_a_sigstopped_node_for_the_next_and_loses_nothing(two_nodes: list[Frozen]) -> None:
    a, b = two_nodes
    async with asyncio.timeout(90), Chat([a.proc.url, b.proc.url]) as chat, Chat(b.proc.url) as on_b:
        bob = await chat.user("bob")
        alice_user = await chat.user("alice")
        # Alice's client with the SDK's default timeouts: they are what this test is about.
        session = await login_device(a.proc.url, "alice", "phone")
        alice = chat.track(Client([a.proc.url, b.proc.url], session.token))
        await alice.start()
        assert alice.endpoint.http == a.proc.url
        alice_inbox = chat.inbox(alice)
        bob_client = await on_b.client("bob", "laptop")
        bob_inbox = on_b.inbox(bob_client)
        first = await bob_client.send_text("before", to=alice_user.user_id)
        await alice_inbox.wait_messages(1)
        connects = alice.connects

        a.stop()
        frozen_at = time.monotonic()
        # Written while Alice's node is frozen: Bob's message is stored (node b is fine) but
        # its push goes to the frozen node; Alice's send sits unanswered in a dead socket.
        during = await bob_client.send_text("while a is frozen", to=alice_user.user_id)
        alice_send = asyncio.create_task(alice.send_text("sent into the frozen node", to=bob.user_id))

        async def moved() -> bool:
            return alice.connected and alice.connects > connects

        await poll(moved, timeout=FAILOVER_BOUND_S, interval=0.05)
        took = time.monotonic() - frozen_at
        assert alice.endpoint.http == b.proc.url
        assert alice.timeouts >= 1  # left because the node stopped answering, not on a close
        print(f"failover from a SIGSTOPped node took {took:.1f}s")

        ack = await asyncio.wait_for(alice_send, 10)  # resent to node b with its client_msg_id
        got = await alice_inbox.wait_messages(3, conv_id=first.conv_id)
        assert [m.msg_id for m in got] == [first.msg_id, during.msg_id, ack.msg_id]
        assert [i.seq for i in alice_inbox.items] == [1, 2, 3]
        await bob_inbox.wait_for(lambda: len(_from(bob_inbox, alice)) >= 1)
        assert [m.msg_id for m in _from(bob_inbox, alice)] == [ack.msg_id]

        # The frozen node wakes up with Alice's old socket and the frames written into it:
        # still nothing twice.
        a.resume()
        after = await bob_client.send_text("after a woke up", to=alice_user.user_id)
        got = await alice_inbox.wait_messages(4, conv_id=first.conv_id)
        history = await history_of(bob_client, first.conv_id)
        assert _texts(history) == ["before", "while a is frozen", "sent into the frozen node", "after a woke up"]
        assert [m.msg_id for m in got] == [m.msg_id for m in history]
        assert [m.msg_id for m in history][-1] == after.msg_id
        assert [i.seq for i in alice_inbox.items] == [1, 2, 3, 4]
        assert [m.msg_id for m in _from(bob_inbox, alice)] == [ack.msg_id]
        assert alice.connected and alice.endpoint.http == b.proc.url


async def test_a_send_waiting_on_a_frozen_node_probes_at_once(two_nodes: list[Frozen]) -> None:
    """A user waiting for an ACK does not wait for the next regular ping: a reply overdue
    while the node sends nothing makes the client probe at once (OVERDUE_REPLY_S, then
    PROBE_TIMEOUT_S). The regular pings are a minute apart here, so only the probe can
    move the client within the bound."""
    a, b = two_nodes
    async with asyncio.timeout(90), Chat([a.proc.url, b.proc.url]) as chat:
        bob = await chat.user("bob")
        await chat.user("alice")
        session = await login_device(a.proc.url, "alice", "phone")
        alice = chat.track(Client([a.proc.url, b.proc.url], session.token, heartbeat_s=60))
        await alice.start()
        assert alice.endpoint.http == a.proc.url
        await alice.send_text("warm", to=bob.user_id)
        a.stop()
        frozen_at = time.monotonic()
        ack = await asyncio.wait_for(alice.send_text("into the frozen node", to=bob.user_id), 20)
        took = time.monotonic() - frozen_at
        assert alice.endpoint.http == b.proc.url and alice.timeouts == 1
        history = await history_of(alice, ack.conv_id)
        assert _texts(history) == ["warm", "into the frozen node"]
        print(f"an overdue ACK moved the client off the frozen node in {took:.1f}s")


async def test_a_burst_written_into_a_frozen_node_is_resent_once_on_the_next(two_nodes: list[Frozen]) -> None:
    """More than the socket buffers hold: the node does not read, so the client's writes
    block. Leaving the node must unblock them (the socket is reset), and every message
    reaches node b once, in order, also after node a wakes."""
    a, b = two_nodes
    total = 2000
    text = "x" * 7000  # near max_text_chars: 2000 of them are ~14 MB, beyond any socket buffer
    async with asyncio.timeout(120), Chat([a.proc.url, b.proc.url]) as chat:
        bob = await chat.user("bob")
        await chat.user("alice")
        alice = await chat.client("alice", "phone")
        assert alice.endpoint.http == a.proc.url
        a.stop()
        tasks = [
            asyncio.create_task(alice.send(to=bob.user_id, body={"text": f"{i:05d}{text}"}, client_msg_id=f"c{i:05d}"))
            for i in range(total)
        ]
        acks = await asyncio.gather(*tasks)
        assert alice.endpoint.http == b.proc.url and alice.timeouts >= 1
        a.resume()
        history = await history_of(alice, acks[0].conv_id)
        assert [m.client_msg_id for m in history] == [f"c{i:05d}" for i in range(total)]
        assert [m.seq for m in history] == list(range(1, total + 1))
        assert [(m.msg_id, m.seq) for m in history] == [(ack.msg_id, ack.seq) for ack in acks]
        # node a woke with whatever was still in its socket: nothing was stored twice
        await alice.send_text("last", to=bob.user_id)
        history = await history_of(alice, acks[0].conv_id)
        assert len(history) == total + 1 and len({m.client_msg_id for m in history}) == total + 1


async def test_a_new_client_goes_past_a_sigstopped_node_first_in_its_list(two_nodes: list[Frozen]) -> None:
    a, b = two_nodes
    urls = [a.proc.url, b.proc.url]
    async with asyncio.timeout(90), Chat(b.proc.url) as chat:
        bob = await chat.user("bob")
        await chat.user("alice")
        a.stop()
        started = time.monotonic()
        # The HTTP API too: the frozen node takes the log-in and never answers it.
        async with HttpApi(urls, timeout_s=3.0) as api:
            session = await api.login("alice", PASSWORD, "phone")
        assert time.monotonic() - started < FAILOVER_BOUND_S
        started = time.monotonic()
        alice = chat.track(Client(urls, session.token))  # default timeouts
        async with asyncio.timeout(FAILOVER_BOUND_S):
            await alice.start()
        took = time.monotonic() - started
        print(f"start() past a SIGSTOPped node took {took:.1f}s")
        assert alice.endpoint.http == b.proc.url and alice.timeouts == 1
        ack = await alice.send_text("hello from b", to=bob.user_id)
        assert ack.seq == 1 and not ack.duplicate


# --- hung endpoints that are not yim nodes: a listener that never answers ----------------------


@contextlib.contextmanager
def silent_listener() -> Iterator[str]:
    """A real TCP listener that never accepts: the kernel completes the handshake and then
    nothing answers, as with a stopped process."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest_asyncio.fixture
async def mute_after_upgrade() -> AsyncIterator[str]:
    """A real WebSocket server that completes the upgrade and then never answers a frame
    (a node whose event loop is wedged after the handshake)."""

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=False)
        await ws.prepare(request)
        async for _ in ws:
            pass  # read and never answer, auth included
        return ws

    app = web.Application()
    app.router.add_get("/ws", handler)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_hung_upgrade_and_hung_auth_are_abandoned_for_the_next_endpoint(
    server: NodeServer, mute_after_upgrade: str
) -> None:
    with silent_listener() as hung:
        async with asyncio.timeout(60), Chat(server.url) as chat:
            bob = await chat.user("bob")
            await chat.user("alice")
            session = await login_device(server.url, "alice", "phone")
            alice = chat.track(
                Client(
                    [hung, mute_after_upgrade, server.url],
                    session.token,
                    handshake_timeout_s=1.0,
                    auth_timeout_s=1.0,
                    backoff_initial_s=0.02,
                )
            )
            await alice.start()
            assert alice.endpoint.http == server.url
            assert alice.timeouts == 2  # one in the upgrade, one in the auth exchange
            assert (await alice.send_text("through", to=bob.user_id)).seq == 1


async def test_after_a_lost_connection_the_client_tries_the_next_endpoint_first(
    server: NodeServer, mute_after_upgrade: str
) -> None:
    """The node just left may be hung: the next attempt goes to another endpoint, and the
    list is walked round until a node answers."""
    with silent_listener() as hung:
        async with asyncio.timeout(60), Chat(server.url) as chat:
            await chat.user("bob")
            await chat.user("alice")
            session = await login_device(server.url, "alice", "phone")
            alice = chat.track(
                Client(
                    [server.url, hung, mute_after_upgrade],
                    session.token,
                    handshake_timeout_s=0.5,
                    auth_timeout_s=0.5,
                    backoff_initial_s=0.02,
                )
            )
            await alice.start()
            inbox = chat.inbox(alice)
            assert alice.endpoint.http == server.url and alice.timeouts == 0
            bob_client = await chat.client("bob", "laptop")
            alice.drop_connection()
            sent = await bob_client.send_text("while alice walks the list", to=alice.user_id)
            async with asyncio.timeout(20):
                while not (alice.connected and alice.connects == 2):
                    await asyncio.sleep(0.02)
            # Both hung endpoints were tried (and timed out) before the node came round again.
            assert alice.timeouts == 2 and alice.endpoint.http == server.url
            got = await inbox.wait_messages(1)
            assert [m.msg_id for m in got] == [sent.msg_id]
            assert [i.seq for i in inbox.items] == [1]


async def test_http_api_leaves_a_hung_node_only_for_calls_safe_to_repeat(server: NodeServer) -> None:
    async with HttpApi(server.url) as api:
        await api.register("alice", PASSWORD)
        bob = await api.register("bob", PASSWORD)
    with silent_listener() as hung:
        async with asyncio.timeout(30):
            async with HttpApi([hung, server.url], timeout_s=1.0) as api:
                session = await api.login("alice", PASSWORD, "phone")  # the same device again: safe
                me = await api.me()
                assert me.username == "alice"
            async with HttpApi([hung, server.url], session.token, timeout_s=1.0) as api:
                assert (await api.me()).username == "alice"  # a GET
                ack = await api.send(to=bob.user_id, body={"text": "hi"}, client_msg_id="n-1")
                assert ack.seq == 1  # a message with its client_msg_id
            async with HttpApi([hung, server.url], timeout_s=1.0) as api:
                # creating an account is not safe to repeat: the hung node may still do it
                with pytest.raises(ConnectionLost, match="did not answer POST"):
                    await api.register("carol", PASSWORD)


# --- the web client ------------------------------------------------------------------------------


async def test_the_web_client_drops_a_hung_server_and_comes_back_when_it_answers(two_nodes: list[Frozen]) -> None:
    """The page has one server, its origin: a frozen origin is noticed by the ping timeout,
    reconnects that hang in the upgrade are abandoned, and once the node answers again the
    page is back, with what was sent meanwhile (through the other node) counted once."""
    from playwright.async_api import async_playwright, expect

    from .test_web import CHROMIUM, CHROMIUM_ARGS, VIEWPORT

    a, b = two_nodes
    async with HttpApi(b.proc.url) as api:
        await api.register("bob", PASSWORD)
        await api.register("alice", PASSWORD, "Alice")
    async with asyncio.timeout(120), Chat(b.proc.url) as chat, async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await (await browser.new_context(viewport=VIEWPORT, locale="en-US")).new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            await page.goto(a.proc.url)
            await page.get_by_label("Username").fill("alice")
            await page.get_by_label("Password").fill(PASSWORD)
            await page.get_by_role("button", name="Log in").click()
            await page.wait_for_function("() => window.yim?.socket?.state === 'open'", timeout=10_000)
            await page.evaluate(
                """() => { window.statuses = [];
                window.yim.socket.addEventListener("status", (e) => window.statuses.push(e.detail)); }"""
            )
            bob_client = await chat.client("bob", "laptop")
            alice_id = await page.evaluate("window.yim.store.me.user_id")

            a.stop()
            await bob_client.send_text("while the page's node is frozen", to=str(alice_id))
            await page.wait_for_function(
                "() => window.statuses.some((s) => s.reason === 'no answer to ping')", timeout=FAILOVER_BOUND_S * 1000
            )
            await page.wait_for_function(
                "() => window.statuses.some((s) => s.reason === 'no answer to the WebSocket upgrade')",
                timeout=FAILOVER_BOUND_S * 1000,
            )
            a.resume()
            await page.wait_for_function("() => window.yim.socket.state === 'open'", timeout=40_000)
            await expect(page.locator(".conv .badge")).to_have_text("1", timeout=10_000)
            await expect(page.locator(".total-unread")).to_have_text("1")
            assert not errors, f"uncaught errors in the page: {errors}"
        finally:
            await browser.close()

"""Server webhooks: the before_send hook, against a real HTTP receiver on loopback that checks
every request's signature by the algorithm docs/operations.md §9 gives (not by calling the
server's signing code): allow, reject, replace, a hook that is slow, down or talks nonsense
in both fail modes, a device's sends keeping their order, the settings' errors."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import hmac
import itertools
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from tests.conftest import MakeServer, free_port
from tests.rawclient import Device, ProtocolError, make_users
from yim.config import SettingsError, load_settings

SECRET = "hook-secret-0123456789abcdef"
#: the receiver's replay window, as docs/operations.md §9.3 advises
REPLAY_WINDOW_S = 300


def verify(secret: str, timestamp: str, body: bytes, signature: str) -> bool:
    """The documented check: HMAC-SHA256 over timestamp + "." + the raw body, hex, with a
    "sha256=" prefix, compared in constant time; and a timestamp inside the replay window."""
    expected = "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    fresh = abs(time.time() - int(timestamp)) <= REPLAY_WINDOW_S
    return fresh and hmac.compare_digest(expected, signature)


class Receiver:
    """The operator's policy service: answers each before_send with what ``decide`` says."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.requests: list[dict[str, Any]] = []
        self.bad_signatures = 0
        self.decide: Any = lambda event: {"action": "allow"}
        self.runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        if not verify(SECRET, request.headers["X-Yim-Timestamp"], raw, request.headers["X-Yim-Signature"]):
            self.bad_signatures += 1
            return web.Response(status=401)
        event = json.loads(raw)
        assert request.headers["X-Yim-Event"] == event["event"]
        self.requests.append(event)
        answer = self.decide(event)
        if asyncio.iscoroutine(answer):
            answer = await answer
        if isinstance(answer, web.StreamResponse):
            return answer
        return web.json_response(answer)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    yield r
    await r.stop()


def hook_settings(url: str, **more: Any) -> dict[str, Any]:
    return {"webhooks": [{"url": url, "events": ["before_send"], "secret": SECRET}], **more}


async def devices(http: aiohttp.ClientSession, names: list[str]) -> list[Device]:
    found = [Device(http, login) for login in await make_users(http, names)]
    await asyncio.gather(*(d.connect() for d in found))
    return found


def text_of(event: dict[str, Any]) -> str:
    return event["data"]["body"]["text"]


def test_signature_check_is_strict() -> None:
    """The receiver's check can fail: a changed body, another secret, an old timestamp."""
    now = str(int(time.time()))
    body = b'{"event":"before_send"}'
    good = "sha256=" + hmac.new(SECRET.encode(), now.encode() + b"." + body, hashlib.sha256).hexdigest()
    assert verify(SECRET, now, body, good)
    assert not verify(SECRET, now, body + b" ", good)
    assert not verify("another-secret-0123456789", now, body, good)
    old = str(int(time.time()) - REPLAY_WINDOW_S - 10)
    replayed = "sha256=" + hmac.new(SECRET.encode(), old.encode() + b"." + body, hashlib.sha256).hexdigest()
    assert not verify(SECRET, old, body, replayed)


async def test_before_send_allow_reject_replace(make_server: MakeServer, receiver: Receiver) -> None:
    def decide(event: dict[str, Any]) -> dict[str, Any]:
        text = event["data"]["body"].get("text", "")
        if "spam" in text:
            return {"action": "reject", "reason": "no advertising here\n(rule 4)"}
        if "phone" in text:
            return {"action": "replace", "body": {"text": "[contact details removed]"}}
        return {"action": "allow"}

    receiver.decide = decide
    server = await make_server(**hook_settings(receiver.url))
    async with aiohttp.ClientSession(server.url) as http:
        alice, bob = await devices(http, ["alice", "bob"])
        first = await alice.request("send", to=bob.user_id, kind="text", body={"text": "hello"}, client_msg_id="m1")
        conv = first["conv_id"]
        assert "body" not in first  # allowed as sent: nothing echoed

        # what the hook was sent, signed (the receiver refuses a bad signature)
        assert receiver.bad_signatures == 0
        event = receiver.requests[0]
        assert event["event"] == "before_send" and int(event["event_id"]) > 0
        assert event["data"] == {
            "sender_id": alice.user_id,
            "sender_device": "d1",
            "kind": "text",
            "body": {"text": "hello"},
            "to": bob.user_id,
            "conv_id": None,
            "shop_id": None,
            "client_msg_id": "m1",
            "reply_to": None,
        }

        # rejected: the sender sees rejected_by_policy with the hook's reason, nothing is stored
        with pytest.raises(ProtocolError) as err:
            await alice.request("send", conv_id=conv, kind="text", body={"text": "buy spam"}, client_msg_id="m2")
        assert err.value.code == "rejected_by_policy"
        assert "no advertising here (rule 4)" in str(err.value)
        r = await http.post(
            "/api/v1/messages",
            json={"conv_id": conv, "kind": "text", "body": {"text": "spam again"}, "client_msg_id": "m3"},
            headers={"Authorization": f"Bearer {alice.token}"},
        )
        assert r.status == 422 and (await r.json())["code"] == "rejected_by_policy"

        # replaced: stored, delivered and echoed as the hook's body
        ack = await alice.request(
            "send", conv_id=conv, kind="text", body={"text": "my phone is 555"}, client_msg_id="m4"
        )
        assert ack["body"] == {"text": "[contact details removed]"}
        assert ack["seq"] == 2  # the rejected ones took no seq
        async with asyncio.timeout(10):
            while len(bob.events) < 2:
                await asyncio.sleep(0.01)
        assert [text_of(e) for e in bob.events] == ["hello", "[contact details removed]"]
        assert [m["body"]["text"] for m in await bob.pull(conv, 0)] == ["hello", "[contact details removed]"]
        await asyncio.sleep(0.2)
        assert len(bob.events) == 2  # the rejected ones never arrived

        metrics = await (await http.get("/metrics")).text()
        assert 'yim_webhook_before_send_total{result="reject"} 2.0' in metrics
        assert 'yim_webhook_before_send_total{result="replace"} 1.0' in metrics


@pytest.mark.backends("sqlite")
@pytest.mark.parametrize("mode", ["open", "closed"])
async def test_before_send_failures(make_server: MakeServer, receiver: Receiver, mode: str) -> None:
    """A hook that is too slow, answers an error, answers nonsense or replaces the body with
    an invalid one: fail-open stores the message as sent, fail-closed refuses it."""

    async def decide(event: dict[str, Any]) -> Any:
        text = event["data"]["body"]["text"]
        if text == "slow":
            await asyncio.sleep(3)
            return {"action": "reject", "reason": "too late to count"}
        if text == "error":
            return web.Response(status=500)
        if text == "nonsense":
            return {"verdict": "fine"}
        if text == "invalid":
            return {"action": "replace", "body": {"text": ""}}
        return {"action": "allow"}

    receiver.decide = decide
    server = await make_server(**hook_settings(receiver.url, before_send_timeout_s=0.3, before_send_fail=mode))
    async with aiohttp.ClientSession(server.url) as http:
        alice, bob = await devices(http, ["alice", "bob"])
        conv = (await alice.request("send", to=bob.user_id, kind="text", body={"text": "hi"}, client_msg_id="m0"))[
            "conv_id"
        ]
        stored = ["hi"]
        for i, text in enumerate(["slow", "error", "nonsense", "invalid"], start=1):
            send = alice.request("send", conv_id=conv, kind="text", body={"text": text}, client_msg_id=f"m{i}")
            if mode == "open":
                ack = await send
                assert "body" not in ack
                stored.append(text)
            else:
                with pytest.raises(ProtocolError) as err:
                    await send
                assert err.value.code == "unavailable", text
        assert [m["body"]["text"] for m in await bob.pull(conv, 0)] == stored
        metrics = await (await http.get("/metrics")).text()
        assert 'yim_webhook_before_send_total{result="failed"}' in metrics

    # the hook down altogether (connection refused)
    await receiver.stop()
    async with aiohttp.ClientSession(server.url) as http:
        r = await http.post(
            "/api/v1/messages",
            json={"conv_id": conv, "kind": "text", "body": {"text": "down"}, "client_msg_id": "m9"},
            headers={"Authorization": f"Bearer {alice.token}"},
        )
        assert r.status == (201 if mode == "open" else 503), await r.text()


@pytest.mark.backends("sqlite")
async def test_before_send_keeps_a_devices_order(make_server: MakeServer, receiver: Receiver) -> None:
    """Pipelined sends of one device whose verdicts come back in reverse order are stored in
    the order they were sent."""

    async def decide(event: dict[str, Any]) -> dict[str, Any]:
        n = int(event["data"]["body"]["text"])
        await asyncio.sleep((5 - n) * 0.1)  # the first waits longest
        return {"action": "allow"}

    receiver.decide = decide
    server = await make_server(**hook_settings(receiver.url))
    async with aiohttp.ClientSession(server.url) as http:
        alice, bob = await devices(http, ["alice", "bob"])
        conv = (await alice.request("send", to=bob.user_id, kind="text", body={"text": "9"}, client_msg_id="m"))[
            "conv_id"
        ]
        acks = await asyncio.gather(
            *(
                alice.request("send", conv_id=conv, kind="text", body={"text": str(n)}, client_msg_id=f"m{n}")
                for n in range(5)
            )
        )
        assert [a["seq"] for a in acks] == [2, 3, 4, 5, 6]
        assert [m["body"]["text"] for m in await bob.pull(conv, 0)] == ["9", "0", "1", "2", "3", "4"]


@pytest.mark.parametrize(
    ("hooks", "message"),
    [
        ([{"url": "ftp://x", "events": ["before_send"], "secret": SECRET}], "must be an http:// or https:// URL"),
        ([{"url": "http://x", "events": ["on_send"], "secret": SECRET}], "'on_send' is not an event"),
        ([{"url": "http://x", "events": [], "secret": SECRET}], "events is empty"),
        ([{"url": "http://x", "events": ["before_send"], "secret": "short"}], "secret must be at least 16 bytes"),
        (
            [{"url": f"http://x/{i}", "events": ["before_send"], "secret": SECRET} for i in range(2)],
            "at most one webhook",
        ),
        ([{"url": "http://x", "events": ["after_send"], "secret": SECRET}] * 2, "the same url"),
        ("[{", "webhooks is not a JSON list"),
        ({"url": "http://x", "events": ["after_send"], "secret": SECRET}, "webhooks = ***"),  # not a list
    ],
)
def test_bad_settings(hooks: Any, message: str) -> None:
    with pytest.raises(SettingsError) as err:
        load_settings(None, webhooks=hooks)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert SECRET not in str(err.value)


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "YIM_WEBHOOKS", json.dumps([{"url": "https://h.example/x", "events": ["before_send"], "secret": SECRET}])
    )
    monkeypatch.setenv("YIM_BEFORE_SEND_FAIL", "open")
    monkeypatch.setenv("YIM_WEBHOOK_RETRY_S", "0.5, 2")
    settings = load_settings(None)
    assert settings.webhook_retry_s == [0.5, 2.0]
    assert load_settings(None, webhook_retry_s=[1, 2.5]).webhook_retry_s == [1.0, 2.5]  # the TOML form
    assert not isinstance(settings.webhooks, str)
    assert settings.webhooks[0].url == "https://h.example/x" and settings.before_send_fail == "open"


@pytest.mark.backends("sqlite")
async def test_forwarded_copies_are_asked_too(make_server: MakeServer, receiver: Receiver) -> None:
    """A forward is a send into each target: the policy refuses or replaces each copy."""
    server = await make_server(**hook_settings(receiver.url))
    async with aiohttp.ClientSession(server.url) as http:
        alice, bob, carol = await devices(http, ["alice", "bob", "carol"])
        conv = (await alice.request("send", to=bob.user_id, kind="text", body={"text": "x"}, client_msg_id="m1"))[
            "conv_id"
        ]

        def decide(event: dict[str, Any]) -> dict[str, Any]:
            if event["data"]["to"] == carol.user_id:
                return {"action": "reject", "reason": "not to carol"}
            return {"action": "replace", "body": {"text": "copy"}}

        receiver.decide = decide
        out = await alice.request(
            "forward",
            conv_id=conv,
            seqs=[1],
            targets=[{"to": carol.user_id, "client_msg_id": "f1"}, {"conv_id": conv, "client_msg_id": "f2"}],
        )
        refused, replaced = out["results"]
        assert refused["sent"] == [] and refused["error"]["code"] == "rejected_by_policy"
        assert refused["error"]["message"] == "not to carol"
        assert replaced["sent"][0]["body"]["text"] == "copy" and "error" not in replaced
        assert receiver.requests[-1]["data"]["body"] == {"text": "x"}  # the hook sees the kind's body
        stored = await bob.pull(conv, 0)
        assert [m["body"]["text"] for m in stored] == ["x", "copy"]


# --- after_send: the durable outbox ----------------------------------------------------------------


def after_settings(url: str, **more: Any) -> dict[str, Any]:
    return {"webhooks": [{"url": url, "events": ["after_send"], "secret": SECRET}], **more}


async def metric(http: aiohttp.ClientSession, name: str) -> float | None:
    for line in (await (await http.get("/metrics")).text()).splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


async def test_after_send_is_delivered_signed(make_server: MakeServer, receiver: Receiver) -> None:
    server = await make_server(**after_settings(receiver.url))
    async with aiohttp.ClientSession(server.url) as http:
        alice, bob = await devices(http, ["alice", "bob"])
        acks = [
            await alice.request("send", to=bob.user_id, kind="text", body={"text": f"t{i}"}, client_msg_id=f"m{i}")
            for i in range(3)
        ]
        # a reply: on PostgreSQL a send job of its own rather than a run of sends, its events too
        conv = acks[0]["conv_id"]
        acks.append(
            await bob.request("send", conv_id=conv, kind="text", body={"text": "re"}, client_msg_id="r", reply_to=1)
        )
        async with asyncio.timeout(10):
            while len(receiver.requests) < 4:
                await asyncio.sleep(0.02)
        assert receiver.bad_signatures == 0
        by_id = {e["event_id"]: e for e in receiver.requests}
        assert set(by_id) == {a["msg_id"] for a in acks}  # the event id is the message id
        event = by_id[acks[0]["msg_id"]]
        assert event["event"] == "after_send"
        assert event["data"] == {
            "msg_id": acks[0]["msg_id"],
            "conv_id": acks[0]["conv_id"],
            "seq": 1,
            "sender_id": alice.user_id,
            "sender_device": "d1",
            "kind": "text",
            "body": {"text": "t0"},
            "client_msg_id": "m0",
        }
        # a resend (duplicate) adds no event: the first was written with the message
        again = await alice.request("send", to=bob.user_id, kind="text", body={"text": "t0"}, client_msg_id="m0")
        assert again["duplicate"] is True
        async with asyncio.timeout(15):  # the outbox empties (the gauges are read every few seconds)
            while await metric(http, "yim_webhook_outbox") != 0.0:
                await asyncio.sleep(0.2)
        assert len(receiver.requests) == 4


async def test_after_send_retries_then_dead_letter(make_server: MakeServer, receiver: Receiver) -> None:
    attempts: list[float] = []

    def decide(event: dict[str, Any]) -> Any:
        attempts.append(time.monotonic())
        return web.Response(status=503)

    receiver.decide = decide
    server = await make_server(**after_settings(receiver.url, webhook_retry_s="0.2,0.4", webhook_dead_after=4))
    async with aiohttp.ClientSession(server.url) as http:
        alice, bob = await devices(http, ["alice", "bob"])
        ack = await alice.request("send", to=bob.user_id, kind="text", body={"text": "x"}, client_msg_id="m1")
        async with asyncio.timeout(20):
            while await metric(http, "yim_webhook_dead_letters") != 1.0:
                await asyncio.sleep(0.2)
        assert len(attempts) == 4  # the first try and three retries, then no more
        assert {e["event_id"] for e in receiver.requests} == {ack["msg_id"]}
        gaps = [b - a for a, b in itertools.pairwise(attempts)]
        assert gaps[0] >= 0.15 and gaps[1] >= 0.35 and gaps[2] >= 0.35  # the schedule, its last wait repeated
        await asyncio.sleep(1.0)
        assert len(attempts) == 4
        metrics = await (await http.get("/metrics")).text()
        assert 'yim_webhook_deliveries_total{result="dead"} 1.0' in metrics
        assert 'yim_webhook_deliveries_total{result="retry"} 3.0' in metrics


async def _alice_sends_bob(url: str, text: str, client_msg_id: str) -> str:
    """New users alice and bob on the node at ``url``; alice sends bob ``text`` over HTTP
    (stored: 201). Returns its msg_id."""
    async with aiohttp.ClientSession(url) as http:
        alice, bob = await make_users(http, ["alice", "bob"])
        r = await http.post(
            "/api/v1/messages",
            json={"to": bob["user_id"], "kind": "text", "body": {"text": text}, "client_msg_id": client_msg_id},
            headers={"Authorization": f"Bearer {alice['token']}"},
        )
        assert r.status == 201
        msg_id: str = (await r.json())["msg_id"]
        return msg_id


async def test_outbox_survives_a_kill(server_process: Any, receiver: Receiver, store_url: str) -> None:
    """An ACKed message's event is delivered even though its node was killed (SIGKILL) before
    the hook could be reached: the outbox row was committed with the message, the restarted
    node delivers it."""
    await receiver.stop()  # the hook is down while the message is sent
    env = {
        "YIM_WEBHOOKS": json.dumps(after_settings(receiver.url)["webhooks"]),
        "YIM_WEBHOOK_RETRY_S": "0.2",
        "YIM_STORE": store_url,
    }
    proc = server_process(**env)
    await asyncio.to_thread(proc.start)
    msg_id = await _alice_sends_bob(proc.url, "kept", "k1")
    await asyncio.sleep(0.5)  # a failed attempt or two: the event waits for a retry
    proc.kill()
    assert receiver.requests == []
    await receiver.start()
    await asyncio.to_thread(proc.start)
    async with asyncio.timeout(15):
        while not receiver.requests:
            await asyncio.sleep(0.05)
    assert [e["event_id"] for e in receiver.requests] == [msg_id]
    assert receiver.requests[0]["data"]["body"] == {"text": "kept"}


@pytest.mark.backends("sqlite")
async def test_a_claim_held_by_a_killed_node_is_taken_back_at_its_restart(
    server_process: Any, receiver: Receiver
) -> None:
    """The node is killed while its attempt hangs (its claim leased for webhook_lease_s):
    restarted, it owns the store alone, so the event is delivered at once, not after the
    lease."""
    hanging = asyncio.Event()

    async def hang(event: dict[str, Any]) -> dict[str, Any]:
        hanging.set()
        await asyncio.sleep(3600)
        return {}

    receiver.decide = hang
    env = {"YIM_WEBHOOKS": json.dumps(after_settings(receiver.url)["webhooks"]), "YIM_WEBHOOK_LEASE_S": "600"}
    proc = server_process(**env)
    await asyncio.to_thread(proc.start)
    msg_id = await _alice_sends_bob(proc.url, "held", "h1")
    async with asyncio.timeout(15):
        await hanging.wait()  # claimed: the attempt is in flight
    proc.kill()
    receiver.requests.clear()
    receiver.decide = lambda event: {}
    await asyncio.to_thread(proc.start)
    async with asyncio.timeout(15):  # the lease (600 s) would hold it far longer
        while not receiver.requests:
            await asyncio.sleep(0.05)
    assert [e["event_id"] for e in receiver.requests] == [msg_id]


@pytest.mark.backends("postgres")
async def test_two_nodes_deliver_each_event_once(make_server: MakeServer, receiver: Receiver) -> None:
    """Nodes sharing one PostgreSQL store both deliver from the outbox; each event is claimed
    by one of them (FOR UPDATE SKIP LOCKED and a lease)."""
    seen: list[str] = []

    async def decide(event: dict[str, Any]) -> dict[str, Any]:
        seen.append(event["event_id"])
        await asyncio.sleep(1.0)  # longer than a node's poll: the other node looks while these are out
        return {}

    receiver.decide = decide
    first = await make_server(**after_settings(receiver.url))
    await make_server(**after_settings(receiver.url))
    async with aiohttp.ClientSession(first.url) as http:
        alice, bob = await devices(http, ["alice", "bob"])
        acks = await asyncio.gather(
            *(
                alice.request("send", to=bob.user_id, kind="text", body={"text": str(i)}, client_msg_id=f"m{i}")
                for i in range(60)
            )
        )
        async with asyncio.timeout(20):
            while len(seen) < 60:
                await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)
    assert sorted(seen) == sorted(a["msg_id"] for a in acks)  # every one, once


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"webhook_retry_s": "1,x"}, "not comma-separated seconds"),
        ({"webhook_retry_s": ""}, "at least one wait"),
        ({"webhook_lease_s": 5}, "must exceed webhook_timeout_s"),
        ({"webhook_dead_after": 0}, "webhook_dead_after"),
    ],
)
def test_bad_outbox_settings(setting: dict[str, Any], message: str) -> None:
    with pytest.raises(SettingsError) as err:
        load_settings(None, **setting)
    assert message in str(err.value) and "\n" not in str(err.value)


async def test_account_created_and_group_changed(make_server: MakeServer, receiver: Receiver) -> None:
    hooks = [{"url": receiver.url, "events": ["account_created", "group_changed"], "secret": SECRET}]
    server = await make_server(webhooks=hooks)
    async with aiohttp.ClientSession(server.url) as http:
        alice, bob = await devices(http, ["alice", "bob"])
        group = await alice.request("group_create", name="team", members=[bob.user_id])
        conv = group["group"]["conv_id"]
        await alice.request("group_update", conv_id=conv, name="the team")
        await bob.request("group_leave", conv_id=conv)
        async with asyncio.timeout(10):
            while len(receiver.requests) < 5:
                await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)
    assert receiver.bad_signatures == 0
    created = [e for e in receiver.requests if e["event"] == "account_created"]
    assert sorted(e["data"]["username"] for e in created) == ["alice", "bob"]
    assert {e["event_id"] for e in created} == {alice.user_id, bob.user_id}  # the user id
    changes = sorted((e for e in receiver.requests if e["event"] == "group_changed"), key=lambda e: e["data"]["seq"])
    assert len(changes) == 3 and len(receiver.requests) == 5
    assert [c["data"]["seq"] for c in changes] == [1, 2, 3]
    assert all(c["data"]["conv_id"] == conv for c in changes)
    assert changes[0]["data"]["actor_id"] == alice.user_id and changes[2]["data"]["actor_id"] == bob.user_id
    assert changes[1]["data"]["group"]["name"] == "the team"
    # the system entry's body: what changed (docs/protocol.md §11.3)
    assert [c["data"]["change"]["event"] for c in changes] == ["created", "updated", "left"]


async def test_service_session_opened_and_closed(make_server: MakeServer, receiver: Receiver) -> None:
    hooks = [{"url": receiver.url, "events": ["session_opened", "session_closed"], "secret": SECRET}]
    server = await make_server(webhooks=hooks)
    async with aiohttp.ClientSession(server.url) as http:
        owner, agent, customer = await devices(http, ["owner", "agent", "customer"])
        shop = (await owner.request("shop_create", name="shop"))["shop_id"]
        await owner.request("shop_agent_set", shop_id=shop, user_id=agent.user_id, skills=[], capacity=5)
        for n in range(2):  # the second message goes into the open session: no second event
            await customer.request("send", shop_id=shop, kind="text", body={"text": "help"}, client_msg_id=f"c{n}")
        session_id = (await customer.request("service_status", shop_id=shop))["session_id"]
        await customer.request("service_close", session_id=session_id)
        async with asyncio.timeout(10):
            while len(receiver.requests) < 2:
                await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)
    # one of each, the opening not after the closing (created_at is in milliseconds: both may
    # share one, and then the order they were delivered in, at once, is not theirs)
    by_event = {e["event"]: e for e in receiver.requests}
    assert sorted(by_event) == ["session_closed", "session_opened"] and len(receiver.requests) == 2
    assert by_event["session_opened"]["created_at"] <= by_event["session_closed"]["created_at"]
    for e in receiver.requests:
        assert e["event_id"] == session_id
        assert e["data"]["session_id"] == session_id and e["data"]["shop_id"] == shop
        assert e["data"]["customer_id"] == customer.user_id


async def test_a_send_the_store_refuses_after_the_hook_leaves_no_unread_failure(
    make_server: MakeServer, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    """Allowed by the hook, refused by the store (not a member): the sender gets the error
    reply, and the node logs no "exception was never retrieved" for the send's future."""
    server = await make_server(**hook_settings(receiver.url))
    async with aiohttp.ClientSession(server.url) as http:
        alice, bob, carol = await devices(http, ["alice", "bob", "carol"])
        first = await bob.request("send", to=carol.user_id, kind="text", body={"text": "hi"}, client_msg_id="b1")
        with pytest.raises(ProtocolError) as err:
            await alice.request("send", conv_id=first["conv_id"], kind="text", body={"text": "x"}, client_msg_id="a1")
        assert err.value.code in ("not_member", "not_found")
        await alice.request("ping")  # the refused send's future has left the connection's window
        for _ in range(3):
            gc.collect()
            await asyncio.sleep(0)
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]

"""Server webhooks (docs/operations.md §9): the operator's HTTP endpoints the server calls.

``before_send`` is synchronous: every message waits for the hook's verdict before it is
stored — allow it, reject it (the sender gets ``rejected_by_policy`` with the hook's reason)
or replace its body (validated again as its kind's body, stored, delivered and echoed to the
sender like a masked text). A hook that does not answer within ``before_send_timeout_s``, or
answers something else, is a failure, and ``before_send_fail`` decides: "open" stores the
message as sent, "closed" refuses it with ``unavailable``.

The events after a change (``after_send``, ``account_created``, ``group_changed``,
``session_opened``, ``session_closed``) go through the store's outbox
(:mod:`yim.storage.outbox`): written when the change commits — a message's in the very
transaction that stores it, so before its ACK and without a write of their own — and
delivered by every node's delivery loop, at least once, retried on the ``webhook_retry_s``
schedule, dead letters after ``webhook_dead_after`` attempts.

Every request is signed: ``X-Yim-Signature: sha256=<hex>``, the HMAC-SHA256 with the hook's
secret over ``<X-Yim-Timestamp> + "." + <body bytes>``; the receiver recomputes it and
refuses a timestamp outside its replay window.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import time
from typing import TYPE_CHECKING, Any, Literal

import aiohttp
import msgspec

from yim.protocol.errors import YimError
from yim.storage.outbox import OutboxEvent, OutboxRow

if TYPE_CHECKING:
    from yim.config import Settings, Webhook
    from yim.ids.snowflake import Snowflake
    from yim.metrics import Metrics
    from yim.protocol.frames import Send, SendBody
    from yim.storage.base import Store
    from yim.storage.records import SendResult, SessionRec

log = logging.getLogger("yim.hooks")

#: the longest reason of a rejection the sender is shown (the rest is cut)
MAX_REASON_CHARS = 200
#: the largest answer read from a hook: a replaced body is bounded by the kind's own limit
MAX_ANSWER_BYTES = 256 * 1024
#: outbox rows one claim takes (and so deliveries in flight per node)
CLAIM_BATCH = 64
#: how often an idle node looks for due outbox rows (an add on this node wakes it at once)
POLL_S = 0.5
#: how often the outbox gauges are read from the store
COUNT_EVERY_S = 5.0
#: how long a stopping node waits for outbox writes under way
STOP_WAIT_S = 5.0
#: the most of an error kept with an outbox row
MAX_ERROR_CHARS = 300
#: before_send calls in flight at once, node-wide; a send beyond it waits its turn, within
#: its timeout (the sends of one connection are bounded by the gateway already)
MAX_CONCURRENT_CALLS = 256


class Verdict(msgspec.Struct, forbid_unknown_fields=False):
    """A before_send hook's answer."""

    action: Literal["allow", "reject", "replace"]
    reason: str = ""
    #: replace: the new body (raw JSON); empty when not given
    body: msgspec.Raw = msgspec.Raw(b"")


_verdict_decoder = msgspec.json.Decoder(Verdict)
_encoder = msgspec.json.Encoder()


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The value of ``X-Yim-Signature`` (docs/operations.md §9.3)."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def _reason(text: str) -> str:
    """What of a hook's reason a sender is shown: printable, one line, bounded."""
    clean = "".join(ch if ch.isprintable() else " " for ch in text).strip()
    return clean[:MAX_REASON_CHARS] or "refused by the server's message policy"


class HookFailure(Exception):
    """The hook gave no verdict (timeout, connection refused, non-2xx, nonsense)."""


class Webhooks:
    """The node's webhooks. Built only when some are configured (``from_settings`` returns
    None otherwise), so a node without hooks pays one attribute check per send."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        hooks: list[Webhook] = list(settings.webhooks)  # type: ignore[arg-type]  # a str was parsed by Settings
        self.before_send_hook = next((h for h in hooks if "before_send" in h.events), None)
        #: the URLs of the hooks after_send events go to: each send names them, and the store
        #: writes the events to the outbox in the send's transaction; empty: none is written
        self.after_send_urls = tuple(h.url for h in hooks if "after_send" in h.events)
        self._by_url = {h.url: h for h in hooks}
        self._events = {event for h in hooks for event in h.events}
        self.timeout_s = settings.before_send_timeout_s
        self.fail_open = settings.before_send_fail == "open"
        self.retry_ms = [int(s * 1000) for s in settings.webhook_retry_s]  # parsed by Settings: a list
        self.dead_after = settings.webhook_dead_after
        self.delivery_timeout_s = settings.webhook_timeout_s
        self.lease_ms = int(settings.webhook_lease_s * 1000)
        self.metrics = metrics
        self.results = metrics.webhook_before_send
        self._http: aiohttp.ClientSession | None = None
        self._slots = asyncio.Semaphore(MAX_CONCURRENT_CALLS)
        #: (user, device) -> that device's newest send still waiting for its verdict: the
        #: device's sends are submitted in the order they came (yim/services/messages.py).
        #: At most one entry per device with a send in flight.
        self.waiting: dict[tuple[int, str], asyncio.Task[None]] = {}
        self._store: Store | None = None
        self._worker: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._recording: set[asyncio.Task[None]] = set()

    @classmethod
    def from_settings(cls, settings: Settings, metrics: Metrics) -> Webhooks | None:
        return cls(settings, metrics) if settings.webhooks else None

    def start(self, store: Store, *, deliver: bool = True) -> None:
        """``deliver``: run the outbox delivery loop (of the workers of one node, one does)."""
        # No proxy from the environment, no cookies: a hook is the operator's own service.
        self._http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=MAX_CONCURRENT_CALLS), cookie_jar=aiohttp.DummyCookieJar()
        )
        self._store = store
        if not deliver:
            return
        # Every node with hooks delivers outbox rows, those other nodes added (or left behind)
        # too, and those of a hook no longer configured (they become dead letters).
        self._worker = asyncio.get_running_loop().create_task(self._deliver_forever())

    async def stop(self) -> None:
        if self._recording:  # events being written to the outbox: let them land (bounded)
            await asyncio.wait(set(self._recording), timeout=STOP_WAIT_S)
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        if self._http is not None:
            await self._http.close()
            self._http = None

    # --- after_send: the durable outbox ---------------------------------------------------------

    def sent(self, fut: asyncio.Future[SendResult]) -> None:
        """A send with after_send events committed (the store wrote them to the outbox in
        the message's own transaction, yim/storage/outbox.py): wake the delivery loop."""
        if not fut.cancelled() and fut.exception() is None and not fut.result().duplicate:
            self._wake.set()

    async def emit(self, event: str, event_id: int, data: Any) -> None:
        """Record an event after a change (account_created, group_changed) in the outbox,
        when a hook takes it. The change is committed already: if the outbox write fails
        the event is lost — logged and counted (``yim_webhook_deliveries{result="lost"}``),
        not the caller's error."""
        hooks = [h for h in self._by_url.values() if event in h.events]
        if not hooks:
            return
        payload = _encoder.encode(
            {"event_id": str(event_id), "event": event, "created_at": int(time.time() * 1000), "data": data}
        )
        try:
            if self._store is None:
                raise YimError("unavailable", "the node is not serving")
            await self._store.outbox.add(
                [OutboxEvent(h.url, event, event_id, payload) for h in hooks], int(time.time() * 1000)
            )
        except Exception as exc:
            log.error("webhook event %s %s lost: the outbox write failed: %s", event, event_id, exc)
            self.metrics.webhook_deliveries.labels("lost").inc(len(hooks))
            return
        self._wake.set()

    def takes(self, event: str) -> bool:
        """Does a hook take this event (one dict lookup; for the callers on hot paths)."""
        return event in self._events

    def emit_soon(self, event: str, event_id: int, data: Any) -> None:
        """:meth:`emit` from code that cannot wait for it (a callback): in a task of its own,
        kept until it ends."""
        task = asyncio.get_running_loop().create_task(self.emit(event, event_id, data))
        self._recording.add(task)
        task.add_done_callback(self._recording.discard)

    async def _deliver_forever(self) -> None:
        counted = 0.0
        assert self._store is not None
        try:
            # rows a killed deliverer had claimed (SQLite: this is the only deliverer) are due
            # now, not when that claim's lease ends (webhook_lease_s)
            released = await self._store.outbox.release_claims(int(time.time() * 1000))
            if released:
                log.info("webhook outbox: %d waiting events due again at start", released)
        except Exception as exc:  # the store is away: the leases end on their own
            log.warning("webhook outbox: %s", exc)
        while True:
            try:
                store = self._store
                assert store is not None
                now = time.time()
                if now - counted >= COUNT_EVERY_S:
                    waiting, dead = await store.outbox.counts()
                    self.metrics.webhook_outbox.set(waiting)
                    self.metrics.webhook_dead_letters.set(dead)
                    counted = now
                rows = await store.outbox.claim(int(now * 1000), self.lease_ms, CLAIM_BATCH)
                if rows:
                    await self._deliver_batch(store, rows)
                    counted = 0.0  # the counts changed: read them on the next turn
                    continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the store is away: try again on the next turn
                log.warning("webhook outbox: %s", exc)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(POLL_S):
                    await self._wake.wait()

    async def _deliver_batch(self, store: Store, rows: list[OutboxRow]) -> None:
        errors = await asyncio.gather(*(self._deliver(row) for row in rows))
        done = [row.id for row, error in zip(rows, errors, strict=True) if error is None]
        await store.outbox.delivered(done)
        self.metrics.webhook_deliveries.labels("delivered").inc(len(done))
        now = int(time.time() * 1000)
        for row, error in zip(rows, errors, strict=True):
            if error is None:
                continue
            attempts = row.attempts + 1
            if attempts >= self.dead_after:
                log.warning(
                    "webhook %s event %s is a dead letter after %d attempts: %s", row.url, row.event_id, attempts, error
                )
                self.metrics.webhook_deliveries.labels("dead").inc()
                await store.outbox.failed(row.id, attempts, None, error[:MAX_ERROR_CHARS], now)
            else:
                self.metrics.webhook_deliveries.labels("retry").inc()
                wait = self.retry_ms[min(attempts, len(self.retry_ms)) - 1]
                await store.outbox.failed(row.id, attempts, now + wait, error[:MAX_ERROR_CHARS], now)

    async def _deliver(self, row: OutboxRow) -> str | None:
        """POST one outbox row: None when the hook took it (any 2xx), else why not."""
        hook = self._by_url.get(row.url)
        http = self._http
        if hook is None or row.event not in hook.events:
            return f"no hook for {row.event} at this URL in the settings"
        if http is None:
            return "webhooks are stopped"
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "X-Yim-Event": row.event,
            "X-Yim-Event-Id": str(row.event_id),
            "X-Yim-Timestamp": timestamp,
            "X-Yim-Signature": sign(hook.secret, timestamp, row.payload),
        }
        try:
            async with asyncio.timeout(self.delivery_timeout_s):
                async with http.post(hook.url, data=row.payload, headers=headers, allow_redirects=False) as resp:
                    if 200 <= resp.status < 300:
                        return None
                    return f"HTTP {resp.status}"
        except TimeoutError:
            return f"no answer within {self.delivery_timeout_s} s"
        except (aiohttp.ClientError, OSError) as exc:
            return str(exc) or type(exc).__name__

    # --- before_send ----------------------------------------------------------------------------

    async def before_send(self, ids: Snowflake, session: SessionRec, req: Send | SendBody, body: bytes) -> bytes | None:
        """The hook's verdict on a message about to be stored, with its canonical ``body``:
        None to store it as it is, the replacement body (raw JSON, not yet validated) to store
        instead; raises ``rejected_by_policy``, or ``unavailable`` when the hook failed and
        ``before_send_fail`` is "closed"."""
        hook = self.before_send_hook
        assert hook is not None
        event_id = str(ids.next_id())
        payload = _encoder.encode(
            {
                "event_id": event_id,
                "event": "before_send",
                "created_at": int(time.time() * 1000),
                "data": {
                    "sender_id": str(session.user_id),
                    "sender_device": session.device_id,
                    "kind": req.kind,
                    "body": msgspec.Raw(body),
                    "to": req.to,
                    "conv_id": req.conv_id,
                    "shop_id": req.shop_id,
                    "client_msg_id": req.client_msg_id,
                    "reply_to": req.reply_to,
                },
            }
        )
        try:
            async with asyncio.timeout(self.timeout_s):
                async with self._slots:
                    verdict = await self._call(hook, "before_send", event_id, payload)
        except (HookFailure, TimeoutError, aiohttp.ClientError, OSError) as exc:
            self.failed("timed out" if isinstance(exc, TimeoutError) else str(exc) or type(exc).__name__)
            return None
        self.results.labels(verdict.action).inc()
        if verdict.action == "reject":
            raise YimError("rejected_by_policy", _reason(verdict.reason))
        if verdict.action == "replace":
            return bytes(verdict.body)  # not empty: checked by _call
        return None

    def failed(self, why: str) -> None:
        """The before_send hook gave no usable verdict: with ``before_send_fail = "open"`` the
        message goes on as sent (None), with "closed" it is refused (``unavailable``)."""
        assert self.before_send_hook is not None
        mode = "open" if self.fail_open else "closed"
        log.warning("before_send hook %s failed (%s): fail-%s", self.before_send_hook.url, why, mode)
        self.results.labels("failed").inc()
        if not self.fail_open:
            raise YimError("unavailable", "the server's message policy check is not answering; retry later")

    async def _call(self, hook: Webhook, event: str, event_id: str, payload: bytes) -> Verdict:
        http = self._http
        if http is None:
            raise HookFailure("webhooks are not started")
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "X-Yim-Event": event,
            "X-Yim-Event-Id": event_id,
            "X-Yim-Timestamp": timestamp,
            "X-Yim-Signature": sign(hook.secret, timestamp, payload),
        }
        async with http.post(hook.url, data=payload, headers=headers, allow_redirects=False) as resp:
            if resp.status != 200:
                raise HookFailure(f"HTTP {resp.status}")
            answer = await resp.content.read(MAX_ANSWER_BYTES + 1)
        if len(answer) > MAX_ANSWER_BYTES:
            raise HookFailure(f"answer over {MAX_ANSWER_BYTES} bytes")
        try:
            verdict = _verdict_decoder.decode(answer)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise HookFailure(f"answer is not a verdict: {exc}") from None
        if verdict.action == "replace" and not verdict.body:
            raise HookFailure("a replace verdict without a body")
        return verdict

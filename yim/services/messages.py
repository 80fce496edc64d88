"""Sending messages: validate, store durably, then deliver (``send_message``).

The life of a message (docs/architecture.md): the gateway decodes the frame; this module
validates kind and body and assigns a Snowflake ``msg_id``; the store appends it in one
transaction (conversation seq, each member's inbox seq, idempotency by client_msg_id);
only after COMMIT does the returned future resolve, the sender's ACK go out, and the
event get pushed to every other device of every member.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import msgspec

from yim.protocol.errors import YimError
from yim.protocol.frames import (
    CustomBody,
    Edit,
    EditOut,
    EmojiBody,
    ErrorOut,
    Forward,
    ForwardOut,
    ForwardResult,
    HiddenMarker,
    Hide,
    HideOut,
    MessageVersions,
    Recall,
    RecallOut,
    Send,
    SendAck,
    SendBody,
    TextBody,
    VersionOut,
    VersionsOut,
)
from yim.protocol.ids import parse_id
from yim.services.delivery import publish_entry
from yim.services.media import media_ref_body
from yim.services.service import session_event
from yim.services.words import EchoedResult, echo_body, echoed_now
from yim.storage.media import MEDIA_KINDS, carried_media_id
from yim.storage.records import SendCmd, SendResult, SessionRec
from yim.storage.rules import quotes

if TYPE_CHECKING:
    from yim.services.context import Context, Device
    from yim.services.hooks import Webhooks

_text_decoder = msgspec.json.Decoder(TextBody)
_emoji_decoder = msgspec.json.Decoder(EmojiBody)
_custom_decoder = msgspec.json.Decoder(CustomBody)
#: the most copies one ``forward`` makes (messages x targets): each is a send
MAX_FORWARD_COPIES = 50
_encoder = msgspec.json.Encoder()
# C0 control characters other than tab, newline and carriage return have no place in chat text.
_FORBIDDEN_CONTROLS = frozenset(chr(c) for c in range(32) if chr(c) not in "\t\n\r") | {"\x7f"}


def _has_controls(text: str) -> bool:
    return not _FORBIDDEN_CONTROLS.isdisjoint(text)


def canonical_body(kind: str, raw: bytes, max_text_chars: int) -> bytes:
    """Validate a body for its kind and return its canonical JSON."""
    if len(raw) > max_text_chars * 6 + 256:  # worst case: every char escaped as \\uXXXX
        raise YimError("body_too_large", f"body exceeds {max_text_chars} characters")
    try:
        if kind == "text":
            body = _text_decoder.decode(raw)
            if not body.text.strip():
                raise YimError("invalid_body", "text must not be empty")
            if len(body.text) > max_text_chars:
                raise YimError("body_too_large", f"text exceeds {max_text_chars} characters")
            if _has_controls(body.text):
                raise YimError("invalid_body", "text contains control characters")
            return _encoder.encode(body)
        if kind == "emoji":
            emoji = _emoji_decoder.decode(raw)
            if _has_controls(emoji.emoji) or not emoji.emoji.strip():
                raise YimError("invalid_body", "emoji must be a visible emoji or sticker code")
            return _encoder.encode(emoji)
        if kind == "custom":
            custom = _custom_decoder.decode(raw)
            if custom.text is not None:
                if len(custom.text) > max_text_chars:
                    raise YimError("body_too_large", f"text exceeds {max_text_chars} characters")
                if _has_controls(custom.text):
                    raise YimError("invalid_body", "text contains control characters")
            return _encoder.encode(custom)
    except msgspec.ValidationError as exc:
        raise YimError("invalid_body", f"body of a {kind} message: {exc}") from None
    except (msgspec.DecodeError, UnicodeError) as exc:  # UnicodeError: an HTTP body that is not UTF-8
        raise YimError("invalid_body", f"body is not valid JSON: {exc}") from None
    if kind in ("system", "recall", "edit"):
        raise YimError("invalid_kind", f"{kind} entries are written by the server, not sent")
    if kind in MEDIA_KINDS:
        # {"media_id": ...}: resolved (access, kind/type, metadata) in the store transaction.
        return media_ref_body(kind, raw)
    raise YimError("invalid_kind", f"unknown message kind {kind!r} (text, emoji, image, video, file, custom)")


def send_message(
    node: Context,
    session: SessionRec,
    req: Send | SendBody,
    origin: Device | None = None,
    on_done: Callable[[asyncio.Future[SendResult]], None] | None = None,
) -> asyncio.Future[SendResult]:
    """Validate and submit a message. The returned future resolves after the durable
    commit; ``on_done`` (the sender's ACK) is called with it right after the pushes to the
    other devices, in the same callback — one loop callback per message, not two. A reply's
    quote is checked and written by the store, in the send's own transaction
    (docs/architecture.md §2.1)."""
    if req.reply_to is not None and req.conv_id is None:
        raise YimError("bad_request", "a reply is sent into the conversation of the message it quotes: give `conv_id`")
    body = canonical_body(req.kind, req.body, node.settings.max_text_chars)
    masked = False
    if node.words is not None:  # sensitive words: content_blocked, or a masked body stored, pushed and echoed
        body, masked = node.words.message_body(req.kind, body)
    hooks = node.hooks
    if hooks is not None and hooks.before_send_hook is not None:
        return _checked(node, hooks, session, req, body, origin, on_done, masked)
    return _submit(node, session, req, body, origin, on_done, echo=masked)


def _checked(
    node: Context,
    hooks: Webhooks,
    session: SessionRec,
    req: Send | SendBody,
    body: bytes,
    origin: Device | None,
    on_done: Callable[[asyncio.Future[SendResult]], None] | None,
    masked: bool,
) -> asyncio.Future[SendResult]:
    """:func:`send_message` with the before_send hook asked first. The verdicts of one
    device's sends are awaited concurrently but the sends are submitted in the order they
    came, so a device's messages keep their order in the conversation."""
    loop = asyncio.get_running_loop()
    out: asyncio.Future[SendResult] = loop.create_future()
    key = (session.user_id, session.device_id)
    waiting = hooks.waiting
    before = waiting.get(key)

    def finish(done: asyncio.Future[SendResult]) -> None:
        if not out.done():
            if done.cancelled():
                out.cancel()
            elif (exc := done.exception()) is not None:
                out.set_exception(exc)
                if on_done is not None:
                    # answered by on_done already; a connection only counts `out` in flight
                    # and never reads it: marked read, or asyncio logs it as never retrieved
                    out.exception()
            else:
                out.set_result(done.result())

    def refused(exc: BaseException) -> None:
        if out.done():  # cancelled: the HTTP client went away while the hook was asked
            return
        out.set_exception(exc)
        if on_done is not None:
            on_done(out)

    async def check() -> None:
        final, echo, error = body, masked, None
        try:
            replaced = await _policy_body(node, hooks, session, req, body)
        except Exception as exc:  # a YimError for the sender, or a bug: the ACK says internal
            error = exc
        else:
            if replaced is not None:
                final, echo = replaced, True
        if before is not None:  # the device's earlier send is submitted (or refused) first
            await asyncio.wait([before])
        if error is not None:
            refused(error)
            return
        try:
            inner = _submit(node, session, req, final, origin, on_done, echo=echo)
        except Exception as exc:  # bad addressing (bad_request ...), as without the hook
            refused(exc)
            return
        inner.add_done_callback(finish)

    def forget(task: asyncio.Task[None]) -> None:
        if waiting.get(key) is task:
            del waiting[key]
        if task.cancelled() and not out.done():  # the node stops
            out.cancel()

    task = loop.create_task(check())
    waiting[key] = task
    task.add_done_callback(forget)
    return out


async def _policy_body(
    node: Context, hooks: Webhooks, session: SessionRec, req: Send | SendBody, body: bytes
) -> bytes | None:
    """The before_send hook's verdict on a message with the canonical ``body`` of its kind:
    None to store it as it is, or the replacement, validated as a body of its kind (one the
    kind refuses is a failure of the hook). Raises ``rejected_by_policy`` / ``unavailable``."""
    replaced = await hooks.before_send(node.ids, session, req, body)
    if replaced is None:
        return None
    try:
        return canonical_body(req.kind, replaced, node.settings.max_text_chars)
    except YimError as exc:
        hooks.failed(f"replacement body refused: {exc.message}")  # raises when fail-closed
        return None


def _submit(
    node: Context,
    session: SessionRec,
    req: Send | SendBody,
    body: bytes,
    origin: Device | None,
    on_done: Callable[[asyncio.Future[SendResult]], None] | None,
    *,
    echo: bool = False,
) -> asyncio.Future[SendResult]:
    """Submit a message whose ``body`` is canonical (its kind's body and any server fields),
    addressed as ``req`` says. ``echo``: the server changed the text (masked words), so the
    ACK carries the stored body for the sender's devices to show."""
    if (req.to is not None) + (req.conv_id is not None) + (req.shop_id is not None) != 1:
        raise YimError("bad_request", "give exactly one of `to` (a user id), `conv_id` or `shop_id`")
    now = int(time.time() * 1000)
    hooks = node.hooks
    cmd = SendCmd(
        msg_id=node.ids.next_id(),
        new_conv_id=node.ids.next_id() if req.conv_id is None else 0,
        sender_id=session.user_id,
        sender_device=session.device_id,
        kind=req.kind,
        body=body,
        client_msg_id=req.client_msg_id,
        created_at=now,
        to=parse_id(req.to, "user") if req.to is not None else None,
        conv_id=parse_id(req.conv_id, "conversation") if req.conv_id is not None else None,
        mentions=tuple(dict.fromkeys(parse_id(u, "user") for u in req.mentions or ())),
        mention_all=req.mention_all,
        shop_id=parse_id(req.shop_id, "shop") if req.shop_id is not None else None,
        category=req.category,
        new_session_id=node.ids.next_id() if req.to is None else 0,
        reply_to=req.reply_to,
        after_send=hooks.after_send_urls if hooks is not None else (),
    )
    fut = node.media.send_message(cmd) if req.kind in MEDIA_KINDS else node.store.send_message(cmd)
    if hooks is not None and cmd.new_session_id and hooks.takes("session_opened"):
        fut.add_done_callback(functools.partial(_session_opened, hooks, cmd.new_session_id))
    if hooks is not None and cmd.after_send:
        # its after_send events were committed with it: deliver them now
        fut.add_done_callback(hooks.sent)
    # On the store's own future, even for an echoed send: the sends of one batch are
    # resolved together, and each one's pushes and ACK must go in that turn, in their order
    # (docs/protocol.md, "Reply order"); a future in between would answer it a turn late.
    fut.add_done_callback(functools.partial(_after_commit, node, origin, time.perf_counter(), on_done, echo))
    # A caller that awaits the result (no on_done) gets the echoed body in it; with on_done
    # the future only counts the send in flight, and a failure stays retrieved by the above.
    return echo_body(fut) if echo and on_done is None else fut


def _session_opened(hooks: Webhooks, session_id: int, fut: asyncio.Future[SendResult]) -> None:
    """A send to a shop opens a service session with the id it offered (``new_session_id``)
    when the customer has none open: its events then name that id."""
    if fut.cancelled() or fut.exception() is not None:
        return
    wanted = str(session_id)
    for _user, _seq, payload in fut.result().events:
        ev = msgspec.json.decode(payload)
        if ev.get("session_id") == wanted:
            hooks.emit_soon("session_opened", session_id, session_event(ev))
            return


def _after_commit(
    node: Context,
    origin: Device | None,
    started: float,
    on_done: Callable[[asyncio.Future[SendResult]], None] | None,
    echo: bool,
    fut: asyncio.Future[SendResult],
) -> None:
    try:
        if fut.cancelled() or fut.exception() is not None:
            return
        result = fut.result()
        metrics = node.metrics
        if result.duplicate:
            metrics.messages_dup.inc()
            return
        metrics.store_latency.observe(time.perf_counter() - started)
        metrics.messages_in.inc()
        metrics.deliveries.inc(len(result.deliveries))
        publish_entry(node, result, origin)
    finally:
        # The ACK follows the pushes, and is sent even if a push failed (it is stored).
        if on_done is not None:
            on_done(echoed_now(fut) if echo else fut)


async def recall(node: Context, session: SessionRec, req: Recall, origin: Device | None = None) -> RecallOut:
    """Recall (撤回) a message: the sender within ``recall_limit_s``, a group owner/admin any
    time. The message is replaced by a recalled marker and a ``recall`` entry naming it is
    appended, so every device — online now or syncing later — learns of it in order."""
    conv_id = parse_id(req.conv_id, "conversation")
    now = int(time.time() * 1000)
    result = await node.store.recall(
        conv_id, session.user_id, req.seq, node.ids.next_id(), now, node.settings.recall_limit_s * 1000
    )
    publish_entry(node, result, origin)
    return RecallOut(conv_id=req.conv_id, seq=req.seq, recall_seq=result.message.seq, inbox_seq=result.sender_inbox_seq)


async def edit(node: Context, session: SessionRec, req: Edit, origin: Device | None = None) -> EditOut:
    """Edit one's own text message within ``edit_window_s``: the message takes the new text
    (its body says ``edited_at``), the text it had is kept as a version, and an ``edit``
    entry carrying the new body is appended, so every device — online now or syncing later —
    learns of it in order. Users the edit newly mentions are notified by that entry."""
    conv_id = parse_id(req.conv_id, "conversation")
    body = canonical_body("text", _encoder.encode(TextBody(text=req.text)), node.settings.max_text_chars)
    mentions = None if req.mentions is None else tuple(dict.fromkeys(parse_id(u, "user") for u in req.mentions))
    now = int(time.time() * 1000)
    result = await node.store.edit(
        conv_id,
        session.user_id,
        req.seq,
        body,
        mentions,
        node.ids.next_id(),
        now,
        node.settings.edit_window_s * 1000,
    )
    publish_entry(node, result, origin)
    return EditOut(
        conv_id=req.conv_id, seq=req.seq, edit_seq=result.message.seq, edited_at=now, inbox_seq=result.sender_inbox_seq
    )


async def versions(
    node: Context, session: SessionRec, req: MessageVersions, origin: Device | None = None
) -> VersionsOut:
    """The earlier versions of an edited message, for the members who can see it."""
    found = await node.store.message_versions(session.user_id, parse_id(req.conv_id, "conversation"), req.seq)
    return VersionsOut(
        conv_id=req.conv_id, seq=req.seq, versions=[VersionOut(body=msgspec.Raw(b), created_at=at) for b, at in found]
    )


async def hide(node: Context, session: SessionRec, req: Hide, origin: Device | None = None) -> HideOut:
    """Delete for me: the entries vanish from the user's own devices only — their history,
    sync and search leave them out and their unread stops counting them; the user's other
    devices learn it by a ``hidden`` event in the user's inbox."""
    conv_id = parse_id(req.conv_id, "conversation")
    new, res = await node.store.hide(session.user_id, conv_id, list(req.seqs), int(time.time() * 1000))
    if res.inbox_seq is not None:
        payload = _encoder.encode(HiddenMarker(conv_id=req.conv_id, seqs=new))
        node.bus.publish_event([(session.user_id, res.inbox_seq)], "hidden", payload, origin)
    return HideOut(
        conv_id=req.conv_id,
        seqs=new,
        unread=res.unread,
        total_unread=res.total_unread,
        inbox_seq=res.inbox_seq or 0,
    )


def forward_copies(req: Forward) -> int:
    """How many messages a ``forward`` sends: each distinct seq once per target."""
    return len(set(req.seqs)) * len(req.targets)


async def forward(node: Context, session: SessionRec, req: Forward, origin: Device | None = None) -> ForwardOut:
    """Copy messages of a conversation the sender is a member of into other conversations:
    each copy is a normal send (its own seq, inbox entries, unread count, idempotency by
    ``client_msg_id`` + "." + its index); media travel by their media id (the same content,
    not uploaded again); the copy's body says ``forwarded``. Targets are served in order and
    independently: one that refuses (blocked, not a member, ...) stops only its own copies."""
    targets = req.targets
    for t in targets:
        if (t.to is None) == (t.conv_id is None):
            raise YimError("bad_request", "each forward target gives exactly one of `to` (a user id) or `conv_id`")
    seqs = list(dict.fromkeys(req.seqs))
    if forward_copies(req) > MAX_FORWARD_COPIES:
        raise YimError("bad_request", f"one forward makes at most {MAX_FORWARD_COPIES} copies (messages x targets)")
    found = await node.store.quotable(parse_id(req.conv_id, "conversation"), session.user_id, seqs)
    copies = []
    for m in found.messages:
        body, fields = quotes.forwarded_body(m, found.conv_type)
        if m.kind in MEDIA_KINDS:  # the media travels by id: the store checks access and fills in the rest
            body = _encoder.encode({"media_id": str(carried_media_id(m.body))})
        copies.append((m.kind, body, fields))
    hooks = node.hooks
    if hooks is not None and hooks.before_send_hook is None:
        hooks = None
    results = []
    for t in targets:
        out = ForwardResult(client_msg_id=t.client_msg_id, sent=[], to=t.to, conv_id=t.conv_id)
        for i, (kind, body, fields) in enumerate(copies):
            send = SendBody(
                kind=kind, body=msgspec.Raw(b"{}"), client_msg_id=f"{t.client_msg_id}.{i}", to=t.to, conv_id=t.conv_id
            )
            try:
                # each copy is a send into its target: the message policy is asked as for one
                replaced = await _policy_body(node, hooks, session, send, body) if hooks is not None else None
                final = quotes.with_fields(body if replaced is None else replaced, fields)
                result = await _submit(node, session, send, final, origin, None, echo=replaced is not None)
            except YimError as exc:
                out.error = ErrorOut(code=exc.code, message=exc.message)
                break
            out.sent.append(send_ack(result))
        results.append(out)
    return ForwardOut(results=results)


def send_ack(result: SendResult) -> SendAck:
    m = result.message
    return SendAck(
        msg_id=str(m.msg_id),
        conv_id=str(m.conv_id),
        seq=m.seq,
        inbox_seq=result.sender_inbox_seq,
        created_at=m.created_at,
        duplicate=result.duplicate,
        body=msgspec.Raw(m.body) if isinstance(result, EchoedResult) else msgspec.UNSET,
    )

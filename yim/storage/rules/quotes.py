"""Replies and forwards: which messages a member may quote or forward, and the fields the
server writes into a message's stored body for them.

A reply's body is its kind's body plus ``"quote"``, a snapshot of the quoted message taken at
send time (docs/protocol.md "Replies"); a forwarded copy's body is the original's plus
``"forwarded"``. Both are written by the server only (the kinds' bodies refuse them from a
client), so a reader can trust them. A recall rewrites the snapshot of every reply to the
recalled message in the recall's own transaction (:func:`quote_recalled`), so history and
sync never show the excerpt of a recalled message.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from yim.protocol.errors import YimError
from yim.storage.records import MessageRec, SendCmd

#: the longest excerpt a quote carries, in characters
EXCERPT_CHARS = 100
#: the field names the server writes into stored bodies (``edited_at``: when the text was last edited)
QUOTE, FORWARDED, EDITED = "quote", "forwarded", "edited_at"
#: what a body holding a quote contains, as both stores' partial index on quotes matches it
QUOTE_MARK = '"quote":{'
#: the kinds that may be quoted and forwarded (not system or recall entries)
QUOTABLE_KINDS = frozenset({"text", "emoji", "image", "video", "file", "custom"})
#: what a copy says of its original's sender: named, except for customer-service conversations,
#: where agents answer for their shop and their ids stay inside it
NAMES_SENDER = frozenset({"direct", "group"})

_dict_decoder = msgspec.json.Decoder(dict[str, Any])
_encoder = msgspec.json.Encoder()


class Quotable(msgspec.Struct, frozen=True):
    """The messages a member asked to quote or forward, checked, and what a snapshot needs."""

    conv_id: int
    conv_type: str
    messages: list[MessageRec]  # in the order asked for
    #: the highest joined_seq of the conversation's current members: a message at or below it
    #: is one some member cannot see, whose content a quote must not show them
    newest_join: int


def check_quotable(
    conv_id: int, seqs: Sequence[int], joined_seq: int | None, found: dict[int, MessageRec]
) -> list[MessageRec]:
    """May a member (``joined_seq`` while they are one; None: not a current member) quote or
    forward the messages at ``seqs``? Entries before they joined do not exist for them, as
    for history and recall; recalled messages and system entries cannot be quoted."""
    if joined_seq is None:
        raise YimError("not_member", f"you are not a member of conversation {conv_id}")
    out = []
    for seq in seqs:
        m = found.get(seq)
        if m is None or seq <= joined_seq:
            raise YimError("not_found", f"no message {seq} in conversation {conv_id}")
        if m.recalled:
            raise YimError("already_recalled", f"message {seq} was recalled")
        if m.kind not in QUOTABLE_KINDS:
            raise YimError(
                "bad_request", f"message {seq} is a {m.kind} entry; only messages can be quoted or forwarded"
            )
        out.append(m)
    return out


def excerpt(kind: str, body: bytes) -> str:
    """A few words of a message to show in a quote: a text's start, an emoji, a file's name,
    a custom message's text fallback; nothing for an image or a video."""
    d = _dict_decoder.decode(body)
    key = {"text": "text", "emoji": "emoji", "file": "name", "custom": "text"}.get(kind)
    value = d.get(key) if key is not None else None
    return value[:EXCERPT_CHARS] if isinstance(value, str) else ""


def quote_snapshot(m: MessageRec, withheld: bool) -> dict[str, Any]:
    """The ``quote`` of a reply to ``m``. ``withheld``: some member of the conversation cannot
    see ``m`` (they joined after it), so only its seq is given — every member gets the same
    body, and clients that hold ``m`` render it from their copy."""
    if withheld:
        return {"seq": m.seq, "withheld": True}
    return {
        "seq": m.seq,
        "msg_id": str(m.msg_id),
        "sender_id": str(m.sender_id),
        "kind": m.kind,
        "excerpt": excerpt(m.kind, m.body),
    }


def quoted(c: SendCmd, found: Quotable) -> SendCmd:
    """The send ``c`` (a reply, ``c.reply_to`` checked into ``found`` by the store inside the
    send's transaction) with its quote written into its body: what is stored and delivered."""
    m = found.messages[0]
    quote = quote_snapshot(m, withheld=found.newest_join >= m.seq)
    return msgspec.structs.replace(c, body=with_fields(c.body, {QUOTE: quote}))


def with_fields(body: bytes, fields: dict[str, Any]) -> bytes:
    """``body`` (a JSON object) with server fields appended, keeping its bytes as they are."""
    if not fields:
        return body
    extra = _encoder.encode(fields)
    if body.rstrip() == b"{}":
        return extra
    return body.rstrip()[:-1] + b"," + extra[1:]


def server_fields(body: bytes) -> dict[str, Any]:
    """The server fields a body holds (a media send's ``{"media_id", "quote"?, "forwarded"?}``)."""
    d = _dict_decoder.decode(body)
    return {k: d[k] for k in (QUOTE, FORWARDED) if k in d}


def forwarded_body(m: MessageRec, conv_type: str) -> tuple[bytes, dict[str, Any]]:
    """The body of a copy of ``m`` without its server fields, and the server fields the copy
    gets: its quote is dropped (its seq means nothing in another conversation); a copy of a
    copy keeps the first ``forwarded``, naming the original sender."""
    d = _dict_decoder.decode(m.body)
    d.pop(QUOTE, None)
    d.pop(EDITED, None)  # a copy is a new message, never edited
    first = d.pop(FORWARDED, None)
    if isinstance(first, dict):
        forwarded = first
    else:
        forwarded = {"sender_id": str(m.sender_id)} if conv_type in NAMES_SENDER else {}
    return _encoder.encode(d), {FORWARDED: forwarded}


def quote_recalled(body: bytes) -> bytes:
    """A reply's body once the message it quotes is recalled: the quote keeps its seq, ids
    and kind, loses the excerpt and says ``recalled``."""
    d = _dict_decoder.decode(body)
    quote = d.get(QUOTE)
    if not isinstance(quote, dict):
        return body
    quote.pop("excerpt", None)
    quote["recalled"] = True
    return _encoder.encode(d)


def edited_body(old: bytes, new: bytes, edited_at: int) -> bytes:
    """A message's body after an edit: ``new`` (a canonical text body) with the server fields
    of ``old`` kept (its quote, its ``forwarded``) and ``edited_at`` set."""
    fields = server_fields(old)
    fields[EDITED] = edited_at
    return with_fields(new, fields)


def quote_edited(body: bytes, kind: str, edited: bytes) -> bytes:
    """A reply's body once the message it quotes is edited: the excerpt follows the new text
    (a withheld quote stays withheld: it never showed the text) and says ``edited``."""
    d = _dict_decoder.decode(body)
    quote = d.get(QUOTE)
    if not isinstance(quote, dict) or quote.get("withheld") or quote.get("recalled"):
        return body
    quote["excerpt"] = excerpt(kind, edited)
    quote["edited"] = True
    return _encoder.encode(d)


def version_time(body: bytes, created_at: int) -> int:
    """When a message's body was written: its ``edited_at`` if an edit wrote it, else the
    send's time (``created_at``)."""
    at = _dict_decoder.decode(body).get(EDITED)
    return at if isinstance(at, int) else created_at

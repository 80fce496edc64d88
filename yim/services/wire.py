"""Store records -> wire payloads. Message payloads are encoded to JSON once per message
and shared by every recipient."""

from __future__ import annotations

import msgspec

from yim.protocol.frames import MessageOut, ReadMarker
from yim.storage.base import InboxEvent, MessageRec

_json = msgspec.json.Encoder()


def message_out(m: MessageRec) -> MessageOut:
    return MessageOut(
        msg_id=str(m.msg_id),
        conv_id=str(m.conv_id),
        seq=m.seq,
        sender_id=str(m.sender_id),
        sender_device=m.sender_device,
        kind=m.kind,
        body=msgspec.Raw(m.body),
        client_msg_id=m.client_msg_id,
        created_at=m.created_at,
        recalled=m.recalled,
    )


def message_json(m: MessageRec) -> bytes:
    return _json.encode(message_out(m))


def read_json(conv_id: int, read_seq: int) -> bytes:
    return _json.encode(ReadMarker(conv_id=str(conv_id), read_seq=read_seq))


def event_payload(ev: InboxEvent) -> bytes:
    """The canonical JSON ``data`` of an inbox event, as sync and push both send it."""
    if ev.type == "message" and ev.message is not None:
        return message_json(ev.message)
    if ev.type == "read":
        return read_json(ev.conv_id, ev.conv_seq)
    raise ValueError(f"unknown inbox event type {ev.type!r}")

"""Store records -> wire payloads. Message payloads are encoded to JSON once per message
and shared by every recipient."""

from __future__ import annotations

import msgspec

from yim.protocol.frames import MessageOut, ReadMarker, ReceiptMarker
from yim.storage.records import InboxEvent, MessageRec

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
        mentions=[str(u) for u in m.mentions],
        mention_all=m.mention_all,
    )


def message_json(m: MessageRec) -> bytes:
    return _json.encode(message_out(m))


def read_json(conv_id: int, read_seq: int) -> bytes:
    return _json.encode(ReadMarker(conv_id=str(conv_id), read_seq=read_seq))


def receipt_json(conv_id: int, reader_id: int, read_seq: int) -> bytes:
    return _json.encode(ReceiptMarker(conv_id=str(conv_id), user_id=str(reader_id), read_seq=read_seq))


def event_payload(ev: InboxEvent) -> bytes:
    """The canonical JSON ``data`` of an inbox event, as sync and push both send it (a store
    may hand it over ready-made in ``data``)."""
    if ev.data is not None:
        return ev.data
    if ev.type == "message" and ev.message is not None:
        return message_json(ev.message)
    if ev.type == "read":
        return read_json(ev.conv_id, ev.conv_seq)
    if ev.type == "receipt" and ev.actor_id is not None:
        return receipt_json(ev.conv_id, ev.actor_id, ev.conv_seq)
    raise ValueError(f"unknown inbox event type {ev.type!r}")

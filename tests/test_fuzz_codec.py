"""Property tests over the frame decoder and the message-body validator: whatever bytes or
text arrive — malformed JSON or MessagePack, wrong types, huge numbers, deep nesting,
invalid UTF-8, control characters, mutated valid frames — the result is a request struct
or a YimError with a stable code, never another exception; and whatever decoded can be
answered in both wire formats (its rid echoes)."""

from __future__ import annotations

import json
import os
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.report import record
from yim.protocol import frames as f
from yim.protocol.codec import CODECS, JSON, KNOWN_OPS, MSGPACK
from yim.protocol.errors import ERROR_STATUS, YimError
from yim.services.messages import canonical_body

#: Examples per property; the in-suite run takes a few seconds. More: YIM_FUZZ_HYPOTHESIS=5000.
N = int(os.environ.get("YIM_FUZZ_HYPOTHESIS", "400"))
DECODE_CODES = {"bad_frame", "bad_request", "unknown_op", "invalid_body"}
BODY_CODES = {"invalid_body", "invalid_kind", "body_too_large"}
FIELD_NAMES = sorted(
    {name for t in f.AnyRequest.__args__ for name in t.__struct_fields__}  # type: ignore[attr-defined]
    | {"sender_id", "from", "user", "__proto__", "op", "rid", ""}
)
_settings = settings(
    max_examples=N, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)

# --- strategies ------------------------------------------------------------------------

_nasty_text = st.one_of(
    st.text(),
    st.text(alphabet=st.characters(codec="utf-8", categories=["Cc", "Cf", "Zs", "Zl", "Zp", "Co", "Mn"])),
    st.sampled_from(["", "\x00", "\u202e", "\ufeff", "é" * 3, "你好", "🙂" * 4, "a" * 70, "\\u0000"]),
)
_ints = st.one_of(
    st.integers(),
    st.sampled_from([0, -1, 2**31, 2**53 + 1, 2**62, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64, 10**40]),
)
_scalars = st.one_of(st.none(), st.booleans(), _ints, st.floats(allow_nan=False, allow_infinity=False), _nasty_text)
_json_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.dictionaries(st.one_of(_nasty_text, st.sampled_from(FIELD_NAMES)), inner, max_size=5),
    ),
    max_leaves=20,
)
_ids = st.one_of(
    st.from_regex(r"\A[0-9]{1,20}\Z"), st.sampled_from(["", "-1", "1e3", "0x10", " 1", "99999999999999999999"]), _ints
)


@st.composite
def request_like(draw: Any) -> dict[str, Any]:
    """Objects shaped like requests: a known (or near-known) op, a rid of any type, and
    fields drawn from every op's field names with values of any type."""
    frame: dict[str, Any] = {}
    if draw(st.integers(0, 9)):
        frame["op"] = draw(st.one_of(st.sampled_from(sorted(KNOWN_OPS)), _nasty_text, _scalars))
    if draw(st.integers(0, 9)):
        frame["rid"] = draw(st.one_of(_ints, _nasty_text, _scalars, st.lists(_scalars, max_size=2)))
    for name in draw(st.lists(st.sampled_from(FIELD_NAMES), max_size=6)):
        frame[name] = draw(st.one_of(_ids, _json_values))
    return frame


def _valid_frames() -> list[bytes]:
    return [
        b'{"op":"ping","rid":1}',
        b'{"op":"auth","rid":"a","token":"x.y.z"}',
        b'{"op":"send","rid":2,"to":"12","kind":"text","body":{"text":"hi"},"client_msg_id":"c1"}',
        b'{"op":"sync","rid":3,"since":5,"limit":10}',
        b'{"op":"group_create","rid":4,"name":"g","members":["1","2"]}',
        b'{"op":"presence_query","rid":5,"user_ids":["1"]}',
    ]


@st.composite
def mutated(draw: Any) -> bytes:
    """A valid frame with bytes flipped, inserted or removed."""
    data = bytearray(draw(st.sampled_from(_valid_frames())))
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(data)))
        action = draw(st.integers(0, 2))
        byte = draw(st.integers(0, 255))
        if action == 0 and pos < len(data):
            data[pos] = byte
        elif action == 1:
            data.insert(pos, byte)
        elif pos < len(data):
            del data[pos]
    return bytes(data)


def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


# --- the property ------------------------------------------------------------------------


def check_frame(data: bytes | str, codec_name: str) -> str:
    """Decode one frame like the gateway does; return "ok" or the error code."""
    codec = CODECS[codec_name]
    rid = codec.rid_of(data)  # never raises; an int rid fits every codec
    assert rid is None or isinstance(rid, str) or (isinstance(rid, int) and -(2**63) <= rid < 2**63)
    try:
        req = codec.decode_request(data)
    except YimError as exc:
        assert exc.code in DECODE_CODES, exc.code
        for c in (JSON, MSGPACK):
            c.err(rid, exc)  # the error reply encodes in either format
        return exc.code
    assert isinstance(req, f.Request)
    for c in (JSON, MSGPACK):
        c.ok(req.rid, None)  # a JSON frame may arrive on a MessagePack connection
    if isinstance(req, f.Send):
        try:
            body = canonical_body(req.kind, bytes(req.body), 8000)
        except YimError as exc:
            assert exc.code in BODY_CODES, exc.code
        else:
            msgspec.json.decode(body)
    return "ok"


class Tally:
    def __init__(self) -> None:
        self.inputs = 0
        self.outcomes: dict[str, int] = {}

    def add(self, outcome: str) -> None:
        self.inputs += 1
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1


TALLY = Tally()


def test_arbitrary_bytes_and_text() -> None:
    @_settings
    @given(st.binary(max_size=300), st.sampled_from(["json", "msgpack"]))
    def raw_bytes(data: bytes, codec: str) -> None:
        TALLY.add(check_frame(data, codec))

    @_settings
    @given(st.text(max_size=200))
    def raw_text(data: str) -> None:  # includes lone surrogates: invalid UTF-8
        TALLY.add(check_frame(data, "json"))

    raw_bytes()
    raw_text()


def test_request_shaped_objects_in_both_formats() -> None:
    @_settings
    @given(request_like())
    def shaped(frame: dict[str, Any]) -> None:
        try:
            text = json.dumps(frame, ensure_ascii=False)
        except ValueError:
            return
        TALLY.add(check_frame(text.encode("utf-8", "surrogatepass"), "json"))
        try:
            packed = msgspec.msgpack.encode(frame)
        except (OverflowError, TypeError):  # ints beyond 64 bits have no MessagePack form
            return
        TALLY.add(check_frame(packed, "msgpack"))

    shaped()


def test_mutated_valid_frames() -> None:
    @_settings
    @given(mutated())
    def mutate(data: bytes) -> None:
        TALLY.add(check_frame(data, "json"))

    mutate()


def test_send_bodies_of_every_shape() -> None:
    @_settings
    @given(st.sampled_from(["text", "emoji", "image", "system", "", "TEXT"]), _json_values)
    def bodies(kind: str, body: Any) -> None:
        frame = {"op": "send", "rid": 1, "to": "1", "kind": kind, "client_msg_id": "x", "body": body}
        try:
            data = json.dumps(frame, ensure_ascii=False).encode("utf-8", "surrogatepass")
        except ValueError:
            return
        TALLY.add(check_frame(data, "json"))
        try:
            TALLY.add(check_frame(msgspec.msgpack.encode(frame), "msgpack"))
        except (OverflowError, TypeError):
            pass

    bodies()


def test_hand_picked_hostile_frames() -> None:
    """The cases found by fuzzing, kept as fixed regressions (each hit an unhandled
    exception once: RecursionError, UnicodeEncodeError, OverflowError on echo)."""
    send = '{"op":"send","rid":1,"to":"1","kind":"text","client_msg_id":"x","body":%s}'
    cases: list[tuple[bytes | str, str, str]] = [
        ((send % _deep(100_000)).encode(), "json", "bad_frame"),
        ((send % ('{"a":' * 3000 + "1" + "}" * 3000)).encode(), "json", "bad_frame"),
        (_deep(200_000).encode(), "json", "bad_request"),
        ('{"op":"ping","rid":"\ud800"}', "json", "bad_frame"),
        (b'{"op":"ping","rid":123456789012345678901234567890}', "json", "bad_request"),
        (b'{"op":"ping","rid":1e999}', "json", "bad_request"),
        (b'{"op":"ping","rid":true}', "json", "bad_request"),
        (b'{"op":"ping","op":"auth","rid":1}', "json", "bad_request"),
        ((send % '{"text":"hi"},"sender_id":"7"').encode(), "json", "bad_request"),
        (b"\xff\xfe\x00", "json", "bad_frame"),
        (b'{"op":"ping","rid":"\x80"}', "json", "bad_frame"),
        (b'\x82\xa2op\xa4ping\xa3rid\xa2\x80\x81', "msgpack", "bad_frame"),
        ((send % '{"text":"\x80"}').encode("latin-1"), "json", "ok"),  # the body check then refuses it
        (b"\x91" * 100_000, "msgpack", "bad_request"),
        (msgspec.msgpack.encode({"op": "send", "rid": 1, "to": "1", "kind": "text", "client_msg_id": "x",
                                 "body": msgspec.msgpack.Ext(1, b"x")}), "msgpack", "invalid_body"),
        (msgspec.msgpack.encode({"op": "send", "rid": 1, "to": "1", "kind": "text", "client_msg_id": "x",
                                 "body": {(1, 2): 3}}), "msgpack", "invalid_body"),
        (b"\x81\xa2op\x91" * 3, "msgpack", "bad_request"),
    ]  # fmt: skip
    for data, codec, code in cases:
        assert check_frame(data, codec) == code, (data[:80], codec)
        TALLY.add(code)
    # the deepest nesting that fits in a max-size frame, inside the body
    data = (send % _deep(30_000)).encode()
    assert len(data) < 64 * 1024 and check_frame(data, "json") == "bad_frame"
    assert set(ERROR_STATUS) >= DECODE_CODES | BODY_CODES
    outcomes = ", ".join(f"{k} {v}" for k, v in sorted(TALLY.outcomes.items(), key=lambda kv: -kv[1]))
    record(f"frame decoder fuzz: {TALLY.inputs} inputs, 0 unexpected exceptions ({outcomes})")

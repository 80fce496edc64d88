"""Frame codecs: JSON text frames (default) and MessagePack binary frames.

A connection picks its format once (``?format=msgpack`` on the WebSocket URL); both
decode into the same typed structs from :mod:`yim.protocol.frames`. Message bodies are
kept as canonical JSON bytes inside the server (that is what the store holds), so a
JSON connection embeds them without re-encoding and a MessagePack connection converts
them once per message, not once per recipient.
"""

from __future__ import annotations

import math
from typing import Any, Final, TypeVar

import msgspec

from yim.protocol.errors import YimError
from yim.protocol.frames import RID_MAX, RID_MIN, AnyRequest, Err, Event, Ok, RidOnly, Send

KNOWN_OPS: Final[frozenset[str]] = frozenset(t.__struct_config__.tag for t in AnyRequest.__args__)

T = TypeVar("T")


def _without_json_equivalent(value: Any) -> str | None:
    """What in a decoded MessagePack value JSON cannot hold as it is (None: nothing).

    ``msgspec.json`` would write ``bin`` as a base64 string, a timestamp as an ISO string,
    a number map key as a string and NaN as ``null``: the recipient would get a different
    value, so these are refused instead (§3: a body has a JSON equivalent or is refused)."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            for key, item in v.items():
                if not isinstance(key, str):
                    return "a map key that is not a string"
                stack.append(item)
        elif isinstance(v, list):
            stack.extend(v)
        elif isinstance(v, float):
            if not math.isfinite(v):
                return "a NaN or infinite float"
        elif isinstance(v, bytes | bytearray):
            return "a bin value (send text as str)"
        elif not (v is None or isinstance(v, str | int)):  # bool is an int
            return f"a {type(v).__name__} value"  # a timestamp (datetime) or another ext type
    return None


def _describe(exc: msgspec.ValidationError) -> str:
    return str(exc).replace("`$.", "`")


def _decode(decoder: msgspec.json.Decoder[T] | msgspec.msgpack.Decoder[T], data: bytes | str) -> T:
    """``data`` decoded, where a text frame handed to the MessagePack codec is a bad frame.

    msgspec's MessagePack decoder takes bytes only and raises TypeError on a str; raising
    DecodeError instead sends it down the same path as any other undecodable frame."""
    if isinstance(decoder, msgspec.json.Decoder):
        return decoder.decode(data)
    if isinstance(data, str):
        raise msgspec.DecodeError("a MessagePack frame is binary, not text")
    return decoder.decode(data)


class Codec:
    """One wire format. Instances are shared and stateless (msgspec encoders are reentrant)."""

    name: str
    binary: bool

    def __init__(self, name: str) -> None:
        self.name = name
        self.binary = name == "msgpack"
        # Each attribute names both formats' types: AnyRequest is a union, which msgspec's
        # Decoder overloads cannot carry, so the annotation says what decode returns.
        self._decoder: msgspec.json.Decoder[AnyRequest] | msgspec.msgpack.Decoder[AnyRequest]
        self._lenient: msgspec.json.Decoder[RidOnly] | msgspec.msgpack.Decoder[RidOnly]
        self._encoder: msgspec.json.Encoder | msgspec.msgpack.Encoder
        if self.binary:
            self._decoder = msgspec.msgpack.Decoder(AnyRequest)
            self._lenient = msgspec.msgpack.Decoder(RidOnly)
            self._encoder = msgspec.msgpack.Encoder()
        else:
            self._decoder = msgspec.json.Decoder(AnyRequest)
            self._lenient = msgspec.json.Decoder(RidOnly)
            self._encoder = msgspec.json.Encoder()

    # -- decoding --------------------------------------------------------------------
    def decode_request(self, data: bytes | str) -> AnyRequest:
        """Decode one client frame, or raise :class:`YimError` naming what is wrong."""
        try:
            req = _decode(self._decoder, data)
        except msgspec.ValidationError as exc:
            raise self._classify(data, exc) from None
        except msgspec.DecodeError as exc:
            raise YimError("bad_frame", f"frame is not valid {self.name}: {exc}") from None
        except RecursionError:  # a value nested thousands deep (inside `body`, say)
            raise YimError("bad_frame", "frame is nested too deeply") from None
        except UnicodeError:  # a string that is not UTF-8 (or a str frame with lone surrogates)
            raise YimError("bad_frame", f"frame is not valid {self.name}: invalid UTF-8") from None
        if self.binary and isinstance(req, Send):
            # Bodies are canonical JSON inside the server; convert the MessagePack body once.
            try:
                value = msgspec.msgpack.decode(req.body)
                bad = _without_json_equivalent(value)
                if bad is not None:
                    raise YimError("invalid_body", f"body cannot be represented as JSON: it holds {bad}")
                body = msgspec.json.encode(value)
            except (msgspec.DecodeError, TypeError, UnicodeError) as exc:
                raise YimError("invalid_body", f"body cannot be represented as JSON: {exc}") from None
            except RecursionError:
                raise YimError("invalid_body", "body is nested too deeply") from None
            req = msgspec.structs.replace(req, body=msgspec.Raw(body))
        return req

    def rid_of(self, data: bytes | str) -> Any:
        """Best-effort request id of a frame that failed validation (None if unreadable)."""
        try:
            rid = _decode(self._lenient, data).rid
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError, UnicodeError):
            return None
        if isinstance(rid, bool) or (isinstance(rid, int) and not RID_MIN <= rid <= RID_MAX):
            return None  # an int every codec can echo: int64
        return rid if isinstance(rid, int | str) else None

    def _classify(self, data: bytes | str, exc: msgspec.ValidationError) -> YimError:
        try:
            op = _decode(self._lenient, data).op
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError, UnicodeError):
            return YimError("bad_request", f"frame must be an object with `op` and `rid`: {_describe(exc)}")
        if op is None:
            return YimError("bad_request", "frame has no `op` field")
        if not isinstance(op, str):  # a malformed frame, not the name of an op we lack
            return YimError("bad_request", f"`op` must be a string, got {type(op).__name__}")
        if op not in KNOWN_OPS:
            return YimError("unknown_op", f"unknown op {op!r}")
        return YimError("bad_request", _describe(exc))

    # -- encoding --------------------------------------------------------------------
    def encode(self, obj: Any) -> bytes:
        return self._encoder.encode(obj)

    def ok(self, rid: Any, data: Any = None) -> bytes:
        if self.binary and data is not None:
            # Replies may embed canonical-JSON payloads (msgspec.Raw); MessagePack needs them
            # as values. Only MessagePack connections pay this round trip.
            data = msgspec.json.decode(msgspec.json.encode(data))
        return self._encoder.encode(Ok(rid=rid, data=data))

    def err(self, rid: Any, error: YimError) -> bytes:
        return self._encoder.encode(Err(rid=rid, code=error.code, message=error.message, retry_after=error.retry_after))

    def event(self, seq: int, type_: str, payload: bytes) -> bytes:
        """An event frame around a payload already encoded in this codec's format."""
        return self._encoder.encode(Event(seq=seq, type=type_, data=msgspec.Raw(payload)))

    def json_to_native(self, payload: bytes) -> bytes:
        """Canonical JSON payload -> this format's bytes (identity for JSON)."""
        return payload if not self.binary else msgspec.msgpack.encode(msgspec.json.decode(payload))


JSON: Final = Codec("json")
MSGPACK: Final = Codec("msgpack")
CODECS: Final = {"json": JSON, "msgpack": MSGPACK}

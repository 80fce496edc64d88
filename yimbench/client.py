"""The load generator's client side: lean code on raw aiohttp (not the SDK), and for the
connect-heavy and one-to-one runs the smaller client of :mod:`yimbench.rawws`.

Frames are built with string formatting and read with msgspec decoders of small structs
that pick out only the fields the bench looks at; nothing per message allocates more
than the frame itself. Accounts are made over the real HTTP API.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
import msgspec

from yimbench.rawws import RawWebSocket, open_websocket

PASSWORD = "bench-password-1"


@dataclass(frozen=True, slots=True)
class Account:
    username: str
    user_id: str
    device_id: str
    token: str


# --- reading frames: only the fields the bench needs -----------------------------------------


class Body(msgspec.Struct):
    text: str = ""


class EventData(msgspec.Struct):
    """A message event's payload, or whatever else an ``ok`` carries (all fields optional)."""

    body: Body | None = None
    sender_id: str = ""
    inbox_seq: int = 0
    head: int = 0
    next_since: int = 0
    has_more: bool = False


class Frame(msgspec.Struct):
    t: str
    rid: int | str | None = None
    seq: int = 0
    type: str = ""
    code: str = ""
    message: str = ""
    data: EventData | None = None


class PageEvent(msgspec.Struct):
    seq: int
    type: str
    data: EventData


class Page(msgspec.Struct):
    events: list[PageEvent]
    next_since: int
    head: int
    has_more: bool


class ReplyFrame(msgspec.Struct):
    """Any frame, its ``data`` left undecoded (a sync page is decoded only once it is known
    to be the awaited reply: notices and events may arrive in between)."""

    t: str
    rid: int | str | None = None
    code: str = ""
    message: str = ""
    data: msgspec.Raw = msgspec.Raw(b"null")


decode_frame = msgspec.json.Decoder(Frame).decode
decode_reply = msgspec.json.Decoder(ReplyFrame).decode
decode_page = msgspec.json.Decoder(Page).decode


# --- writing frames ---------------------------------------------------------------------------


def auth_frame(rid: int, token: str) -> str:
    return f'{{"op":"auth","rid":{rid},"token":"{token}"}}'


def send_frame(rid: int, to: str, text: str, client_msg_id: str) -> str:
    return (
        f'{{"op":"send","rid":{rid},"to":"{to}","kind":"text","body":{{"text":"{text}"}},'
        f'"client_msg_id":"{client_msg_id}"}}'
    )


def group_send_frame(rid: int, conv_id: str, text: str, client_msg_id: str) -> str:
    return (
        f'{{"op":"send","rid":{rid},"conv_id":"{conv_id}","kind":"text","body":{{"text":"{text}"}},'
        f'"client_msg_id":"{client_msg_id}"}}'
    )


def ack_frame(rid: int, seq: int) -> str:
    return f'{{"op":"ack","rid":{rid},"seq":{seq}}}'


def ping_frame(rid: int) -> str:
    return f'{{"op":"ping","rid":{rid}}}'


def sync_frame(rid: int, since: int, limit: int) -> str:
    return f'{{"op":"sync","rid":{rid},"since":{since},"limit":{limit}}}'


# --- accounts ---------------------------------------------------------------------------------


def run_tag() -> str:
    """A short random tag that keeps usernames unique across runs against one server."""
    return secrets.token_hex(3)


async def make_accounts(
    url: str, usernames: list[str], *, devices: int = 1, concurrency: int = 64, http_timeout: float = 60.0
) -> list[list[Account]]:
    """Register each user and log ``devices`` devices in; return their accounts per user."""
    sem = asyncio.Semaphore(concurrency)
    client_timeout = aiohttp.ClientTimeout(total=http_timeout)
    connector = aiohttp.TCPConnector(limit=concurrency)

    async with aiohttp.ClientSession(url, timeout=client_timeout, connector=connector) as http:

        async def one(name: str) -> list[Account]:
            async with sem:
                r = await http.post("/api/v1/accounts", json={"username": name, "password": PASSWORD})
                if r.status != 201:
                    raise RuntimeError(f"registering {name}: HTTP {r.status} {await r.text()}")
                r.release()
                out = []
                for d in range(devices):
                    login = {"username": name, "password": PASSWORD, "device_id": f"d{d}", "platform": "desktop"}
                    r = await http.post("/api/v1/sessions", json=login)
                    if r.status != 201:
                        raise RuntimeError(f"logging {name} in: HTTP {r.status} {await r.text()}")
                    body = await r.json()
                    out.append(Account(name, body["user_id"], f"d{d}", body["token"]))
                return out

        return list(await asyncio.gather(*(one(n) for n in usernames)))


# --- connections ------------------------------------------------------------------------------


class AuthError(RuntimeError):
    pass


async def connect(
    http: aiohttp.ClientSession, url: str, token: str, *, auth_timeout: float = 30.0
) -> tuple[aiohttp.ClientWebSocketResponse, Frame]:
    """Open /ws and authenticate with a token; return the socket and the ``ok`` reply."""
    ws = await http.ws_connect(
        url + "/ws", autoping=True, autoclose=True, compress=0, max_msg_size=0, timeout=aiohttp.ClientWSTimeout()
    )
    try:
        await ws.send_str(auth_frame(1, token))
        async with asyncio.timeout(auth_timeout):
            while True:  # the reply to rid 1, past any push that might come first
                msg = await ws.receive()
                if msg.type != aiohttp.WSMsgType.TEXT:
                    raise AuthError(f"auth: connection ended ({msg.type.name}, {ws.close_code})")
                reply = decode_frame(msg.data)
                if reply.rid == 1:
                    break
        if reply.t != "ok":
            raise AuthError(f"auth refused: {reply.code} {reply.message}")
    except BaseException:
        await ws.close()
        raise
    return ws, reply


async def raw_connect(
    url: str, token: str, *, local_addr: str | None = None, auth_timeout: float = 30.0, keep_reading: bool = False
) -> tuple[RawWebSocket, Frame]:
    """As :func:`connect`, on the lean client of yimbench/rawws.py. After the ``ok`` the
    socket reads nothing, unless ``keep_reading``: then it keeps what comes for a later
    ``deliver_to``."""
    ws = await open_websocket(url.replace("http://", "ws://", 1) + "/ws", local_addr=local_addr)
    try:
        ws.send_text(auth_frame(1, token))
        async with asyncio.timeout(auth_timeout):
            while True:  # the reply to rid 1, past any push that might come first
                reply = decode_frame(await ws.next_text())
                if reply.rid == 1:
                    break
        if reply.t != "ok":
            raise AuthError(f"auth refused: {reply.code} {reply.message}")
    except BaseException:
        await ws.close(timeout=1.0)
        raise
    if not keep_reading:
        ws.stop_reading()
    return ws, reply


def client_session(local_addr: str | None = None) -> aiohttp.ClientSession:
    """A session whose connections leave from ``local_addr`` (another 127.x address lifts
    the ~28k ephemeral-port ceiling of one source address)."""
    connector = aiohttp.TCPConnector(limit=0, local_addr=(local_addr, 0) if local_addr else None)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None))


async def send_windowed(
    ws: aiohttp.ClientWebSocketResponse, count: int, frame_of: Callable[[int], str], window: int, who: str
) -> int:
    """Send ``frame_of(i)`` for i in 0..count-1 (each with rid 2 + i), at most ``window``
    unanswered at a time; return how many were refused. Filling phases of scenarios use
    this: not measured, only bounded."""
    refused = sent = done = 0
    while done < count:
        while sent < count and sent - done < window:
            await ws.send_str(frame_of(sent))
            sent += 1
        msg = await ws.receive()
        if msg.type is not aiohttp.WSMsgType.TEXT:
            raise RuntimeError(f"{who}: connection ended while filling ({msg.type.name})")
        frame = decode_frame(msg.data)
        if isinstance(frame.rid, int) and frame.rid >= 2:
            done += 1
            refused += frame.t != "ok"
    return refused

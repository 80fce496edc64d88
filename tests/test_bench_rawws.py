"""The load generator's lean WebSocket client (yimbench/rawws.py) against a real node."""

from __future__ import annotations

import asyncio
import struct

import aiohttp
import msgspec
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from yim.node import NodeServer
from yimbench.client import AuthError, raw_connect
from yimbench.rawws import RawWebSocket, accept_of, masked_frame, open_websocket

from .rawclient import make_users


def _unmask(frame: bytes) -> tuple[int, bytes]:
    """What a server reads from one client frame (RFC 6455 §5.2, §5.3)."""
    assert frame[0] & 0x80 and frame[1] & 0x80  # final, masked
    n, offset = frame[1] & 0x7F, 2
    if n == 126:
        (n,), offset = struct.unpack_from("!H", frame, 2), 4
    elif n == 127:
        (n,), offset = struct.unpack_from("!Q", frame, 2), 10
    key, body = frame[offset : offset + 4], frame[offset + 4 :]
    assert len(body) == n
    return frame[0] & 0x0F, bytes(b ^ key[i % 4] for i, b in enumerate(body))


@given(st.binary(max_size=300), st.sampled_from([0x1, 0x2, 0x8, 0x9, 0xA]))
@example(b"x" * 125, 0x1)
@example(b"x" * 126, 0x1)
@example(b"x" * 65535, 0x2)
@example(b"x" * 65536, 0x2)
@example(b"\x00\x00\x00", 0x1)  # leading zero bytes survive the big-integer XOR
def test_masked_frames_unmask_to_their_payload(payload: bytes, opcode: int) -> None:
    assert _unmask(masked_frame(opcode, payload)) == (opcode, payload)


def test_accept_key_is_the_rfc_example() -> None:
    # RFC 6455 §1.3
    assert accept_of(b"dGhlIHNhbXBsZSBub25jZQ==") == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


async def test_connects_authenticates_and_closes(server: NodeServer) -> None:
    async with aiohttp.ClientSession(server.url) as http:
        alice, bob = await make_users(http, ["rawwsa", "rawwsb"])
        ws, ok = await raw_connect(server.url, alice["token"])
        assert ok.t == "ok" and ok.rid == 1
        assert server.node.hub.devices_of(int(alice["user_id"]))
        # a held connection reads nothing: pushes are dropped, not queued
        async with http.ws_connect("/ws") as peer:
            await peer.send_json({"op": "auth", "rid": 1, "token": bob["token"]})
            assert (await peer.receive_json(timeout=10))["t"] == "ok"
            body = {"text": "hi"}
            await peer.send_json(
                {"op": "send", "rid": 2, "to": alice["user_id"], "kind": "text", "body": body, "client_msg_id": "c1"}
            )
            while (reply := await peer.receive_json(timeout=10)).get("rid") != 2:
                pass
            assert reply["t"] == "ok"  # committed, and pushed to alice in the same turn
            await asyncio.sleep(0.1)
        assert not ws._texts
        await ws.close()
        assert ws.is_closed and ws.close_code == 1000
        for _ in range(100):
            if not server.node.hub.devices_of(int(alice["user_id"])):
                break
            await asyncio.sleep(0.02)
        assert not server.node.hub.devices_of(int(alice["user_id"]))


async def test_a_refused_token_and_a_refused_upgrade(server: NodeServer) -> None:
    with pytest.raises(AuthError, match="auth refused"):
        await raw_connect(server.url, "not-a-token")
    with pytest.raises(ConnectionError, match=r"upgrade refused: HTTP/1\.1 404"):
        await open_websocket(server.url.replace("http", "ws", 1) + "/no-such-path")


async def test_the_server_closing_is_echoed(server: NodeServer) -> None:
    async with aiohttp.ClientSession(server.url) as http:
        (carol,) = await make_users(http, ["rawwsc"])
        first, _ = await raw_connect(server.url, carol["token"])
        # the same device connecting again replaces the first connection (close code 4002)
        second, _ = await raw_connect(server.url, carol["token"])
        await asyncio.wait_for(asyncio.shield(first.closed), 10)
        assert first.close_code == 4002
        assert isinstance(second, RawWebSocket) and not second.is_closed
        await second.close()


async def test_corked_frames_and_callback_delivery_keep_every_reply_in_order(server: NodeServer) -> None:
    async with aiohttp.ClientSession(server.url) as http:
        (dave,) = await make_users(http, ["rawwsd"])
        ws, _ = await raw_connect(server.url, dave["token"], keep_reading=True)
        try:
            # three frames written in one turn leave as one write; the node must read all three
            for rid in (11, 12, 13):
                ws.send_text(f'{{"op":"ping","rid":{rid}}}')
            await asyncio.sleep(0.2)  # their replies (most likely) wait in the queue by now
            rids: list[int] = []
            done = asyncio.get_running_loop().create_future()

            def on_text(data: bytes) -> None:
                rids.append(msgspec.json.decode(data)["rid"])
                if len(rids) == 4 and not done.done():
                    done.set_result(None)

            ws.deliver_to(on_text)  # queued replies first, then the live ones
            ws.send_text('{"op":"ping","rid":14}')
            await asyncio.wait_for(done, 10)
            assert rids == [11, 12, 13, 14]
            # a malformed frame gets its error reply; the connection carries on
            ws.send_text('{"op":"ping","rid":15')
            ws.send_text('{"op":"ping","rid":16}')
            for _ in range(500):
                if 16 in rids:
                    break
                await asyncio.sleep(0.02)
            assert rids[-1] == 16 and not ws.is_closed
        finally:
            await ws.close()

"""A first end-to-end check over raw HTTP + WebSocket: register, log in, chat."""

from __future__ import annotations

import aiohttp

from yim.node import NodeServer


async def test_two_users_chat_over_raw_protocol(server: NodeServer) -> None:
    async with aiohttp.ClientSession(server.url) as http:
        logins = {}
        for name in ("alice", "bob"):
            r = await http.post("/api/v1/accounts", json={"username": name, "password": "password123"})
            assert r.status == 201
            r = await http.post(
                "/api/v1/sessions",
                json={"username": name, "password": "password123", "device_id": "phone", "platform": "android"},
            )
            assert r.status == 201
            logins[name] = await r.json()
        ws_a = await http.ws_connect("/ws")
        ws_b = await http.ws_connect("/ws")
        for ws, name in ((ws_a, "alice"), (ws_b, "bob")):
            await ws.send_json({"op": "auth", "rid": 1, "token": logins[name]["token"]})
            reply = await ws.receive_json()
            assert reply["t"] == "ok" and reply["data"]["user_id"] == logins[name]["user_id"]
            assert reply["data"]["recall_limit_s"] == 120 and reply["data"]["typing_interval_s"] == 3.0
        ids = [logins["bob"]["user_id"], "123", logins["alice"]["user_id"]]
        await ws_a.send_json({"op": "users", "rid": 9, "user_ids": ids})
        found = (await ws_a.receive_json())["data"]["users"]
        assert [u["username"] for u in found] == ["bob", "alice"]  # unknown ids are left out
        await ws_a.send_json(
            {
                "op": "send",
                "rid": 2,
                "to": logins["bob"]["user_id"],
                "kind": "text",
                "body": {"text": "你好"},
                "client_msg_id": "m1",
            }
        )
        ack = await ws_a.receive_json()
        assert ack["t"] == "ok" and ack["rid"] == 2 and ack["data"]["seq"] == 1
        event = await ws_b.receive_json()
        assert event["t"] == "event" and event["type"] == "message"
        assert event["data"]["body"] == {"text": "你好"} and event["data"]["msg_id"] == ack["data"]["msg_id"]
        await ws_a.close()
        await ws_b.close()

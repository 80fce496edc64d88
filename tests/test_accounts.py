"""Accounts, sessions and connection lifecycle: register rules, login, logout and device
revocation closing live sockets (4003), the newest connection of a device winning (4002),
idle and auth timeouts."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from yim.client import ApiError, Client, ClientClosed, HttpApi, SessionEnded
from yim.node import NodeServer

from .conftest import MakeServer
from .sdk_helpers import PASSWORD, Chat, login_device, raw_close_code, raw_ws


async def post(http: aiohttp.ClientSession, path: str, body: Any) -> tuple[int, dict[str, Any]]:
    async with http.post(path, json=body) as resp:
        return resp.status, await resp.json()


async def test_register_rules(server: NodeServer) -> None:
    async with asyncio.timeout(30), aiohttp.ClientSession(server.url) as http:
        status, user = await post(http, "/api/v1/accounts", {"username": "Alice.W", "password": PASSWORD})
        assert status == 201
        assert user["username"] == "Alice.W" and user["display_name"] == "Alice.W" and user["user_id"].isdigit()
        status, named = await post(
            http, "/api/v1/accounts", {"username": "bob", "password": PASSWORD, "display_name": "鲍勃"}
        )
        assert status == 201 and named["display_name"] == "鲍勃"

        for taken in ("Alice.W", "alice.w", "ALICE.W"):
            status, err = await post(http, "/api/v1/accounts", {"username": taken, "password": PASSWORD})
            assert (status, err["code"]) == (409, "username_taken"), taken

        invalid: list[dict[str, Any]] = [
            {"username": "al", "password": PASSWORD},  # too short
            {"username": "x" * 33, "password": PASSWORD},  # too long
            {"username": "al ice", "password": PASSWORD},  # space
            {"username": "ali!ce", "password": PASSWORD},
            {"username": "carol", "password": "short"},  # password under 8
            {"username": "carol", "password": "p" * 257},
            {"username": "carol", "password": PASSWORD, "display_name": "d" * 65},
            {"username": "carol"},
            {"username": "carol", "password": PASSWORD, "admin": True},  # unknown field
        ]
        for body in invalid:
            status, err = await post(http, "/api/v1/accounts", body)
            assert (status, err["code"]) == (400, "bad_request"), (body, err)
        # none of the refused names got created
        status, err = await post(http, "/api/v1/accounts", {"username": "carol", "password": PASSWORD})
        assert status == 201

        # the SDK raises the same codes
        with_sdk = HttpApi(server.url)
        try:
            await with_sdk.register("ALICE.w", PASSWORD)
        except ApiError as exc:
            assert (exc.code, exc.status) == ("username_taken", 409)
        else:
            raise AssertionError("duplicate username accepted")
        finally:
            await with_sdk.close()


async def test_login_rules(server: NodeServer) -> None:
    async with asyncio.timeout(30), aiohttp.ClientSession(server.url) as http:
        await post(http, "/api/v1/accounts", {"username": "alice", "password": PASSWORD})
        login = {"username": "alice", "password": PASSWORD, "device_id": "phone-1", "platform": "android"}
        status, ok = await post(http, "/api/v1/sessions", login)
        assert status == 201 and ok["device_id"] == "phone-1" and ok["token"]
        status, ok = await post(http, "/api/v1/sessions", {**login, "username": "ALICE", "device_id": "tab"})
        assert status == 201  # names match ignoring case

        wrong_password = await post(http, "/api/v1/sessions", {**login, "password": "password124"})
        unknown_user = await post(http, "/api/v1/sessions", {**login, "username": "nobody"})
        assert wrong_password[0] == unknown_user[0] == 401
        assert wrong_password[1] == unknown_user[1]  # no hint whether the user exists
        assert wrong_password[1]["code"] == "unauthorized"

        for bad in ({**login, "platform": "palm"}, {**login, "device_id": "has space"}, {**login, "device_id": ""}):
            status, err = await post(http, "/api/v1/sessions", bad)
            assert (status, err["code"]) == (400, "bad_request"), bad

        async with HttpApi(server.url) as api:
            try:
                await api.login("alice", "password124", "phone-1")
            except ApiError as exc:
                assert (exc.code, exc.status) == ("unauthorized", 401)
            else:
                raise AssertionError("wrong password accepted")


async def test_logout_closes_the_live_socket_and_refuses_the_token(server: NodeServer) -> None:
    async with asyncio.timeout(30), Chat(server.url) as chat, aiohttp.ClientSession(server.url) as http:
        await chat.user("alice")
        login = await login_device(server.url, "alice", "phone")
        other = await login_device(server.url, "alice", "laptop")
        ws = await raw_ws(http, login.token)
        headers = {"Authorization": f"Bearer {login.token}"}
        async with http.delete("/api/v1/sessions/current", headers=headers) as resp:
            assert resp.status == 204
        assert await raw_close_code(ws) == 4003
        await ws.close()
        async with http.get("/api/v1/me", headers=headers) as resp:
            assert (resp.status, (await resp.json())["code"]) == (401, "unauthorized")
        ws = await http.ws_connect("/ws")
        await ws.send_json({"op": "auth", "rid": 1, "token": login.token})
        frame = await ws.receive_json()
        assert (frame["t"], frame["code"]) == ("err", "unauthorized")
        assert await raw_close_code(ws) == 4001
        await ws.close()
        # the other device's session is untouched
        async with HttpApi(server.url, other.token) as api:
            assert [d.device_id for d in await api.devices()] == ["laptop"]

        # through the SDK: logout ends the client, and the token no longer connects
        client = await chat.client("alice", "tablet")
        token = client.token
        await client.logout()
        assert isinstance(await client.wait_ended(), SessionEnded | ClientClosed)
        refused = chat.track(Client(server.url, token))
        try:
            await refused.start()
        except SessionEnded as exc:
            assert exc.close_code == 4001
        else:
            raise AssertionError("a logged-out token connected")


async def test_revoking_a_device_closes_its_socket_with_4003(server: NodeServer) -> None:
    async with asyncio.timeout(30), Chat(server.url) as chat:
        bob = await chat.user("bob")
        await chat.user("alice")
        phone = await chat.client("alice", "phone")
        laptop = await chat.client("alice", "laptop")
        assert sorted(d.device_id for d in await laptop.devices()) == ["laptop", "phone"]
        await laptop.revoke_device("phone")
        ended = await phone.wait_ended()
        assert isinstance(ended, SessionEnded) and ended.close_code == 4003
        assert phone.connects == 1  # it does not try to come back
        try:
            await phone.send_text("still here?", to=bob.user_id)
        except SessionEnded:
            pass
        else:
            raise AssertionError("a revoked client sent a message")
        async with HttpApi(server.url, phone.token) as api:
            try:
                await api.me()
            except ApiError as exc:
                assert exc.code == "unauthorized"
            else:
                raise AssertionError("a revoked token was accepted")
        assert [d.device_id for d in await laptop.devices()] == ["laptop"]
        try:
            await laptop.revoke_device("phone")
        except ApiError as exc:
            assert (exc.code, exc.status) == ("not_found", 404)
        else:
            raise AssertionError("revoking twice succeeded")
        assert (await laptop.send_text("laptop still works", to=bob.user_id)).seq == 1


async def test_the_newest_connection_of_a_device_wins(server: NodeServer) -> None:
    async with asyncio.timeout(30), Chat(server.url) as chat, aiohttp.ClientSession(server.url) as http:
        await chat.user("alice")
        first = await chat.client("alice", "phone")
        # the same session connects again (e.g. the app restarted): the old socket gets 4002
        ws = await raw_ws(http, first.token)
        ended = await first.wait_ended()
        assert isinstance(ended, SessionEnded) and ended.close_code == 4002
        assert first.connects == 1  # no reconnect fight with the newer connection
        await ws.send_json({"op": "ping", "rid": "p"})
        assert (await ws.receive_json())["t"] == "ok"

        # logging the device in again revokes its earlier session: 4003 for that socket
        await login_device(server.url, "alice", "phone")
        assert await raw_close_code(ws) == 4003
        await ws.close()


async def test_idle_connections_are_closed_and_heartbeats_keep_one_alive(make_server: MakeServer) -> None:
    server = await make_server(idle_timeout_s=1.0, auth_timeout_s=0.5)
    async with asyncio.timeout(30), Chat(server.url) as chat, aiohttp.ClientSession(server.url) as http:
        await chat.user("alice")
        # The SDK pings often enough for the idle timeout the server announces in AuthOk
        # (here 1 s, although the configured heartbeat is 25 s).
        pinging = await chat.client("alice", "laptop")
        assert pinging.auth is not None and pinging.auth.idle_timeout_s == 1.0
        login = await login_device(server.url, "alice", "phone")
        silent = await raw_ws(http, login.token)
        assert await raw_close_code(silent) == 4004
        await silent.close()
        # never authenticating: closed after auth_timeout_s
        anonymous = await http.ws_connect("/ws")
        assert await raw_close_code(anonymous) == 4005
        await anonymous.close()
        # the pinging client outlived both windows on its first connection
        assert pinging.connected and pinging.connects == 1

"""Finding a shop by name (`shop_search`, docs/protocol.md §17.2): substring and prefix
matches, ASCII letters in any case, 1- and 2-character CJK queries, only shops that accept
customers, the order, paging and bad input — on both stores, over WebSocket and HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import ServerProcess
from tests.rawclient import Device, ProtocolError, make_users
from tests.test_terminal import PASSWORD, Cli, call, piped_chat, register
from yim.client import Client, HttpApi
from yim.node import NodeServer
from yim.protocol.errors import YimError
from yim.storage.rules.service import shop_name_query


@pytest.mark.parametrize(
    ("q", "folded"),
    [
        ("Tea", "tea"),
        ("  TEA house ", "tea house"),
        ("绿茶", "绿茶"),
        ("ÉCOLE", "École"),  # only ASCII letters fold: what both stores' SQL does to the names
        ("\uff34\uff25\uff21", "\uff34\uff25\uff21"),  # full-width letters are not ASCII
    ],
)
def test_query_folds_ascii_letters_only(q: str, folded: str) -> None:
    assert shop_name_query(q) == folded


def test_blank_query_is_refused() -> None:
    with pytest.raises(YimError) as err:
        shop_name_query("   ")
    assert err.value.code == "bad_request"


async def test_shop_search(server: NodeServer) -> None:
    async with aiohttp.ClientSession(server.url) as http:
        owner, agent, customer = [Device(http, x) for x in await make_users(http, ["owner", "agent", "customer"])]
        for d in (owner, agent, customer):
            await d.connect()

        async def shop(name: str, capacity: int = 5, skills: list[str] | None = None) -> str:
            made = await owner.request("shop_create", name=name)
            fields = {"skills": skills} if skills is not None else {}
            await owner.request(
                "shop_agent_set", shop_id=made["shop_id"], user_id=agent.user_id, capacity=capacity, **fields
            )
            return str(made["shop_id"])

        tea_house = await shop("Tea House")
        green = await shop("绿茶小铺")
        teahouse_cn = await shop("茶馆")
        big_tea = await shop("The Big TEA Shop")
        await shop("Tea Nobody Serves", capacity=0)  # an agent without capacity serves nobody
        await shop("Tea Without Skills", skills=[])  # nor one without a skill
        bare = await owner.request("shop_create", name="Tea Bare")  # only its creator: capacity 0

        async def names(q: str, **extra: object) -> list[str]:
            page = await customer.request("shop_search", q=q, **extra)
            return [s["name"] for s in page["shops"]]

        # Prefix matches first, then shorter names, then older shops; ASCII in any case.
        assert await names("tea") == ["Tea House", "The Big TEA Shop"]
        assert await names("TEA h") == ["Tea House"]
        assert await names("shop") == ["The Big TEA Shop"]
        # 1- and 2-character CJK queries (which a trigram index cannot answer).
        assert await names("茶") == ["茶馆", "绿茶小铺"]
        assert await names("绿茶") == ["绿茶小铺"]
        assert await names("咖啡") == []
        # Letters beyond ASCII match as written, on both stores alike (see shop_name_query).
        await shop("Café ÉTÉ")
        assert await names("ÉTÉ") == await names("ÉtÉ") == ["Café ÉTÉ"]
        assert await names("été") == []
        # A shop that accepts customers shows up once someone can serve them.
        assert "Tea Bare" not in await names("bare")
        await owner.request("shop_agent_set", shop_id=bare["shop_id"], user_id=agent.user_id)
        assert await names("bare") == ["Tea Bare"]

        # The whole Shop object, as shop_info gives it.
        page = await customer.request("shop_search", q="Tea House")
        assert page == {"shops": [await customer.request("shop_info", shop_id=tea_house)], "next_offset": None}

        # Paging: next_offset until None, every match once, in order.
        seen: list[str] = []
        offset: int | None = 0
        while offset is not None:
            page = await customer.request("shop_search", q="e", limit=2, offset=offset)
            assert len(page["shops"]) <= 2
            seen += [s["shop_id"] for s in page["shops"]]
            offset = page["next_offset"]
        assert len(seen) == len(set(seen)) == 3  # Tea House, The Big TEA Shop, Tea Bare
        assert {tea_house, big_tea, bare["shop_id"]} == set(seen)
        assert green not in seen and teahouse_cn not in seen

        # Bad input: a clear error, never a traceback.
        for fields in ({"q": "   "}, {"q": ""}, {"q": "x" * 65}, {"q": "tea", "limit": 51}, {"q": "a", "offset": 1001}):
            with pytest.raises(ProtocolError) as err:
                await customer.request("shop_search", **fields)
            assert err.value.code == "bad_request", fields

        # The same op over HTTP.
        headers = {"Authorization": f"Bearer {customer.token}"}
        async with http.get("/api/v1/shops/search", params={"q": "绿", "limit": "5"}, headers=headers) as r:
            assert r.status == 200
            assert await r.json() == {
                "shops": [await customer.request("shop_info", shop_id=green)],
                "next_offset": None,
            }
        async with http.get("/api/v1/shops/search", params={"q": " "}, headers=headers) as r:
            assert r.status == 400
            assert (await r.json())["code"] == "bad_request"
        async with http.get("/api/v1/shops/search", params={"q": "tea"}) as r:
            assert r.status == 401


# --- the terminal: /shop NAME ---------------------------------------------------------------------


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    server = ServerProcess(tmp_path / "node")
    server.start()
    try:
        yield Cli(server, tmp_path)
    finally:
        server.stop()


def test_terminal_opens_a_shop_chat_by_name(cli: Cli) -> None:
    url = cli.server.url
    register(url, "teaowner", "teabuyer")
    for name in ("Tea House", "Tea Garden"):
        shop = call(url, "teaowner", "shop_create", name=name)
        me = call(url, "teaowner", "shop_agent_set", shop_id=shop["shop_id"], user_id=shop["owner_id"], capacity=5)
        assert me["capacity"] == 5
    with piped_chat(cli, "teabuyer") as chat:
        out, type_line = chat.out, chat.type_line
        out.expect(r"^Logged in as teabuyer")
        type_line("/shop tea")
        out.expect(r"several shops match 'tea': Tea House, Tea Garden")
        type_line("/shop coffee")
        out.expect(r"no shop named like 'coffee'")
        type_line("/shop tea h")
        out.expect(r"^── Tea House ── \(shop, new conversation\)$")
        type_line("有乌龙茶吗?")
        out.expect(r"^\d\d:\d\d teabuyer: 有乌龙茶吗\?$")
        type_line("/shop TEA HOUSE")  # the conversation exists now: it opens with its history
        out.expect(r"^── Tea House ──$")
        out.expect(r"^\d\d:\d\d teabuyer: 有乌龙茶吗\?$")
        type_line("/quit")
        assert chat.wait(timeout=10) == 0

    # The shop's agent (its owner) was offline: the session waited, and is theirs once they connect.
    async def agent_sees() -> list[str]:
        async with HttpApi(url) as api:
            login = await api.login("teaowner", PASSWORD, "agent-desk", "web")
        async with Client(url, login.token) as client:
            for _ in range(100):  # bounded: the queue is served when the agent connects
                page = await client.conversations()
                found = [c for c in page.conversations if c.type == "service" and c.name == "Tea House"]
                if found:
                    return [m.body["text"] for m in (await client.history(found[0].conv_id)).messages]
                await asyncio.sleep(0.1)
            raise AssertionError("the shop's agent never got the conversation")

    assert asyncio.run(agent_sees()) == ["有乌龙茶吗?"]

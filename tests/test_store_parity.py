"""The PostgreSQL store behaves exactly like the SQLite store (the behavioural spec).

One scripted scenario — accounts, sessions, direct and group chat, every refusal, fan-out
switch, read markers, receipts, recall, relations, dissolve — runs against both stores
with the same ids and clocks; the transcripts of results and error codes must be equal.
Also: the PostgreSQL group-commit writer batches bursts, keeps one sender's order, gives
gap-free seqs under concurrent writers (two stores = two nodes on one database), and the
``yim admin migrate`` command is idempotent.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest_asyncio

from yim.protocol.errors import YimError
from yim.services.routing import DefaultRouting
from yim.services.wire import event_payload
from yim.storage.base import Store
from yim.storage.media import BlobRec
from yim.storage.postgres.store import PostgresStore
from yim.storage.records import CreateGroupCmd, SendCmd, SessionRec, UserRec
from yim.storage.service import ServiceCtx
from yim.storage.sqlite.store import SqliteStore

ROOT = Path(__file__).resolve().parent.parent
T0 = 1_700_000_000_000


class Transcript:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.lines: list[tuple[str, Any]] = []

    async def __call__(self, label: str, call: Awaitable[Any]) -> Any:
        try:
            result = await call
        except YimError as exc:
            self.lines.append((label, ["error", exc.code, exc.message]))
            return None
        self.lines.append((label, _normalise(msgspec.to_builtins(result))))
        return result


def _normalise(value: Any) -> Any:
    """Orders that carry no meaning (fan-out deliveries, sets) are sorted."""
    if isinstance(value, dict):
        out = {k: _normalise(v) for k, v in value.items()}
        if "deliveries" in out:
            out["deliveries"] = sorted(out["deliveries"])
        return out
    if isinstance(value, list | tuple):
        return [_normalise(v) for v in value]
    return value


async def _wire_sync(s: Store, user_id: int, since: int, limit: int) -> tuple[list[Any], int]:
    """A sync page as a device receives it: the stores may build payloads differently (the
    SQLite store in SQL), so the wire bytes are what must be equal."""
    events, head = await s.sync(user_id, since, limit)
    return [(e.seq, e.type, e.conv_id, e.conv_seq, event_payload(e).decode()) for e in events], head


def _send(msg_id: int, sender: int, **kw: Any) -> SendCmd:
    body = kw.pop("body", b'{"text":"hi"}')
    return SendCmd(
        msg_id=msg_id,
        new_conv_id=kw.pop("new_conv_id", msg_id + 1),
        sender_id=sender,
        sender_device=kw.pop("device", "phone"),
        kind=kw.pop("kind", "text"),
        body=body,
        client_msg_id=kw.pop("cmid", f"c{msg_id}"),
        created_at=kw.pop("at", T0 + msg_id),
        **kw,
    )


async def scenario(t: Transcript) -> None:
    s = t.store
    names = ["Alice", "bob", "carol", "dave", "erin", "Ärger"]
    for i, name in enumerate(names, start=1):
        await t(f"user {name}", s.create_user(UserRec(i, name, name.lower(), f"hash{i}", T0)))
    await t("user taken (case-insensitive)", s.create_user(UserRec(10, "ALICE", "x", "h", T0)))
    await t("non-ascii case is distinct", s.create_user(UserRec(11, "ärger", "x", "h", T0)))
    await t("by name", s.user_by_name("alice"))
    await t("by name missing", s.user_by_name("zed"))
    await t("by ids", s.users_by_ids([1, 3, 99]))

    # sessions and devices
    await t("login phone", s.create_session(SessionRec("s1", 1, "phone", "android", T0, T0 + 10**9), "Pixel"))
    await t("login web", s.create_session(SessionRec("s2", 1, "web", "web", T0 + 1, T0 + 10**9), "Chrome"))
    await t("relogin phone", s.create_session(SessionRec("s3", 1, "phone", "android", T0 + 2, T0 + 10**9), "Pixel 9"))
    await t("get s1", s.get_session("s1"))
    await t("get s3", s.get_session("s3"))
    await t("get none", s.get_session("nope"))
    await t("touch", s.touch_devices([(1, "phone", T0 + 50, 7), (1, "web", T0 + 40, 0)]))
    await t("touch back", s.touch_devices([(1, "phone", T0 + 5, 3)]))
    await t("devices", s.list_devices(1))
    await t("revoke web", s.revoke_sessions(1, device_id="web", now=T0 + 60))
    await t("revoke again", s.revoke_sessions(1, session_id="s2", now=T0 + 61))
    await t("devices after revoke", s.list_devices(1))

    # direct chat
    await t("dm to self", s.send_message(_send(100, 1, to=1)))
    await t("dm to nobody", s.send_message(_send(102, 1, to=999)))
    await t("dm with mention", s.send_message(_send(104, 1, to=2, mentions=(2,))))
    first = await t("dm first", s.send_message(_send(106, 1, to=2)))
    dm = first.message.conv_id
    await t("dm retry is idempotent", s.send_message(_send(108, 1, to=2, cmid="c106")))
    for i in range(5):
        await t(f"dm {i}", s.send_message(_send(110 + 2 * i, 2 if i % 2 else 1, conv_id=dm)))
    await t("dm by outsider", s.send_message(_send(130, 3, conv_id=dm)))
    await t("dm to unknown conv", s.send_message(_send(132, 1, conv_id=123456)))
    await t("convs bob", s.conversations(2, None, 10))
    await t("conv one", s.conversations(2, None, 10, dm))
    await t("conv not mine", s.conversations(3, None, 10, dm))
    await t("read bob", s.mark_read(2, dm, 3, T0 + 200))
    await t("read bob backwards", s.mark_read(2, dm, 2, T0 + 201))
    await t("read bob past head", s.mark_read(2, dm, 999, T0 + 202))
    await t("read outsider", s.mark_read(3, dm, 1, T0 + 203))
    await t("sync alice", _wire_sync(s, 1, 0, 100))
    await t("sync bob page", _wire_sync(s, 2, 2, 3))
    await t("sync nobody", _wire_sync(s, 999, 0, 10))
    await t("head alice", s.inbox_head(1))
    await t("history latest", s.history(1, dm, None, None, 3))
    await t("history before", s.history(1, dm, 3, None, 10))
    await t("history after", s.history(1, dm, None, 2, 2))
    await t("history outsider", s.history(3, dm, None, None, 10))
    await t("recall by peer", s.recall(dm, 2, 1, 200, T0 + 300, 120_000))
    await t("recall expired", s.recall(dm, 1, 1, 202, T0 + 10**7, 120_000))
    await t("recall ok", s.recall(dm, 1, 6, 204, T0 + 300, 120_000))
    await t("recall twice", s.recall(dm, 1, 6, 206, T0 + 301, 120_000))
    await t("recall the recall", s.recall(dm, 1, 7, 208, T0 + 302, 120_000))
    await t("recall missing", s.recall(dm, 1, 99, 210, T0 + 303, 120_000))
    await t("convs alice after recall", s.conversations(1, None, 10))

    # groups
    group = await t(
        "group create",
        s.create_group(
            CreateGroupCmd(
                conv_id=300, msg_id=301, owner_id=1, member_ids=[2, 3, 2], name="团队", announcement="hi",
                avatar="", join_policy="members_invite", max_members=6, threshold=4, created_at=T0 + 400,
            )
        ),
    )  # fmt: skip
    gid = group.group.conv_id
    await t(
        "group with unknown user",
        s.create_group(
            CreateGroupCmd(
                conv_id=302, msg_id=303, owner_id=1, member_ids=[77], name="x", announcement="", avatar="",
                join_policy="open", max_members=6, threshold=4, created_at=T0 + 401,
            )
        ),
    )  # fmt: skip
    await t("join closed", s.add_members(gid, 4, [4], "join", 310, T0 + 410, 4))
    await t("invite by member", s.add_members(gid, 3, [4], "invite", 312, T0 + 411, 4))
    await t("invite known", s.add_members(gid, 1, [2, 3], "invite", 314, T0 + 412, 4))
    talk = await t("carol talks", s.send_message(_send(320, 3, conv_id=gid)))
    await t("mention all by member", s.send_message(_send(322, 3, conv_id=gid, mention_all=True)))
    await t("mention outsider", s.send_message(_send(324, 3, conv_id=gid, mentions=(5,))))
    await t("mention bob", s.send_message(_send(326, 3, conv_id=gid, mentions=(2,))))
    await t("mention all by owner", s.send_message(_send(328, 1, conv_id=gid, mention_all=True)))
    await t("convs bob groups", s.conversations(2, None, 10))
    await t("role admin", s.set_role(gid, 1, 2, "admin", 330, T0 + 430))
    await t("role by admin", s.set_role(gid, 2, 3, "admin", 332, T0 + 431))
    await t("role self", s.set_role(gid, 1, 1, "member", 334, T0 + 432))
    await t("mute carol", s.mute_member(gid, 2, 3, T0 + 10**6, 336, T0 + 433))
    await t("muted speaks", s.send_message(_send(338, 3, conv_id=gid, at=T0 + 434)))
    await t("mute owner", s.mute_member(gid, 2, 1, T0 + 10**6, 340, T0 + 435))
    await t("unmute carol", s.mute_member(gid, 1, 3, 0, 342, T0 + 436))
    await t("mute all", s.update_group(gid, 2, {"mute_all": True, "name": "新名"}, 344, T0 + 437))
    await t("member under mute all", s.send_message(_send(346, 3, conv_id=gid)))
    await t("admin under mute all", s.send_message(_send(348, 2, conv_id=gid)))
    await t("update by member", s.update_group(gid, 3, {"name": "x"}, 350, T0 + 438))
    await t("update bad field", s.update_group(gid, 1, {"owner_id": 3}, 352, T0 + 439))
    await t("update too small", s.update_group(gid, 1, {"max_members": 2}, 354, T0 + 440))
    await t("update open", s.update_group(gid, 1, {"mute_all": False, "join_policy": "open"}, 356, T0 + 441))
    await t("join open", s.add_members(gid, 4, [4], "join", 358, T0 + 442, 4))
    await t("invite past threshold", s.add_members(gid, 2, [5, 6], "invite", 360, T0 + 443, 4))
    await t("group full", s.add_members(gid, 1, [10], "invite", 362, T0 + 444, 4))
    await t("read fan-out send", s.send_message(_send(364, 5, conv_id=gid)))
    await t("read groups erin", s.read_groups(5))
    await t("read groups bob", s.read_groups(2))
    await t("sync erin", _wire_sync(s, 5, 0, 100))
    await t("receipts", s.receipts(gid, 1, 2))
    await t("read carol", s.mark_read(3, gid, 100, T0 + 450))
    await t("receipts after read", s.receipts(gid, 1, 2))
    await t("receipts missing", s.receipts(gid, 1, 999))
    await t("receipts outsider", s.receipts(dm, 4, 1))
    await t("info", s.group_info(gid, 4))
    await t("info outsider open", s.group_info(gid, 99))
    await t("members page", s.group_members(gid, 1, 0, 3))
    await t("members page 2", s.group_members(gid, 1, 3, 10))
    await t("members outsider", s.group_members(gid, 99, 0, 10))
    await t("member ids", s.member_ids(gid))
    await t("owner leaves", s.remove_member(gid, 1, 1, 370, T0 + 460))
    await t("admin removes admin?", s.remove_member(gid, 2, 1, 372, T0 + 461))
    await t("remove non-member", s.remove_member(gid, 1, 99, 374, T0 + 462))
    await t("remove dave", s.remove_member(gid, 2, 4, 376, T0 + 463))
    await t("dave speaks after removal", s.send_message(_send(378, 4, conv_id=gid)))
    await t("dave history", s.history(4, gid, None, None, 50))
    await t("dave convs", s.conversations(4, None, 10))
    await t("carol leaves", s.remove_member(gid, 3, 3, 380, T0 + 464))
    await t("group recall by admin", s.recall(gid, 2, 2, 382, T0 + 10**7, 120_000))
    await t("group recall system entry", s.recall(gid, 1, 1, 384, T0 + 465, 120_000))
    await t("moderator recalls late", s.recall(gid, 2, talk.message.seq, 385, T0 + 10**7, 120_000))
    await t("convs carol after recall", s.conversations(3, None, 10))
    await t("transfer ownership", s.set_role(gid, 1, 2, "owner", 386, T0 + 466))
    await t("old owner dissolves", s.dissolve_group(gid, 1, 388, T0 + 467))
    await t("dissolve", s.dissolve_group(gid, 2, 390, T0 + 468))
    await t("speak in dissolved", s.send_message(_send(392, 2, conv_id=gid)))
    await t("invite to dissolved", s.add_members(gid, 2, [4], "invite", 394, T0 + 469, 4))
    await t("info dissolved", s.group_info(gid, 2))
    await t("sync bob all", _wire_sync(s, 2, 0, 1000))
    await t("convs bob end", s.conversations(2, None, 10))
    await t("convs bob paged", s.conversations(2, T0, 1))
    await t("unknown group", s.group_info(424242, 1))

    # relations on the message path
    r = s.relations
    await t("privacy default", r.privacy(3))
    await t("friends only", r.set_privacy(3, "friends", None))
    await t("dm to friends-only", s.send_message(_send(400, 4, to=3)))
    req = await t("friend request", r.friend_request(500, 4, 3, "hi", T0 + 500))
    await t("friend request again", r.friend_request(501, 4, 3, "hi again", T0 + 501))
    await t("requests incoming", r.friend_requests(3, True, None, 10))
    await t("respond wrong actor", r.friend_respond(req[0].id, 4, "accept", T0 + 502))
    await t("accept", r.friend_respond(req[0].id, 3, "accept", T0 + 503))
    await t("dm to friend", s.send_message(_send(402, 4, to=3)))
    await t("friends", r.friends(3, 0, 10))
    await t("friend update", r.friend_update(3, 4, "老四", ["work"]))
    assert await t("presence audiences", r.presence_audiences([3, 4, 5])) == {3: [4], 4: [3], 5: []}
    await t("hide presence", r.set_privacy(4, None, "nobody"))
    assert await t("presence audiences hidden", r.presence_audiences([3, 4])) == {3: [4], 4: []}
    await t("show presence", r.set_privacy(4, None, "friends"))
    await t("follow", r.follow(5, 3, True, T0 + 504))
    await t("follow again", r.follow(5, 3, True, T0 + 505))
    await t("counts", r.counts(3))
    await t("relation", r.relation(3, 4))
    await t("block", r.block(3, 4, True, T0 + 506))
    await t("blocked dm", s.send_message(_send(404, 4, to=3)))
    await t("blocker dm", s.send_message(_send(406, 3, to=4)))
    await t("blocks", r.edges(3, "blocks", 0, 10))
    await t("presence audience", r.presence_audience(3))
    # 3 blocked 4, which also ended their friendship; 5 only follows 3
    assert await t("presence audiences blocked", r.presence_audiences([3, 4, 5, 99])) == {3: [], 4: [], 5: [], 99: []}
    await t("presence visible", r.presence_visible(5, [3, 5, 4]))
    await t("unblock", r.block(3, 4, False, T0 + 507))
    await t("presence audiences unblocked", r.presence_audiences([4, 3]))
    await t("sync carol", _wire_sync(s, 3, 0, 1000))

    # customer service: routing decisions, queue, transfer, close, rating, supervision
    online = {1, 2, 3}
    s.service.ctx = ServiceCtx(is_connected=lambda uid: uid in online, policy=DefaultRouting())
    sv = s.service
    await t("shop", sv.create_shop(700, "小店", 1, T0 + 700))
    await t("shop get", sv.shop(700))
    await t("agent by non-admin", sv.set_agent(700, 2, 3, "agent", ["pre_sale"], 2, T0 + 701))
    await t("agent bob", sv.set_agent(700, 1, 2, "agent", ["pre_sale"], 1, T0 + 702))
    await t("agent carol", sv.set_agent(700, 1, 3, "agent", ["after_sale", "pre_sale"], 1, T0 + 703))
    ask = await t(
        "customer asks",
        s.send_message(_send(710, 4, shop_id=700, new_session_id=711, body='{"text":"有货吗"}'.encode())),
    )
    await t(
        "second customer", s.send_message(_send(712, 5, shop_id=700, new_session_id=713, body=b'{"text":"price?"}'))
    )
    await t("third is queued", s.send_message(_send(714, 6, shop_id=700, new_session_id=715, body=b'{"text":"hi"}')))
    await t("no such shop", s.send_message(_send(716, 6, shop_id=9999, new_session_id=717)))
    conv = ask.message.conv_id
    served = await sv.customer_session(700, 4)
    agent = served.agent_id if served else 0
    await t("agent replies", s.send_message(_send(718, agent, conv_id=conv)))
    await t("other agent may not", s.send_message(_send(720, 5 - agent, conv_id=conv)))
    await t("customer again", s.send_message(_send(722, 4, conv_id=conv)))
    await t("customer retry", s.send_message(_send(724, 4, shop_id=700, new_session_id=725, cmid="c710")))
    await t("sessions agent", sv.sessions(agent, None, None, 10))
    await t("sessions admin", sv.sessions(1, 700, None, 10))
    await t("queued session", sv.customer_session(700, 6))
    await t("agents", sv.agents(700, 2))
    await t("stats", sv.stats(700, 1, T0 + 730))
    await t("stats by agent", sv.stats(700, 2, T0 + 730))
    assert served is not None
    await t("transfer", sv.transfer(served.id, agent, None, "after_sale", T0 + 740))
    await t("close", sv.close(served.id, 4, T0 + 750))
    await t("rate", sv.rate(served.id, 4, 5, "好", T0 + 751))
    await t("rate by other", sv.rate(served.id, 5, 1, "", T0 + 752))
    await t("status offline", sv.set_agent_status(3, 700, "offline", T0 + 760))
    online.discard(2)
    await t("presence off", sv.agent_presence(2, False, T0 + 770))
    await t("remove agent", sv.remove_agent(700, 1, 3, T0 + 780))
    await t("supervisor history", s.history(1, conv, None, None, 50))
    await t("outsider history", s.history(5, conv, None, None, 50))
    await t("convs customer", s.conversations(4, None, 10))
    await t("shops of", sv.shops_of(2))
    await t("stats end", sv.stats(700, 1, T0 + 790))
    await t("max id", s.max_msg_id())


@pytest_asyncio.fixture
async def stores(tmp_path: Path, postgres_dsn: str) -> AsyncIterator[tuple[Store, Store]]:
    lite = SqliteStore(str(tmp_path / "parity.db"))
    pg = PostgresStore(postgres_dsn)
    await lite.open()
    await pg.open()
    yield lite, pg
    await pg.close()
    await lite.close()


async def test_postgres_transcript_equals_sqlite(stores: tuple[Store, Store]) -> None:
    lite, pg = (Transcript(s) for s in stores)
    await scenario(lite)
    await scenario(pg)
    assert len(pg.lines) == len(lite.lines)
    for (label, want), (_, got) in zip(lite.lines, pg.lines, strict=True):
        assert got == want, label


def _blob(sha: str, mime: str, width: int | None = None) -> BlobRec:
    thumb = f"t{sha}" if width else None
    return BlobRec(sha, 1000, mime, width, width, thumb, 10 if width else None, 0)


def _media(msg_id: int, sender: int, kind: str, media_id: int, **kw: Any) -> SendCmd:
    return _send(msg_id, sender, kind=kind, body=f'{{"media_id":"{media_id}"}}'.encode(), **kw)


def _text(msg_id: int, sender: int, text: str, **kw: Any) -> SendCmd:
    return _send(msg_id, sender, body=msgspec.json.encode({"text": text}), **kw)


async def media_and_search_scenario(t: Transcript) -> None:
    s, m = t.store, t.store.media
    for i, name in enumerate(["alice", "bob", "carol", "dave"], start=1):
        await s.create_user(UserRec(i, name, name, "h", T0))
    # uploads: one blob row per distinct bytes; an image description fills in a file's
    await t("no blob", m.blob_by_sha("aa"))
    await t("image", m.create_media(900, 1, "image", "cat.png", _blob("aa", "image/png", 64), T0 + 1))
    await t("pdf", m.create_media(901, 1, "file", "年报 Report.pdf", _blob("bb", "application/pdf"), T0 + 2))
    await t("same bytes again", m.create_media(902, 2, "file", "copy.png", _blob("aa", "image/png"), T0 + 3))
    await t("png as file", m.create_media(903, 1, "file", "big.png", _blob("cc", "image/png"), T0 + 4))
    await t("blob", m.blob_by_sha("aa"))
    await t("uploader sees", m.visible(900, 1))
    await t("other does not", m.visible(900, 2))
    await t("unknown id", m.visible(12345, 1))
    await t("id past int64", m.visible(2**63, 1))
    # media messages: access, kind checks, canonical body, idempotency, recall
    first = await t("dm", s.send_message(_text(1000, 1, "支持亿级消息量 Hello World", to=2)))
    dm = first.message.conv_id
    await t("image to bob", m.send(_media(1002, 1, "image", 900, conv_id=dm)))
    await t("bob sees it", m.visible(900, 2))
    await t("carol does not", m.visible(900, 3))
    await t("video of an image", m.send(_media(1004, 1, "video", 900, conv_id=dm)))
    await t("image never decoded", m.send(_media(1006, 1, "image", 903, conv_id=dm)))
    await t("bob forwards unseen", m.send(_media(1008, 2, "file", 901, conv_id=dm)))
    await t("outsider with own media", m.send(_media(1010, 3, "file", 902, conv_id=dm)))
    await t("bob forwards seen", m.send(_media(1012, 2, "file", 900, to=3)))
    await t("pdf", m.send(_media(1014, 1, "file", 901, conv_id=dm)))
    await t("recall image", s.recall(dm, 1, 2, 1016, T0 + 1016, 120_000))
    await t("bob still sees via carol dm", m.visible(900, 2))
    await t("image retry after recall", m.send(_media(1018, 1, "image", 900, conv_id=dm, cmid="c1002")))
    # search: substrings, case, short terms, windows, recall, paging, context
    group = await s.create_group(
        CreateGroupCmd(
            conv_id=1100, msg_id=1101, owner_id=1, member_ids=[2, 4], name="g", announcement="",
            avatar="", join_policy="open", max_members=10, threshold=100, created_at=T0 + 1100,
        )
    )  # fmt: skip
    gid = group.group.conv_id
    await t("g1", s.send_message(_text(1102, 1, "hello before carol", conv_id=gid)))
    await s.add_members(gid, 3, [3], "join", 1104, T0 + 1104, 100)
    await t("g2", s.send_message(_text(1106, 2, "HELLO after carol 亿级", conv_id=gid)))
    await s.remove_member(gid, 4, 4, 1108, T0 + 1108)
    await t("g3", s.send_message(_text(1110, 1, "hello after dave left", conv_id=gid)))
    gone = await t("g4", s.send_message(_text(1112, 1, "hello to recall", conv_id=gid)))
    await s.recall(gid, 1, gone.message.seq, 1114, T0 + 1114, 120_000)
    q = s.search.search
    await t("cjk 4", q(1, None, ["亿级消息"], None, 10))
    await t("cjk 2", q(2, None, ["亿级"], None, 10))
    await t("case", q(1, None, ["hello"], None, 10))
    await t("two terms", q(1, None, ["HELLO", "carol"], None, 10))
    await t("short and long", q(1, None, ["he", "World"], None, 10))
    await t("short only", q(1, None, ["Re"], None, 10))
    await t("file name", q(2, None, ["report"], None, 10))
    await t("carol's window", q(3, None, ["hello"], None, 10))
    await t("dave's window", q(4, None, ["hello"], None, 10))
    await t("one conversation", q(1, gid, ["hello"], None, 10))
    await t("not a member", q(3, dm, ["hello"], None, 10))
    page = await t("page 1", q(1, None, ["hello"], None, 2))
    await t("page 2", q(1, None, ["hello"], page[0][-1].message.msg_id, 2))
    await t("wildcards are literal", q(1, None, ["%", "_"], None, 10))
    await t("nothing", q(1, None, ["不存在的词"], None, 10))


async def test_media_and_search_transcripts_equal(stores: tuple[Store, Store]) -> None:
    lite, pg = (Transcript(s) for s in stores)
    await media_and_search_scenario(lite)
    await media_and_search_scenario(pg)
    assert len(pg.lines) == len(lite.lines)
    for (label, want), (_, got) in zip(lite.lines, pg.lines, strict=True):
        assert got == want, label
    hits = dict(lite.lines)
    assert [h["text"] for h in hits["cjk 2"][0]] == ["HELLO after carol 亿级", "支持亿级消息量 Hello World"]
    assert [h["text"] for h in hits["carol's window"][0]] == ["hello after dave left", "HELLO after carol 亿级"]
    assert hits["not a member"][:2] == ["error", "not_member"]
    assert hits["bob forwards unseen"][:2] == ["error", "media_not_found"]
    assert hits["image never decoded"][:2] == ["error", "media_kind_mismatch"]


async def _users(store: Store, n: int) -> None:
    for i in range(1, n + 1):
        await store.create_user(UserRec(i, f"u{i}", f"u{i}", "h", T0))


async def test_a_burst_is_batched_and_keeps_each_senders_order(postgres_dsn: str) -> None:
    store = PostgresStore(postgres_dsn)
    await store.open()
    try:
        await _users(store, 4)
        opened = await store.send_message(_send(1000, 1, to=2))
        conv = opened.message.conv_id
        before = store.stats["batches"]
        # Two senders interleaved, submitted without awaiting: futures resolve in
        # submission order and each sender's seqs grow in that order.
        futs = [store.send_message(_send(2000 + i, 1 + i % 2, conv_id=conv)) for i in range(600)]
        order: list[int] = []
        for i, fut in enumerate(futs):
            fut.add_done_callback(lambda _f, i=i: order.append(i))
        results = await asyncio.gather(*futs)
        assert order == list(range(600))
        assert [r.message.seq for r in results] == list(range(2, 602))
        batches = store.stats["batches"] - before
        assert batches < 100, f"600 sends took {batches} batches: no group commit"
        # A lone message after the burst is not held back waiting for company.
        started = asyncio.get_running_loop().time()
        await store.send_message(_send(5000, 1, conv_id=conv))
        assert asyncio.get_running_loop().time() - started < 1.0
    finally:
        await store.close()


async def test_two_nodes_on_one_database_allocate_gap_free_seqs(postgres_dsn: str) -> None:
    """Two stores are two nodes: their writers commit concurrently, crossing row locks on
    the same conversations and users (in one lock order); every timeline stays gap-free
    and every message lands exactly once."""
    a, b = PostgresStore(postgres_dsn), PostgresStore(postgres_dsn)
    await a.open()
    await b.open()
    try:
        await _users(a, 6)
        convs = []
        for k, (x, y) in enumerate([(1, 2), (3, 4), (5, 6), (1, 3)]):
            convs.append((await a.send_message(_send(100 + 10 * k, x, to=y))).message.conv_id)
        g = await a.create_group(
            CreateGroupCmd(
                conv_id=900, msg_id=901, owner_id=1, member_ids=[2, 3, 4, 5, 6], name="g", announcement="",
                avatar="", join_policy="open", max_members=10, threshold=100, created_at=T0,
            )
        )  # fmt: skip
        convs.append(g.group.conv_id)
        futs = []
        for i in range(800):
            store = a if i % 2 else b
            conv = convs[i % len(convs)]
            sender = {0: 1, 1: 3, 2: 5, 3: 1, 4: 1 + i % 6}[i % len(convs)]
            futs.append(store.send_message(_send(10_000 + i, sender, conv_id=conv, cmid=f"x{i}")))
        results = await asyncio.gather(*futs)
        assert len({r.message.msg_id for r in results}) == 800
        pool = await asyncpg.connect(postgres_dsn)
        try:
            for conv in convs:
                seqs = [r[0] for r in await pool.fetch("SELECT seq FROM messages WHERE conv_id=$1 ORDER BY seq", conv)]
                assert seqs == list(range(1, len(seqs) + 1))
            for user in range(1, 7):
                seqs = [r[0] for r in await pool.fetch("SELECT seq FROM inbox WHERE user_id=$1 ORDER BY seq", user)]
                assert seqs == list(range(1, len(seqs) + 1))
                assert await pool.fetchval("SELECT inbox_seq FROM users WHERE id=$1", user) == len(seqs)
        finally:
            await pool.close()
    finally:
        await a.close()
        await b.close()


async def test_concurrent_resends_of_one_client_msg_id_make_one_message(postgres_dsn: str) -> None:
    a, b = PostgresStore(postgres_dsn), PostgresStore(postgres_dsn)
    await a.open()
    await b.open()
    try:
        await _users(a, 2)
        conv = (await a.send_message(_send(100, 1, to=2))).message.conv_id
        futs = [s.send_message(_send(200 + i, 1, conv_id=conv, cmid="same")) for i in range(20) for s in (a, b)]
        results = await asyncio.gather(*futs)
        assert len({r.message.msg_id for r in results}) == 1
        assert sum(not r.duplicate for r in results) == 1
    finally:
        await a.close()
        await b.close()


def _yim(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "yim", *args], capture_output=True, text=True, timeout=60, cwd=ROOT, check=False
    )


async def test_admin_migrate_is_idempotent(postgres_server: Any, postgres_admin: Any) -> None:
    await postgres_admin.execute("CREATE DATABASE migrate_cli")
    try:
        dsn = postgres_server.dsn("migrate_cli")
        first = await asyncio.to_thread(_yim, "admin", "migrate", "--store", dsn)
        assert first.returncode == 0, first.stderr
        assert "schema_postgres.sql" in first.stdout and "postgres_functions.sql" in first.stdout
        again = await asyncio.to_thread(_yim, "admin", "migrate", "--store", dsn)
        assert again.returncode == 0 and "already up to date" in again.stdout
        refused = await asyncio.to_thread(_yim, "admin", "migrate", "--store", "sqlite")
        assert refused.returncode == 2
    finally:
        await postgres_admin.execute("DROP DATABASE migrate_cli WITH (FORCE)")

"""Reports on both stores: users report a message or a user, admins work the queue and
resolve reports (dismiss, recall the message for everyone, disable the sender)."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest

from tests.rawclient import Device, ProtocolError, make_users, until
from tests.sdk_helpers import raw_close_code, raw_ws
from tests.test_admin import bearer, call, make_admin
from tests.test_admin_cli import yim
from tests.test_cluster import three_nodes  # noqa: F401  (the fixture: three nodes, PostgreSQL + Redis)
from tests.test_media import fetch, jpeg_bytes, uploaded
from tests.test_store_parity import T0, Transcript, _text, stores  # noqa: F401  (stores: both, one scenario)
from yim.client import HttpApi
from yim.node import NodeServer
from yim.protocol.close import CLOSE_DISABLED
from yim.storage.admin import AuditEntry
from yim.storage.base import Store
from yim.storage.records import CreateGroupCmd, UserRec
from yim.storage.reports import NewReport, ReportRec, Resolution, Resolved


async def code_of(coro: Any) -> str:
    with pytest.raises(ProtocolError) as err:
        await coro
    return err.value.code


async def test_reports(make_server: Any, backend: str, tmp_path: Path) -> None:
    (tmp_path / "reject.txt").write_text("evilcorp\n", encoding="utf-8")  # a reject list: not for a report's words
    server: NodeServer = await make_server(report_limit_per_hour=3, word_lists=f"reject:{tmp_path / 'reject.txt'}")
    async with asyncio.timeout(90), aiohttp.ClientSession(server.url) as http:
        logins = await make_users(http, ["root", "alice", "bob", "carol", "dave"])
        root_l = logins[0]
        await make_admin(server, root_l["user_id"])
        root = root_l["token"]
        alice, bob, carol, dave = (Device(http, x) for x in logins[1:])
        for d in (alice, bob, carol, dave):
            await d.connect()
        ids = {n: x["user_id"] for n, x in zip(["root", "alice", "bob", "carol", "dave"], logins, strict=True)}

        dm = await alice.request("send", to=ids["bob"], kind="text", body={"text": "buy pills"}, client_msg_id="1")
        await bob.request("send", conv_id=dm["conv_id"], kind="text", body={"text": "no"}, client_msg_id="1")
        group = (await alice.request("group_create", name="g", members=[ids["bob"], ids["carol"]]))["group"]
        gm = await alice.request(
            "send", conv_id=group["conv_id"], kind="text", body={"text": "spam!"}, client_msg_id="2"
        )

        # a message one can see: filed once, a repeat returns the same open report
        first = await bob.request("report", conv_id=dm["conv_id"], seq=dm["seq"], category="spam", text="  ads ")
        assert first["status"] == "open" and first["duplicate"] is False
        again = await bob.request("report", conv_id=dm["conv_id"], seq=dm["seq"], category="abuse")
        assert (again["report_id"], again["duplicate"]) == (first["report_id"], True)
        # what one cannot see, one's own message, what does not exist, a bad shape
        assert await code_of(dave.request("report", conv_id=dm["conv_id"], seq=dm["seq"], category="spam")) == (
            "not_member"
        )
        assert await code_of(bob.request("report", conv_id=dm["conv_id"], seq=2, category="spam")) == "bad_request"
        assert await code_of(bob.request("report", conv_id=dm["conv_id"], seq=99, category="spam")) == "not_found"
        assert await code_of(bob.request("report", user_id=ids["bob"], category="spam")) == "bad_request"
        assert await code_of(bob.request("report", user_id="12345", category="spam")) == "not_found"
        assert await code_of(bob.request("report", category="spam")) == "bad_request"
        both = {"conv_id": dm["conv_id"], "seq": 1, "user_id": ids["alice"]}
        assert await code_of(bob.request("report", category="spam", **both)) == "bad_request"
        assert await code_of(bob.request("report", user_id=ids["alice"], category="meh")) == "bad_request"

        # the group message, by two members (over HTTP too); alice edits it afterwards
        r = await http.post(
            "/api/v1/reports",
            headers=bearer(carol.token),
            json={"conv_id": group["conv_id"], "seq": gm["seq"], "category": "spam"},
        )
        assert r.status == 201, await r.text()
        await bob.request("report", conv_id=group["conv_id"], seq=gm["seq"], category="abuse", text="again")
        await alice.request("edit", conv_id=group["conv_id"], seq=gm["seq"], text="nothing to see")
        # users: any other account, by id
        by_dave = await dave.request("report", user_id=ids["alice"], category="abuse", text="threats")
        by_carol = await carol.request("report", user_id=ids["bob"], category="other", text="works for EvilCorp")

        # non-admins are refused the queue
        for op, fields in [
            ("admin_reports", {}),
            ("admin_report", {"report_id": first["report_id"]}),
            ("admin_resolve", {"report_id": first["report_id"], "action": "dismiss"}),
        ]:
            assert await code_of(bob.request(op, **fields)) == "forbidden"

        # the queue: open reports, newest first, each message as it was when reported
        status, page = await call(http, "GET", "/api/v1/admin/reports", root)
        assert status == 200, page
        queue = page["reports"]
        assert [x["status"] for x in queue] == ["open"] * 5 and page["next_before"] is None
        assert [x["report_id"] for x in queue] == sorted((x["report_id"] for x in queue), key=int, reverse=True)
        group_reports = [x for x in queue if x["conv_id"] == group["conv_id"]]
        assert len(group_reports) == 2
        assert all(x["message"]["body"] == {"text": "spam!"} for x in group_reports)  # not the edited text
        assert all(x["user_id"] == ids["alice"] and x["target"] == "message" for x in group_reports)
        mine = next(x for x in queue if x["report_id"] == first["report_id"])
        assert next(x for x in queue if x["report_id"] == by_carol["report_id"])["text"] == "works for EvilCorp"
        assert (mine["category"], mine["text"], mine["reporter_id"]) == ("spam", "ads", ids["bob"])
        status, page = await call(http, "GET", "/api/v1/admin/reports?limit=2", root)
        assert len(page["reports"]) == 2 and page["next_before"] == page["reports"][1]["report_id"]
        status, detail = await call(http, "GET", f"/api/v1/admin/reports/{first['report_id']}", root)
        assert status == 200 and [e["seq"] for e in detail["context"]] == [1, 2]
        assert detail["context"][0]["body"] == {"text": "buy pills"}

        # recall: the message is recalled for everyone, both reports of it are resolved
        status, out = await call(
            http,
            "POST",
            f"/api/v1/admin/reports/{group_reports[0]['report_id']}/resolve",
            root,
            {"action": "recall", "note": "ads"},
        )
        assert status == 200, out
        assert out["closed"] == 2 and out["recall_seq"] is not None
        assert (out["report"]["status"], out["report"]["resolution"]) == ("resolved", "recall")
        recalled = {"conv_id": group["conv_id"], "seq": out["recall_seq"]}
        await until(lambda: any(e["data"].get("kind") == "recall" for e in carol.events))
        history = await carol.pull(group["conv_id"], 0)
        assert next(m for m in history if m["seq"] == gm["seq"])["recalled"] is True
        assert next(m for m in history if m["seq"] == recalled["seq"])["sender_id"] == ids["root"]
        status, err = await call(
            http, "POST", f"/api/v1/admin/reports/{group_reports[1]['report_id']}/resolve", root, {"action": "dismiss"}
        )
        assert (status, err["code"]) == (409, "already_resolved")

        # recall is for a reported message; a dismissal closes the reports of its target only
        status, err = await call(
            http, "POST", f"/api/v1/admin/reports/{by_dave['report_id']}/resolve", root, {"action": "recall"}
        )
        assert (status, err["code"]) == (400, "bad_request")
        status, out = await call(
            http, "POST", f"/api/v1/admin/reports/{by_dave['report_id']}/resolve", root, {"action": "dismiss"}
        )
        assert status == 200 and out["closed"] == 1 and out["report"]["resolution"] == "dismiss"

        # disable: the sender is disabled, their connections close, their logins are refused
        ws = await raw_ws(http, alice.token)
        status, out = await call(
            http, "POST", f"/api/v1/admin/reports/{first['report_id']}/resolve", root, {"action": "disable"}
        )
        assert status == 200, out
        assert out["revoked"] == 1 and out["report"]["resolution"] == "disable"
        assert await raw_close_code(ws) == CLOSE_DISABLED
        await asyncio.wait_for(alice.closed.wait(), 5)
        status, shown = await call(http, "GET", f"/api/v1/admin/users/{ids['alice']}", root)
        assert shown["user"]["disabled_at"] is not None
        # carol's report of bob is another target: still open
        status, page = await call(http, "GET", "/api/v1/admin/reports", root)
        assert [x["report_id"] for x in page["reports"]] == [by_carol["report_id"]]
        status, page = await call(http, "GET", "/api/v1/admin/reports?status=resolved", root)
        assert len(page["reports"]) == 4

        # every resolution is in the audit log (a disable also as the disable it is)
        status, audit = await call(http, "GET", "/api/v1/admin/audit", root)
        actions = [(e["action"], e["target"]) for e in audit["entries"]]
        assert actions[:4] == [
            ("report_resolve", f"report:{first['report_id']}"),
            ("disable", f"user:{ids['alice']}"),
            ("report_resolve", f"report:{by_dave['report_id']}"),
            ("report_resolve", f"report:{group_reports[0]['report_id']}"),
        ]
        assert audit["entries"][3]["detail"] == {
            "resolution": "recall",
            "reported": f"message:{group['conv_id']}:{gm['seq']}",
            "note": "ads",
        }
        assert all(e["actor_id"] == ids["root"] for e in audit["entries"][:4])

        # once resolved, the same target may be reported again
        anew = await bob.request("report", conv_id=dm["conv_id"], seq=dm["seq"], category="spam")
        assert anew["report_id"] != first["report_id"] and anew["duplicate"] is False

        # the hourly limit (3 here): dave has 1 report; a repeat is free, new ones count
        assert (await dave.request("report", user_id=ids["alice"], category="abuse"))["duplicate"] is False
        await dave.request("report", user_id=ids["bob"], category="spam")
        with pytest.raises(ProtocolError) as limited:
            await dave.request("report", user_id=ids["carol"], category="spam")
        assert limited.value.code == "rate_limited"
        assert (await dave.request("report", user_id=ids["bob"], category="spam"))["duplicate"] is True


async def test_an_admin_reads_a_reported_messages_media(make_server: Any, tmp_path: Path) -> None:
    """Through the report only, the one file its snapshot carries: an admin who is no member
    of the conversation can judge an image report; nobody else gets a way round membership."""
    server: NodeServer = await make_server()
    async with asyncio.timeout(60), aiohttp.ClientSession(server.url) as http:
        root_l, alice_l, bob_l = await make_users(http, ["root", "alice", "bob"])
        await make_admin(server, root_l["user_id"])
        alice, bob = Device(http, alice_l), Device(http, bob_l)
        for d in (alice, bob):
            await d.connect()
        photo = jpeg_bytes(320, 240)
        image = await uploaded(http, alice_l, photo, kind="image", name="nasty.jpg")
        other = await uploaded(http, alice_l, b"another file of hers " * 20, name="other.bin")
        sent = await alice.request(
            "send", to=bob.user_id, kind="image", body={"media_id": image["media_id"]}, client_msg_id="i1"
        )
        await alice.request(
            "send", to=bob.user_id, kind="file", body={"media_id": other["media_id"]}, client_msg_id="f1"
        )
        text = await alice.request("send", to=bob.user_id, kind="text", body={"text": "see?"}, client_msg_id="t1")
        rid = (await bob.request("report", conv_id=sent["conv_id"], seq=sent["seq"], category="abuse"))["report_id"]
        text_rid = (await bob.request("report", conv_id=text["conv_id"], seq=text["seq"], category="abuse"))[
            "report_id"
        ]
        # the admin is no member: the ordinary download is refused, as to anyone
        status, _, _ = await fetch(http, root_l, f"/api/v1/media/{image['media_id']}")
        assert status == 404
        # through the report: the image and its thumbnail
        status, data, headers = await fetch(http, root_l, f"/api/v1/admin/reports/{rid}/media/{image['media_id']}")
        assert (status, data, headers["Content-Type"]) == (200, photo, "image/jpeg")
        status, thumb, headers = await fetch(
            http, root_l, f"/api/v1/admin/reports/{rid}/media/{image['media_id']}/thumbnail"
        )
        assert (status, headers["Content-Type"]) == (200, "image/webp") and thumb
        # not a file the report does not show, not through a report of a text, not an unknown report
        for path in (
            f"/api/v1/admin/reports/{rid}/media/{other['media_id']}",
            f"/api/v1/admin/reports/{text_rid}/media/{image['media_id']}",
        ):
            status, body, _ = await fetch(http, root_l, path)
            assert (status, json.loads(body)["code"]) == (404, "media_not_found"), path
        status, body, _ = await fetch(http, root_l, f"/api/v1/admin/reports/12345/media/{image['media_id']}")
        assert (status, json.loads(body)["code"]) == (404, "not_found")
        # the reporter (a member, not a server admin) may not use the admins' way
        status, body, _ = await fetch(http, bob_l, f"/api/v1/admin/reports/{rid}/media/{image['media_id']}")
        assert (status, json.loads(body)["code"]) == (403, "forbidden")
        # the sender recalls it: the admin still sees what was reported
        await alice.request("recall", conv_id=sent["conv_id"], seq=sent["seq"])
        status, data, _ = await fetch(http, root_l, f"/api/v1/admin/reports/{rid}/media/{image['media_id']}")
        assert (status, data) == (200, photo)
        async with HttpApi(server.url, root_l["token"]) as sdk:
            assert await sdk.admin_report_media(rid, image["media_id"], tmp_path / "saved.jpg") == len(photo)
        assert (tmp_path / "saved.jpg").read_bytes() == photo


async def test_reporters_learn_the_outcome(make_server: Any) -> None:
    """Each reporter's devices get a ``report`` notice when it is resolved, and ``my_reports``
    lists their own reports with the outcome: never the admin, the action or the note."""
    server: NodeServer = await make_server()
    async with asyncio.timeout(60), aiohttp.ClientSession(server.url) as http:
        root_l, alice_l, bob_l, carol_l = await make_users(http, ["root", "alice", "bob", "carol"])
        await make_admin(server, root_l["user_id"])
        alice, bob, carol = (Device(http, x) for x in (alice_l, bob_l, carol_l))
        for d in (alice, bob, carol):
            await d.connect()
        group = (await alice.request("group_create", name="g", members=[bob.user_id, carol.user_id]))["group"]
        gm = await alice.request("send", conv_id=group["conv_id"], kind="text", body={"text": "ads"}, client_msg_id="1")
        by_bob = await bob.request("report", conv_id=group["conv_id"], seq=gm["seq"], category="spam")
        by_carol = await carol.request("report", conv_id=group["conv_id"], seq=gm["seq"], category="abuse", text="x")
        of_alice = await bob.request("report", user_id=alice.user_id, category="other", text="rude")

        mine = await bob.request("my_reports")
        assert [(r["report_id"], r["status"], r["outcome"]) for r in mine["reports"]] == [
            (of_alice["report_id"], "open", None),
            (by_bob["report_id"], "open", None),
        ]
        assert mine["next_before"] is None
        assert mine["reports"][1] == {
            "report_id": by_bob["report_id"],
            "target": "message",
            "user_id": alice.user_id,
            "conv_id": group["conv_id"],
            "seq": gm["seq"],
            "category": "spam",
            "text": "",
            "created_at": by_bob["created_at"],
            "status": "open",
            "resolved_at": None,
            "outcome": None,
        }

        # one resolution closes both reports of the message: both reporters are told
        recall = f"/api/v1/admin/reports/{by_bob['report_id']}/resolve"
        status, out = await call(
            http, "POST", recall, root_l["token"], {"action": "recall", "note": "the admins' words"}
        )
        assert status == 200 and out["closed"] == 2, out
        for d, rid in ((bob, by_bob["report_id"]), (carol, by_carol["report_id"])):
            await until(lambda d=d: any(n["type"] == "report" for n in d.notices))
            told = [n["data"] for n in d.notices if n["type"] == "report"]
            assert [(x["report_id"], x["status"], x["outcome"]) for x in told] == [(rid, "resolved", "action_taken")]
            assert "resolved_by" not in told[0] and "note" not in told[0] and "resolution" not in told[0]
        assert not any(n["type"] == "report" for n in alice.notices)  # the reported user learns nothing

        dismiss = f"/api/v1/admin/reports/{of_alice['report_id']}/resolve"
        status, out = await call(http, "POST", dismiss, root_l["token"], {"action": "dismiss"})
        assert status == 200
        # over HTTP, paged; a dismissal is "no_action"
        status, page = await call(http, "GET", "/api/v1/reports?limit=1", bob_l["token"])
        assert status == 200 and [(r["report_id"], r["outcome"]) for r in page["reports"]] == [
            (of_alice["report_id"], "no_action")
        ]
        status, rest = await call(http, "GET", f"/api/v1/reports?limit=1&before={page['next_before']}", bob_l["token"])
        assert [(r["report_id"], r["outcome"]) for r in rest["reports"]] == [(by_bob["report_id"], "action_taken")]
        assert rest["reports"][0]["resolved_at"] is not None and rest["next_before"] is None
        # only one's own
        assert [r["report_id"] for r in (await carol.request("my_reports"))["reports"]] == [by_carol["report_id"]]
        assert (await alice.request("my_reports"))["reports"] == []
        async with HttpApi(server.url, carol_l["token"]) as sdk:
            page = await sdk.my_reports()
            assert [(r.report_id, r.outcome) for r in page.reports] == [(by_carol["report_id"], "action_taken")]


@pytest.mark.backends("sqlite")  # the commands speak HTTP: the store behind the node changes nothing
async def test_report_commands(make_server: Any, tmp_path: Path) -> None:
    server: NodeServer = await make_server()
    pw = tmp_path / "pw"
    pw.write_text("password123\n")
    async with asyncio.timeout(60), aiohttp.ClientSession(server.url) as http:
        root_l, alice_l, bob_l = await make_users(http, ["root", "alice", "bob"])
        await make_admin(server, root_l["user_id"])
        alice, bob = Device(http, alice_l), Device(http, bob_l)
        await alice.connect()
        await bob.connect()
        dm = await alice.request("send", to=bob.user_id, kind="text", body={"text": "buy now"}, client_msg_id="1")
        async with HttpApi(server.url, bob.token) as sdk:  # the SDK's calls, filed and read back
            filed = msgspec.to_builtins(await sdk.report("spam", "ads", conv_id=dm["conv_id"], seq=dm["seq"]))
            assert (await sdk.report("spam", conv_id=dm["conv_id"], seq=dm["seq"])).duplicate is True
        async with HttpApi(server.url, root_l["token"]) as admin:
            (shown,) = (await admin.admin_reports()).reports
            assert (shown.report_id, shown.message and shown.message.kind) == (filed["report_id"], "text")
            assert [e.seq for e in (await admin.admin_report(shown.report_id)).context] == [1]

        async def as_root(*args: str) -> subprocess.CompletedProcess[str]:
            account = ["--server", server.url, "--user", "root", "--password-file", str(pw)]
            return await yim("admin", *args, *account, "--state", str(tmp_path / "s"))

        done = await as_root("reports")
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"{filed['report_id']}  ") and "open  spam  message" in done.stdout, done.stdout
        done = await as_root("report", filed["report_id"])
        assert done.returncode == 0, done.stderr
        assert "says: ads" in done.stdout and "> 1" in done.stdout and "buy now" in done.stdout, done.stdout
        done = await as_root("resolve", filed["report_id"], "recall", "--note", "ads", "--json")
        assert done.returncode == 0, done.stderr
        out = json.loads(done.stdout)
        assert (out["closed"], out["recall_seq"], out["report"]["note"]) == (1, 2, "ads")


async def test_a_resolution_reaches_every_node(three_nodes: list[NodeServer]) -> None:  # noqa: F811
    """Resolved on one node: the recall and the reporter's notice reach members on another,
    and the disabled sender's connection on a third closes with 4007."""
    n0, n1, n2 = three_nodes
    async with (
        aiohttp.ClientSession(n0.url) as h0,
        aiohttp.ClientSession(n1.url) as h1,
        aiohttp.ClientSession(n2.url) as h2,
        asyncio.timeout(60),
    ):
        root_l, alice_l, bob_l = await make_users(h0, ["root", "alice", "bob"])
        await make_admin(n0, root_l["user_id"])
        alice, bob = Device(h2, alice_l), Device(h1, bob_l)
        await alice.connect()
        await bob.connect()
        one = await alice.request("send", to=bob.user_id, kind="text", body={"text": "x"}, client_msg_id="1")
        two = await alice.request("send", to=bob.user_id, kind="text", body={"text": "y"}, client_msg_id="2")
        first = await bob.request("report", conv_id=one["conv_id"], seq=one["seq"], category="spam")
        second = await bob.request("report", conv_id=two["conv_id"], seq=two["seq"], category="abuse")

        path = f"/api/v1/admin/reports/{first['report_id']}/resolve"
        status, out = await call(h0, "POST", path, root_l["token"], {"action": "recall"})
        assert status == 200, out
        await until(lambda: any(e["data"].get("kind") == "recall" for e in bob.events))
        # the reporter, on another node than the admin, is told of it
        await until(lambda: any(n["type"] == "report" for n in bob.notices))
        told = next(n["data"] for n in bob.notices if n["type"] == "report")
        assert (told["report_id"], told["outcome"]) == (first["report_id"], "action_taken")
        # two admins resolving one report at once, on two nodes: one does, the other is told
        three = await alice.request("send", to=bob.user_id, kind="text", body={"text": "z"}, client_msg_id="3")
        third = await bob.request("report", conv_id=three["conv_id"], seq=three["seq"], category="spam")
        path = f"/api/v1/admin/reports/{third['report_id']}/resolve"
        raced = await asyncio.gather(
            *(call(h, "POST", path, root_l["token"], {"action": "dismiss", "note": str(h is h0)}) for h in (h0, h2))
        )
        assert sorted(s for s, _ in raced) == [200, 409] and "already_resolved" in str(raced), raced
        status, audit = await call(h1, "GET", "/api/v1/admin/audit", root_l["token"])
        assert [e["target"] for e in audit["entries"]].count(f"report:{third['report_id']}") == 1

        path = f"/api/v1/admin/reports/{second['report_id']}/resolve"
        status, out = await call(h0, "POST", path, root_l["token"], {"action": "disable"})
        assert status == 200 and out["revoked"] == 1, out
        await asyncio.wait_for(alice.closed.wait(), 10)
        assert alice.ws is not None and alice.ws.close_code == CLOSE_DISABLED


def _audit(at: int, action: str, target: str) -> AuditEntry:
    return AuditEntry(at=at, source="test", action=action, target=target)


def _new(report_id: int, reporter: int, at: int, **target: int) -> NewReport:
    return NewReport(id=report_id, reporter_id=reporter, category="spam", text="", created_at=at, **target)


async def report_scenario(t: Transcript) -> None:
    """Filing (every refusal, a repeat, the hourly limit), the queue, each resolution."""
    s, r = t.store, t.store.reports
    for i, name in enumerate(["alice", "bob", "carol", "dave", "root"], start=1):
        await s.create_user(UserRec(i, name, name, "h", T0))
    await s.admin.set_admin(None, 5, True, _audit(T0, "set_role", "user:5"))
    dm = (await s.send_message(_text(100, 1, "buy pills", to=2))).message.conv_id
    await s.send_message(_text(102, 2, "no", conv_id=dm))
    group = await s.create_group(
        CreateGroupCmd(
            conv_id=200, msg_id=201, owner_id=1, member_ids=[2, 3], name="g", announcement="", avatar="",
            join_policy="open", max_members=10, threshold=100, created_at=T0 + 200,
        )
    )  # fmt: skip
    gid = group.group.conv_id
    spam = (await s.send_message(_text(202, 1, "spam!", conv_id=gid))).message.seq
    await s.remove_member(gid, 3, 3, 204, T0 + 204)  # carol leaves after seeing it
    later = (await s.send_message(_text(206, 1, "after carol", conv_id=gid))).message.seq
    now = T0 + 1000

    await t("message", r.file(_new(300, 2, now, conv_id=dm, seq=1), 3))
    await t("repeat", r.file(_new(301, 2, now + 1, conv_id=dm, seq=1), 3))
    await t("not a member", r.file(_new(302, 4, now, conv_id=dm, seq=1), 3))
    await t("own message", r.file(_new(303, 2, now, conv_id=dm, seq=2), 3))
    await t("no such seq", r.file(_new(304, 2, now, conv_id=dm, seq=99), 3))
    await t("system entry", r.file(_new(305, 2, now, conv_id=gid, seq=1), 3))
    await t("past member, inside", r.file(_new(306, 3, now, conv_id=gid, seq=spam), 3))
    await t("past member, after", r.file(_new(307, 3, now, conv_id=gid, seq=later), 3))
    await t("member, same message", r.file(_new(308, 2, now + 2, conv_id=gid, seq=spam), 3))
    await t("a user", r.file(_new(309, 4, now, user_id=1), 3))
    await t("oneself", r.file(_new(310, 4, now, user_id=4), 3))
    await t("no such user", r.file(_new(311, 4, now, user_id=99), 3))
    await t("bob's third", r.file(_new(312, 2, now + 3, user_id=1), 3))
    await t("bob over the limit", r.file(_new(313, 2, now + 4, user_id=3), 3))
    await t("an hour later", r.file(_new(314, 2, now + 3_600_001, user_id=3), 3))

    await t("queue, as a user", r.reports(2, "open", None, 50))
    await t("open", r.reports(5, "open", None, 50))
    await t("page", r.reports(5, None, 309, 2))
    await t("detail", r.report(5, 300))
    await t("detail, none", r.report(5, 12345))
    group_report = (await r.report(5, 306))[0]
    user_report = (await r.report(5, 309))[0]

    def resolve(actor: int, rec: ReportRec, action: Resolution, msg_id: int) -> Awaitable[Resolved]:
        audit, disable = _audit(now, "report_resolve", f"report:{rec.id}"), _audit(now, "disable", "user:1")
        return r.resolve(actor, rec, action, "a note", msg_id, audit, disable)

    async def audit() -> list[tuple[int | None, str, str]]:
        return [(e.actor_id, e.action, e.target) for e in await s.admin.audit(5, None, 10)]

    await t("recall, as a user", resolve(2, group_report, "recall", 400))
    await t("recall", resolve(5, group_report, "recall", 402))
    await t("again", resolve(5, group_report, "dismiss", 404))
    await t("recall a user", resolve(5, user_report, "recall", 406))
    await t("disable", resolve(5, user_report, "disable", 408))
    await t("resolved", r.reports(5, "resolved", None, 50))
    await t("history after", s.history(2, gid, None, None, 10))
    await t("audit", audit())


async def test_report_transcripts_equal(stores: tuple[Store, Store]) -> None:  # noqa: F811
    lite, pg = (Transcript(s) for s in stores)
    await report_scenario(lite)
    await report_scenario(pg)
    assert len(pg.lines) == len(lite.lines)
    for (label, want), (_, got) in zip(lite.lines, pg.lines, strict=True):
        assert got == want, label
    lines = dict(lite.lines)
    assert lines["repeat"][1] is True and lines["repeat"][0]["id"] == 300
    assert [lines[k][:2] for k in ("not a member", "past member, after", "bob over the limit", "again")] == [
        ["error", "not_member"],
        ["error", "not_found"],
        ["error", "rate_limited"],
        ["error", "already_resolved"],
    ]
    assert lines["recall"]["closed"] == 2 and lines["disable"]["revoked"] == []
    assert lines["queue, as a user"][:2] == ["error", "forbidden"]

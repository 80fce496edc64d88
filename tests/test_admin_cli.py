"""``yim admin …`` and ``yim passwd`` on both stores: the first admin made on the store
(refused on a SQLite data folder a running node holds), then the admin commands and the
password change run against the node over its HTTP API."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import aiohttp

from tests.conftest import MakeServer
from tests.rawclient import Device, make_users

ROOT = Path(__file__).resolve().parent.parent


async def yim(*args: str) -> subprocess.CompletedProcess[str]:
    """The command in a subprocess, waited for off the event loop (the node runs on it)."""
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "yim", *args],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


async def test_admin_commands(make_server: MakeServer, tmp_path: Path, backend: str, store_url: str) -> None:
    data = tmp_path / "node"
    pw = tmp_path / "pw"
    pw.write_text("password123\n")
    new_pw = tmp_path / "new-pw"
    new_pw.write_text("another-password\n")
    on_store = ["--data", str(data)] + ([] if backend == "sqlite" else ["--store", store_url])
    if backend == "sqlite":  # the first admin, created on the stopped node's store
        done = await yim("admin", "create-admin", "root", *on_store, "--password-file", str(pw))
        assert done.returncode == 0, done.stderr
        assert "root" in done.stdout and "account created" in done.stdout
    server = await make_server(data_dir=data)
    async with aiohttp.ClientSession(server.url) as http:
        if backend == "sqlite":
            done = await yim("admin", "create-admin", "root", *on_store, "--password-file", str(pw))
            assert done.returncode == 1 and "in use by another yim node" in done.stderr, done.stderr
            await make_users(http, ["alice"])
        else:  # a shared store: the account must exist, and a running node is no obstacle
            done = await yim("admin", "create-admin", "root", *on_store)
            assert done.returncode == 1 and "register it first" in done.stderr, done.stderr
            await make_users(http, ["root", "alice"])
            done = await yim("admin", "create-admin", "root", *on_store)
            assert done.returncode == 0, done.stderr
            assert "is a server admin" in done.stdout

    async def as_user(user: str, *args: str) -> subprocess.CompletedProcess[str]:
        return await yim(
            *args, "--server", server.url, "--user", user, "--password-file", str(pw), "--state", str(tmp_path / "s")
        )

    done = await as_user("root", "admin", "users", "ali", "--json")
    assert done.returncode == 0, done.stderr
    assert [u["username"] for u in json.loads(done.stdout)["users"]] == ["alice"]
    done = await as_user("root", "admin", "disable", "alice", "--reason", "spam")
    assert done.returncode == 0 and "alice" in done.stdout and "disabled since" in done.stdout, done
    done = await as_user("root", "admin", "user", "alice")
    assert done.returncode == 0 and "disabled since" in done.stdout and "messages sent: 0" in done.stdout, done
    done = await as_user("root", "admin", "enable", "alice")
    assert done.returncode == 0 and "disabled" not in done.stdout, done
    done = await as_user("root", "admin", "audit", "--json")
    assert done.returncode == 0, done.stderr
    entries = json.loads(done.stdout)["entries"]
    assert [e["action"] for e in entries] == ["enable", "disable", "set_role"]
    assert entries[1]["detail"] == {"reason": "spam"} and entries[1]["source"].startswith("http ")
    assert entries[2]["source"] == "cli" and entries[2]["actor_id"] is None

    # groups: find one by name, hand it to a member, dissolve it
    async with aiohttp.ClientSession(server.url) as http:
        (bob_l,) = await make_users(http, ["bob"])
        bob = Device(http, bob_l)
        await bob.connect()
        alice_id = json.loads((await as_user("root", "admin", "users", "alice", "--json")).stdout)["users"][0][
            "user_id"
        ]
        gid = (await bob.request("group_create", name="Night Owls", members=[alice_id]))["group"]["conv_id"]
        await bob.close()
    done = await as_user("root", "admin", "groups", "owls")
    assert done.returncode == 0 and gid in done.stdout and "2 members" in done.stdout, done
    done = await as_user("root", "admin", "group-transfer", gid, "alice", "--json")
    assert done.returncode == 0 and json.loads(done.stdout)["group"]["owner_id"] == alice_id, done
    done = await as_user("root", "admin", "group-dissolve", gid, "--reason", "spam")
    assert done.returncode == 0 and "dissolved" in done.stdout, done

    # a shop for alice, with bob as its agent for pre-sale questions
    done = await as_user("root", "admin", "shops", "create", "alice", "Alice's Shop", "--json")
    assert done.returncode == 0, done.stderr
    shop_id = json.loads(done.stdout)["shop_id"]
    done = await as_user("root", "admin", "shops", "agent", shop_id, "bob", "--skills", "pre_sale", "--capacity", "2")
    assert done.returncode == 0 and "skills pre_sale, capacity 2" in done.stdout, done

    # a user is refused every admin command, and changes their own password
    done = await as_user("alice", "admin", "users")
    assert done.returncode == 1 and "forbidden" in done.stderr, done
    done = await as_user("alice", "passwd", "--new-password-file", str(new_pw))
    assert done.returncode == 0 and "password changed" in done.stdout, done
    done = await as_user("alice", "admin", "users")
    assert done.returncode == 1 and "unauthorized" in done.stderr, done  # the old password no longer works

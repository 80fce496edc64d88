"""Today's code on data folders made by earlier releases (tests/fixtures/release-*): every
message, inbox entry, read mark, relation and media reference is still there, and the node
works on (send, sync). A schema change adds a migration; this test proves it carries the data.

- release-7ceef9e: the last release before versioned migrations, with everything a client can
  make (groups, a recall, mentions, friends, a block, a file message).
- release-1a05bec: the first release (direct messages and read marks only), whose schema
  lacks the columns groups added; it used to fail with "no such column: uncounted".

Both were made by tests/fixtures/make_release_folder.py, which also wrote what each user's
client saw then (manifest.json).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from yim.storage.migrations import Migration, SchemaError, migrate_sqlite, migrations

from .conftest import ROOT, ServerProcess
from .fixtures.make_release_folder import Device, login, observe

FIXTURES = Path(__file__).parent / "fixtures"


def _contains(now: Any, then: Any, where: str = "") -> None:
    """``now`` holds everything ``then`` held: same values, same list lengths and order; new
    fields (added by later releases) are allowed."""
    if isinstance(then, dict):
        assert isinstance(now, dict), where
        for key, value in then.items():
            assert key in now, f"{where}.{key} is gone"
            _contains(now[key], value, f"{where}.{key}")
    elif isinstance(then, list):
        assert isinstance(now, list) and len(now) == len(then), f"{where}: {now!r} != {then!r}"
        for i, (a, b) in enumerate(zip(now, then, strict=True)):
            _contains(a, b, f"{where}[{i}]")
    else:
        assert now == then, f"{where}: {now!r} != {then!r}"


#: Fields of what a client sees that migrations after release-7ceef9e added, with the value a
#: folder of that release shows for them once upgraded (nothing was pinned or reacted to then).
#: (``avatar``: users had none then; groups' avatar was "" already, so it reads the same)
ADDED_AFTER_7CEEF9E: dict[str, Any] = {"pinned": [], "reaction_ver": 0, "pin_policy": "admins", "avatar": ""}


def _without_added(now: Any, where: str = "") -> Any:
    """``now`` without the fields added since, each checked to hold its upgraded value."""
    if isinstance(now, dict):
        for key, value in ADDED_AFTER_7CEEF9E.items():
            if key in now:
                assert now[key] == value, f"{where}.{key}: {now[key]!r}"
        return {k: _without_added(v, f"{where}.{k}") for k, v in now.items() if k not in ADDED_AFTER_7CEEF9E}
    if isinstance(now, list):
        return [_without_added(v, f"{where}[{i}]") for i, v in enumerate(now)]
    return now


@pytest.mark.parametrize("release", ["release-7ceef9e", "release-1a05bec"])
async def test_a_data_folder_of_an_earlier_release_keeps_everything(tmp_path: Path, release: str) -> None:
    manifest = json.loads((FIXTURES / release / "manifest.json").read_text())
    data = tmp_path / "data"
    shutil.copytree(FIXTURES / release / "folder", data)
    node = ServerProcess(data)
    node.start()
    try:
        async with aiohttp.ClientSession(node.url) as http:
            devs = {name: Device(http, await login(http, name)) for name in manifest["users"]}
            for name, dev in devs.items():
                assert dev.user_id == manifest["users"][name]
                await dev.connect()
            for name, then in manifest["seen"].items():
                now = await observe(devs[name], manifest["media"])
                _contains(now, then, name)
                if release == "release-7ceef9e":  # not one field differs but those added since
                    assert _without_added(now, name) == then, name

            # The node works on: a message in the old conversation gets the next seqs and ids.
            alice, bob = devs["alice"], devs["bob"]
            histories = manifest["seen"]["alice"]["history"]
            conv_id, old = next((c, msgs) for c, msgs in histories.items() if msgs[0]["client_msg_id"] == "a1")
            before = manifest["seen"]["bob"]["events"][-1]
            ack = await alice.request(
                "send", kind="text", body={"text": "after the upgrade"}, client_msg_id="up1", conv_id=conv_id
            )
            assert ack["seq"] == old[-1]["seq"] + 1 and int(ack["msg_id"]) > int(old[-1]["msg_id"])
            page = await bob.request("sync", since=before["seq"], limit=200)
            assert [e["data"].get("msg_id") for e in page["events"]] == [ack["msg_id"]]
            assert page["events"][0]["seq"] == before["seq"] + 1
            for dev in devs.values():
                await dev.close()
    finally:
        node.stop()
    assert node.proc is not None and node.proc.returncode == 0, node.log_path.read_text()
    with sqlite3.connect(data / "yim.db") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == migrations("sqlite")[-1].version


def test_a_data_folder_of_a_newer_release_is_refused_in_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(FIXTURES / "release-7ceef9e" / "folder", data)
    newer = migrations("sqlite")[-1].version + 1
    db = sqlite3.connect(data / "yim.db")
    db.execute(f"PRAGMA user_version = {newer}")
    db.close()  # the last connection: its WAL is copied into the file, which is then compared
    before = (data / "yim.db").read_bytes()
    argv = [sys.executable, "-m", "yim", "serve", "--port", "0", "--data", str(data)]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2, done.stderr
    said = done.stderr.strip().splitlines()
    assert said[-1].startswith(
        f"yim serve: cannot start: the SQLite store {data / 'yim.db'} has schema version {newer}"
    )
    assert "newer release" in said[-1] and "Traceback" not in done.stderr, done.stderr
    assert (data / "yim.db").read_bytes() == before  # untouched


#: sha256 of SQLite's migration 1 (schema_sqlite.sql and the concept files), as released
BASELINE_SHA256 = "fad96fae82f30ec09c70e97510677a6f5f7bb58f39cb6b1bb1c34c5fc88db491"


def test_the_released_sqlite_baseline_does_not_change() -> None:
    """Folders at version 1 do not run migration 1 again, so an edit of it would reach new
    folders only (or, through the shape check, add bare columns to old ones, with none of the
    data a migration would carry over). A schema change is a new file,
    schema_sqlite_NNNN_<name>.sql, that every folder runs the same way."""
    baseline = migrations("sqlite")[0]
    assert baseline.version == 1 and baseline.name == "schema_sqlite.sql"
    assert hashlib.sha256(baseline.sql.encode()).hexdigest() == BASELINE_SHA256, (
        "schema_sqlite*.sql are migration 1, released: add schema_sqlite_NNNN_<name>.sql instead"
    )


def test_later_migrations_run_in_order_and_a_failing_one_leaves_the_folder_at_its_version(tmp_path: Path) -> None:
    """The runner past the baseline (no real migration 2 exists yet): each migration runs in
    one transaction with the user_version it reaches, so the one that fails is undone alone."""
    shutil.copytree(FIXTURES / "release-7ceef9e" / "folder", tmp_path / "folder")
    db = sqlite3.connect(tmp_path / "folder" / "yim.db", isolation_level=None)
    baseline = migrations("sqlite")[0]
    second = Migration(
        2,
        "schema_sqlite_0002_word_count.sql",
        "ALTER TABLE messages ADD COLUMN words INTEGER NOT NULL DEFAULT 0;\n"
        "UPDATE messages SET words = 1 WHERE kind = 'text';",
    )
    broken = Migration(3, "schema_sqlite_0003_broken.sql", "CREATE TABLE later (x);\nCREATE TABLE messages (x);")
    with pytest.raises(sqlite3.OperationalError, match="already exists"):
        migrate_sqlite(db, "test", [baseline, second, broken])
    assert not db.in_transaction
    assert db.execute("PRAGMA user_version").fetchone()[0] == 2  # the second stays, the third is undone
    texts = db.execute("SELECT count(*) FROM messages WHERE kind = 'text'").fetchone()[0]
    assert texts > 0 and db.execute("SELECT count(*) FROM messages WHERE words = 1").fetchone()[0] == texts
    assert db.execute("SELECT count(*) FROM sqlite_master WHERE name = 'later'").fetchone()[0] == 0
    assert migrate_sqlite(db, "test", [baseline, second]) == []  # at version 2: nothing left
    with pytest.raises(SchemaError, match="test has schema version 2 but this yim knows versions up to 1"):
        migrate_sqlite(db, "test", [baseline])
    db.close()


async def test_a_postgres_database_of_a_newer_release_is_refused(postgres_server: Any, postgres_dsn: str) -> None:
    """The same rule over PostgreSQL's ledger (yim_migrations, by file name): a migration
    this code does not know means a newer release wrote the database."""
    import asyncpg

    from yim.storage.postgres.store import migrate_conn

    conn = await asyncpg.connect(postgres_dsn)
    try:
        assert await migrate_conn(conn) == []  # migrated by the fixture: nothing left to do
        future = f"schema_postgres_{migrations('postgres')[-1].version + 1:04d}_future.sql"
        await conn.execute("INSERT INTO yim_migrations (name, checksum) VALUES ($1, 'x')", future)
    finally:
        await conn.close()
    argv = [sys.executable, "-m", "yim", "admin", "migrate", "--store", postgres_dsn]
    done = await asyncio.to_thread(subprocess.run, argv, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    said = done.stderr.strip().splitlines()
    assert len(said) == 1 and "Traceback" not in done.stderr, done.stderr
    assert said[0].startswith("yim admin migrate: the PostgreSQL database ") and future in said[0], said
    assert "newer release" in said[0], said

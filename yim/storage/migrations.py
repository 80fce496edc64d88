"""Schema migrations of both stores: one list of numbered SQL files per dialect, one rule for
which of them a database still needs, two ways of recording what it has.

Files, in ``yim/storage/<dialect>``: ``schema_<dialect>.sql`` is migration 1, the baseline;
``schema_<dialect>_NNNN_<name>.sql`` is migration NNNN. SQLite's baseline also takes the
concept files ``schema_sqlite_<concept>.sql`` (no number), as the releases before versioned
migrations made them. A released migration never changes: a schema change is a new file with
the next number, and tests/test_upgrade.py starts the code on a data folder of an earlier
release to prove the change carries its data over.

What a database has: PostgreSQL records each applied file by name and checksum in
``yim_migrations`` (yim/storage/postgres/store.py); SQLite keeps the number of the last one in
``PRAGMA user_version`` (:func:`migrate_sqlite`). Either way a database that has a migration
this code does not know was written by a newer release, and is refused: running old code on
it could lose what the newer schema holds.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from importlib import resources

_NUMBERED = re.compile(r"_(\d{4})_[a-z0-9_]+\.sql$")


class SchemaError(RuntimeError):
    """A database this code must not use (written by a newer release, or a migration that
    changed after it was applied); the message names the database and says what to do."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str  # the file name (the baseline's: its core file), as PostgreSQL records it
    sql: str


def migrations(dialect: str) -> list[Migration]:
    """Every migration of ``dialect`` ("sqlite" or "postgres"), by number, checked to run
    1, 2, 3 ... without a gap."""
    prefix = f"schema_{dialect}"
    files = {f.name: f for f in resources.files(f"yim.storage.{dialect}").iterdir() if f.name.startswith(prefix)}
    files = {name: f for name, f in files.items() if name.endswith(".sql")}
    core = f"{prefix}.sql"
    if core not in files:
        raise SchemaError(f"no {core} in yim/storage/{dialect}: the package is incomplete")
    baseline = [files[core].read_text()]
    found = [Migration(1, core, "")]
    for name in sorted(files):
        if name == core:
            continue
        numbered = _NUMBERED.search(name)
        if numbered is not None and name.startswith(prefix + "_"):
            found.append(Migration(int(numbered.group(1)), name, files[name].read_text()))
        elif dialect == "sqlite":  # a concept file of the baseline (see the module docstring)
            baseline.append(files[name].read_text())
        else:
            raise SchemaError(f"{name}: a migration file is named {prefix}_NNNN_<name>.sql")
    found[0] = Migration(1, core, "\n".join(baseline))
    found.sort(key=lambda m: m.version)
    for i, m in enumerate(found, start=1):
        if m.version != i:
            raise SchemaError(f"{m.name}: migration {m.version} where {i} was expected (numbers run without a gap)")
    return found


def pending(known: list[Migration], current: int, where: str) -> list[Migration]:
    """What a database at version ``current`` still needs, or :class:`SchemaError` if it is
    newer than this code."""
    latest = known[-1].version if known else 0
    if current > latest:
        raise too_new(where, f"has schema version {current} but this yim knows versions up to {latest}")
    return [m for m in known if m.version > current]


def too_new(where: str, what: str) -> SchemaError:
    """The refusal of a database written by a newer release, in the words of both stores."""
    return SchemaError(
        f"{where} {what}: it was written by a newer release; run that release (or a newer one), or restore a backup"
    )


# --- SQLite -------------------------------------------------------------------------------------


def migrate_sqlite(conn: sqlite3.Connection, where: str, known: list[Migration] | None = None) -> list[str]:
    """Bring the SQLite database of ``conn`` (autocommit mode) to the current schema (or to
    the last of ``known``); returns the names of the migrations applied. Each runs in its own
    transaction together with the ``user_version`` it reaches, so a failure leaves the
    database at the previous version."""
    known = known if known is not None else migrations("sqlite")
    current = conn.execute("PRAGMA user_version").fetchone()[0]
    todo = pending(known, current, where)
    applied: list[str] = []
    if current <= 1:
        # Every release before versioned migrations wrote user_version 1 over whatever shape
        # its `CREATE ... IF NOT EXISTS` left, so version 1 (or 0 with tables) proves nothing:
        # the shape is compared with the baseline's and what is missing is added.
        script = _adopt_script(conn, known[0].sql)
        if current == 0 or script:
            _apply(conn, script + known[0].sql, 1)
            applied.append(known[0].name)
        todo = [m for m in todo if m.version > 1]
    for m in todo:
        _apply(conn, m.sql, m.version)
        applied.append(m.name)
    return applied


def _apply(conn: sqlite3.Connection, sql: str, version: int) -> None:
    # executescript commits any open transaction before it runs, so the transaction is part
    # of the script; a failing statement stops the script inside it, and it is rolled back.
    try:
        conn.executescript(f"BEGIN IMMEDIATE;\n{sql}\n;PRAGMA user_version = {version};\nCOMMIT;")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _adopt_script(conn: sqlite3.Connection, baseline: str) -> str:
    """DDL that brings a database made by an earlier release to the baseline's shape, before
    the baseline itself runs (which creates the tables and indexes that are missing): columns
    added since (each with its default), and indexes and triggers whose definition changed
    dropped so that the baseline makes them anew. Empty if the shape already matches."""
    want = sqlite3.connect(":memory:")
    try:
        want.executescript(baseline)
        have_tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        statements: list[str] = []
        for (table,) in want.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND sql LIKE 'CREATE TABLE%'"
        ):
            if table not in have_tables:
                continue  # the baseline creates it
            have_cols = {r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')}
            for _cid, col, decl, notnull, default, _pk in want.execute(f'PRAGMA table_info("{table}")'):
                if col in have_cols:
                    continue
                clause = f'ALTER TABLE "{table}" ADD COLUMN "{col}" {decl}'
                clause += " NOT NULL" if notnull else ""
                clause += f" DEFAULT {default}" if default is not None else ""
                statements.append(clause + ";")
        have = {
            (kind, name): _squeeze(sql)
            for kind, name, sql in conn.execute(
                "SELECT type, name, sql FROM sqlite_master WHERE type IN ('index', 'trigger') AND sql IS NOT NULL"
            )
        }
        for kind, name, sql in want.execute(
            "SELECT type, name, sql FROM sqlite_master WHERE type IN ('index', 'trigger') AND sql IS NOT NULL"
        ):
            if (kind, name) in have and have[(kind, name)] != _squeeze(sql):
                statements.append(f'DROP {kind.upper()} "{name}";')
        return "\n".join(statements) + "\n" if statements else ""
    finally:
        want.close()


def _squeeze(sql: str) -> str:
    return " ".join(sql.split())

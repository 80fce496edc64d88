"""The ``yim`` command: ``yim serve`` runs a node; more subcommands join as they land.

Each subcommand imports what it runs inside its own function: ``yim --help``, the
terminal client and ``yim admin`` do not load the server, and nothing loads the bench
unless ``yim bench`` runs (tests/test_bench_package.py). No import here avoids a cycle."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any


def _serve(args: argparse.Namespace) -> int:
    import uvloop

    from yim.config import SERVE_DEFAULTS, SettingsError, load_settings
    from yim.node import serve_forever
    from yim.storage.migrations import SchemaError

    try:
        settings = load_settings(
            args.config,
            defaults=SERVE_DEFAULTS,
            host=args.host,
            port=args.port,
            data_dir=args.data,
            node_id=None if args.node_id == "auto" else args.node_id,
            node_id_lease=True if args.node_id == "auto" else None,
            store=args.store,
            redis_url=args.redis,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            workers=args.workers,
        )
    except SettingsError as exc:  # a sentence for the operator, not a traceback
        print(f"yim serve: {exc}", file=sys.stderr)
        return 2
    ssl_context = None
    if settings.tls_cert or settings.tls_key:
        from yim.gateway.tls import server_ssl_context

        try:
            ssl_context = server_ssl_context(settings.tls_cert, settings.tls_key)
        except (ValueError, OSError) as exc:  # ssl.SSLError is an OSError
            msg = f"yim serve: cannot use the TLS certificate {settings.tls_cert} and key {settings.tls_key}: {exc}"
            print(msg, file=sys.stderr)
            return 2
    try:
        if settings.worker_count > 1:
            from yim.supervisor import serve_workers

            uvloop.run(serve_workers(settings))  # each worker makes its own TLS context
        else:
            uvloop.run(serve_forever(settings, ssl_context))
    except (ValueError, OSError, SchemaError) as exc:
        # A node that cannot start (settings that do not fit together, a port in use, a data
        # folder it cannot use or that another node holds, a store written by a newer
        # release) says so in one line; the traceback is for --log-level DEBUG.
        logging.getLogger("yim").debug("start-up failed", exc_info=True)
        print(f"yim serve: cannot start: {exc}", file=sys.stderr)
        return 2
    return 0


def _node_id(value: str) -> int | str:
    return value if value == "auto" else int(value)


def _admin_migrate(args: argparse.Namespace) -> int:
    """Bring a PostgreSQL database to the current schema (nodes also do this on start)."""
    import asyncio

    from yim.config import load_settings

    store = args.store or load_settings(args.config).store
    if not store.startswith(("postgres://", "postgresql://")):
        print(f"yim admin migrate: --store must be a postgres:// URL (got {store!r}); SQLite migrates itself")
        return 2
    from yim.storage.migrations import SchemaError
    from yim.storage.postgres.store import migrate

    try:
        applied = asyncio.run(migrate(store))
    except SchemaError as exc:  # written by a newer release: one line, nothing applied
        print(f"yim admin migrate: {exc}", file=sys.stderr)
        return 2
    print("applied: " + ", ".join(applied) if applied else "already up to date")
    return 0


def _admin_create_admin(args: argparse.Namespace) -> int:
    """Make ``args.username`` a server admin, on the store itself (no node needed: this is
    how the first admin comes to be). A missing account is created on a SQLite store."""
    import asyncio

    from yim.config import SettingsError, load_settings
    from yim.storage.migrations import SchemaError

    try:
        settings = load_settings(args.config, data_dir=args.data, store=args.store)
    except SettingsError as exc:
        print(f"yim admin create-admin: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_create_admin(settings, args))
    except (ValueError, OSError, SchemaError) as exc:
        print(f"yim admin create-admin: {exc}", file=sys.stderr)
        return 2


async def _create_admin(settings: Any, args: argparse.Namespace) -> int:
    import os
    import time
    from pathlib import Path

    from yim.ids.snowflake import Snowflake
    from yim.node import DataFolderError, lock_data_folder, prepare_data_folder
    from yim.protocol.errors import YimError
    from yim.services.accounts import make_hasher
    from yim.storage import open_store
    from yim.storage.admin import AuditEntry
    from yim.storage.records import UserRec

    shared = settings.store.startswith(("postgres://", "postgresql://"))
    # A SQLite store belongs to the one node that holds its data folder: while that node
    # runs, this refuses (use `yim admin role` against the node instead). PostgreSQL is
    # shared by design: the change is there for every node at once.
    lock: int | None = None
    if not shared:
        try:
            prepare_data_folder(Path(settings.data_dir))
            lock = lock_data_folder(Path(settings.data_dir))
        except DataFolderError as exc:
            print(
                f"yim admin create-admin: {exc}. Stop that node first, or let an admin of the running node"
                " do it: yim admin role USER admin --user ADMIN",
                file=sys.stderr,
            )
            return 1
    try:
        store = open_store(settings.store, settings.data_dir)
        await store.open()
        try:
            user = await store.user_by_name(args.username)
            created = False
            if user is None:
                if shared:
                    print(
                        f"yim admin create-admin: no user {args.username!r}: register it first (yim register),"
                        " then run this again",
                        file=sys.stderr,
                    )
                    return 1
                from yim.client.terminal.cli import read_password

                password = read_password(argparse.Namespace(password_file=args.password_file, user=args.username))
                ids = Snowflake(settings.node_id, floor=await store.max_msg_id())
                pw_hash = make_hasher(settings.password_hashing).hash(password)
                now = int(time.time() * 1000)
                user = await store.create_user(UserRec(ids.next_id(), args.username, args.username, pw_hash, now))
                created = True
            entry = AuditEntry(
                at=int(time.time() * 1000),
                source="cli",
                action="set_role",
                target=f"user:{user.id}",
                detail=b'{"admin":true,"created":true}' if created else b'{"admin":true}',
            )
            account = await store.admin.set_admin(None, user.id, True, entry)
        except YimError as exc:
            print(f"yim admin create-admin: {exc.code}: {exc.message}", file=sys.stderr)
            return 1
        finally:
            await store.close()
    finally:
        if lock is not None:
            os.close(lock)  # the lock goes with it
    print(f"{account.username} ({account.id}) is a server admin" + (" (account created)" if created else ""))
    return 0


def _admin_export(args: argparse.Namespace) -> int:
    """``yim admin export USER --out FILE``: over a running node's HTTP API as a server admin
    (``--user``), or with ``--direct`` on the store itself, as the operator on the host."""
    if not args.direct:
        from yim.client.terminal.admin import export_over_http
        from yim.client.terminal.cli import _one_shot

        return _one_shot(export_over_http)(args)
    import asyncio

    from yim.config import SettingsError, load_settings
    from yim.storage.migrations import SchemaError

    try:
        settings = load_settings(args.config, data_dir=args.data, store=args.store)
    except SettingsError as exc:
        print(f"yim admin export: {exc}", file=sys.stderr)
        return 2
    try:
        import os
        from pathlib import Path

        folder = Path(os.path.abspath(args.out)).parent
        return asyncio.run(_export_on_store(settings, args, folder))
    except (ValueError, OSError, SchemaError) as exc:
        print(f"yim admin export: {exc}", file=sys.stderr)
        return 2


async def _export_on_store(settings: Any, args: argparse.Namespace, folder: Any) -> int:
    """``folder``: the output's folder, where the archive is written before its rename."""
    import os
    from pathlib import Path

    from yim.node import DataFolderError, lock_data_folder, prepare_data_folder
    from yim.protocol.errors import YimError
    from yim.services.export import begin_admin_export, write_archive
    from yim.storage import open_store
    from yim.storage.blobs import open_blob_store

    shared = settings.store.startswith(("postgres://", "postgresql://"))
    lock: int | None = None
    if not shared:  # a SQLite store is its running node's alone (as for create-admin)
        try:
            prepare_data_folder(Path(settings.data_dir))
            lock = lock_data_folder(Path(settings.data_dir))
        except DataFolderError as exc:
            print(
                f"yim admin export: {exc}. Stop that node first, or export through it:"
                " yim admin export USER --out FILE --user ADMIN",
                file=sys.stderr,
            )
            return 1
    out = Path(args.out)
    try:
        store = open_store(settings.store, settings.data_dir)
        await store.open()
        blobs = open_blob_store(settings)
        await blobs.start()
        try:
            if args.target.isdigit():
                user_id = int(args.target)
            else:
                user = await store.user_by_name(args.target)
                if user is None:
                    print(f"yim admin export: not_found: no user {args.target!r}", file=sys.stderr)
                    return 1
                user_id = user.id
            await begin_admin_export(store, None, user_id, args.reason, "cli")
            path, _name, counts = await write_archive(store, blobs, user_id, folder, "operator")
            os.replace(path, out)
        except YimError as exc:
            print(f"yim admin export: {exc.code}: {exc.message}", file=sys.stderr)
            return 1
        finally:
            await blobs.close()
            await store.close()
    finally:
        if lock is not None:
            os.close(lock)
    print(f"{out}: {counts.conversations} conversations, {counts.messages} messages, {counts.media} media")
    return 0


#: ``yim bench`` lives beside the product in its own package (yimbench) with its own
#: dependency (psutil, the ``bench`` extra). Only a command line that asks for it imports it,
#: so a node (``yim serve``) never loads the benchmark.
BENCH_HELP = "drive a node over the real protocol and measure it"
#: the modules whose absence means the ``bench`` extra (or the package itself) is not installed
_BENCH_MODULES = frozenset({"yimbench", "psutil"})


def build_parser(*, bench: bool = False) -> argparse.ArgumentParser:
    """The ``yim`` command's parser. With ``bench`` it carries the real ``yim bench`` (and
    imports yimbench); without, a stand-in that accepts any arguments and that :func:`main`
    swaps for the real one when it is the command chosen."""
    parser = argparse.ArgumentParser(prog="yim", description="yim instant-messaging server")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run a node (HTTP API, WebSocket gateway, web client)")
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 8080)")
    serve.add_argument("--data", help="data folder for the embedded store and secrets (default ./data)")
    serve.add_argument("--store", help="'sqlite' (default, under --data), sqlite:///PATH or postgres://...")
    serve.add_argument(
        "--node-id", type=_node_id, help="Snowflake node id, 0..1023 (default 0), or 'auto' to lease one from --redis"
    )
    serve.add_argument("--redis", help="cluster mode: redis://HOST:PORT/DB or redis+cluster://HOST:PORT,...")
    serve.add_argument("--config", help="TOML settings file (also YIM_CONFIG)")
    serve.add_argument("--tls-cert", help="PEM certificate chain: serve https/wss (with --tls-key)")
    serve.add_argument("--tls-key", help="PEM private key of --tls-cert")
    serve.add_argument(
        "--workers",
        help="processes serving the node: 'auto' (the default: one worker per core on the embedded SQLite"
        " store, one process on a single core, in a cluster or off Linux), 1 (one process) or N (2..64: a store"
        " process and N workers on one port; embedded SQLite store only, Linux 5.3 or later)",
    )
    serve.set_defaults(func=_serve)

    from yim.client.terminal import add_terminal_parsers

    add_terminal_parsers(sub)  # chat, send, history, register

    admin = sub.add_parser("admin", help="operator tasks").add_subparsers(dest="admin_command", required=True)
    migrate = admin.add_parser("migrate", help="apply PostgreSQL schema migrations (idempotent)")
    migrate.add_argument("--store", help="postgres://USER@HOST:PORT/DB (default: the configured store)")
    migrate.add_argument("--config", help="TOML settings file (also YIM_CONFIG)")
    migrate.set_defaults(func=_admin_migrate)
    create_admin = admin.add_parser(
        "create-admin", help="make a user a server admin, on the store itself (the first admin)"
    )
    create_admin.add_argument("username")
    create_admin.add_argument("--data", help="data folder of the node (default ./data)")
    create_admin.add_argument("--store", help="'sqlite' (default, under --data), sqlite:///PATH or postgres://...")
    create_admin.add_argument("--config", help="TOML settings file (also YIM_CONFIG)")
    create_admin.add_argument("--password-file", help="a new account's password (else $YIM_PASSWORD, else a prompt)")
    create_admin.set_defaults(func=_admin_create_admin)
    from yim.client.terminal.admin import add_admin_parsers, add_passwd_parser

    add_admin_parsers(admin)  # users, user, disable, enable, reset-password, revoke, role, groups, …, audit
    export = admin.add_parser(
        "export", help="a user's data as a zip archive: through a running node (--user), or --direct on the store"
    )
    export.add_argument("target", metavar="USER", help="a username or user id")
    export.add_argument("--out", required=True, metavar="FILE", help="where to write the archive (.zip)")
    export.add_argument("--reason", default="", help="written to the audit log")
    export.add_argument("--direct", action="store_true", help="open the store itself (as create-admin), no node")
    export.add_argument("--server", action="append", metavar="URL", help="node URL (repeat for more nodes)")
    export.add_argument("--user", metavar="NAME", help="a server admin of the node (not with --direct)")
    export.add_argument(
        "--password-file", metavar="FILE", help="the admin's password (else $YIM_PASSWORD, else a prompt)"
    )
    export.add_argument("--state", metavar="DIR", help="where the device id is kept (default ~/.config/yim)")
    export.add_argument("--data", help="with --direct: the node's data folder (default ./data)")
    export.add_argument("--store", help="with --direct: 'sqlite' (under --data), sqlite:///PATH or postgres://...")
    export.add_argument("--config", help="TOML settings file (also YIM_CONFIG)")
    export.set_defaults(func=_admin_export)
    from yim.client.terminal.reports import add_report_parsers

    add_report_parsers(admin)  # reports, report, resolve
    add_passwd_parser(sub)
    if bench:
        from yimbench.cli import add_bench_parser

        add_bench_parser(sub, help_line=BENCH_HELP)
    else:
        sub.add_parser("bench", help=BENCH_HELP, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if args.command == "bench":
        try:
            parser = build_parser(bench=True)
        except ModuleNotFoundError as exc:
            if (exc.name or "").split(".")[0] not in _BENCH_MODULES:
                raise
            hint = "pip install 'yim[bench]' (in a checkout: pip install -e '.[bench]')"
            print(f"yim bench: needs the 'bench' extra ({exc}): {hint}", file=sys.stderr)
            return 2
        args = parser.parse_args(argv)
    elif unknown:  # what parse_args says, for every other command
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    return args.func(args)

"""``yim admin users | user | disable | enable | erase | reset-password | revoke | role | groups |
group-dissolve | group-transfer | shops create | shops agent | audit`` and
``yim passwd``: the admin and self-service ops of a running node, over its HTTP API.

Each command logs in as ``--user`` (a server admin, for ``yim admin``), runs one op, and
logs out again. ``--json`` prints the API's answer as it is; without it, a line per row.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import getpass
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from yim.client.sdk import HttpApi, YimClientError
from yim.client.terminal.cli import _account_args, _check, _logged_in, _one_shot, _print_json, _servers, read_password
from yim.client.terminal.commands import UsageError
from yim.client.terminal.state import PLATFORM, LocalState
from yim.protocol.frames import Password

_ADMIN = "/api/v1/admin"


def _new_password(args: argparse.Namespace, prompt: str) -> str:
    """From ``--new-password-file`` (its first line), ``YIM_NEW_PASSWORD``, or a prompt (twice)."""

    def valid(p: str) -> str:
        _check(p, Password, "the password must be 8 to 256 characters long")
        return p

    if args.new_password_file:
        try:
            text = Path(args.new_password_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot read the password file: {exc}") from None
        return valid(text.splitlines()[0] if text else "")
    env = os.environ.get("YIM_NEW_PASSWORD")
    if env:
        return valid(env)
    if not sys.stdin.isatty():
        raise UsageError("no new password: give --new-password-file, set YIM_NEW_PASSWORD, or run in a terminal")
    password = valid(getpass.getpass(prompt))
    if getpass.getpass("again: ") != password:
        raise UsageError("the passwords do not match")
    return password


async def _as_user(args: argparse.Namespace, work: Callable[[HttpApi], Awaitable[Any]]) -> Any:
    async with HttpApi(_servers(args)) as api:
        await _logged_in(args, api)
        try:
            return await work(api)
        finally:
            with contextlib.suppress(YimClientError, aiohttp.ClientError, TimeoutError):
                await api.logout()


async def _user_id(api: HttpApi, who: str) -> str:
    """A user id, from the id itself (digits) or from the username."""
    if who.isdigit():
        return who
    return str((await api.user_by_name(who)).user_id)


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _user_line(u: dict[str, Any]) -> str:
    flags = (" admin" if u["admin"] else "") + (
        f" disabled since {_when(u['disabled_at'])}" if u["disabled_at"] else ""
    )
    return f"{u['user_id']}  {u['username']}  ({u['display_name']}){flags}"


def _show(args: argparse.Namespace, answer: Any, lines: Callable[[Any], list[str]]) -> int:
    if args.json:
        _print_json(answer)
    else:
        for line in lines(answer):
            sys.stdout.write(line + "\n")
    return 0


async def _search(args: argparse.Namespace, kind: str, line: Callable[[dict[str, Any]], str]) -> int:
    """One page of ``kind`` ("users", "groups") matching ``args.query``, after ``args.after``."""
    params = {"q": args.query or "", "limit": str(args.limit)}
    if args.after:
        params["after"] = args.after
    page = await _as_user(args, lambda api: api.request("GET", f"{_ADMIN}/{kind}", params=params))
    more = [f"(more: --after {page['next_after']})"] if page["next_after"] else []
    return _show(args, page, lambda p: [line(x) for x in p[kind]] + more)


async def _users(args: argparse.Namespace) -> int:
    return await _search(args, "users", _user_line)


async def _user(args: argparse.Namespace) -> int:
    async def work(api: HttpApi) -> Any:
        return await api.request("GET", f"{_ADMIN}/users/{await _user_id(api, args.target)}")

    def lines(d: dict[str, Any]) -> list[str]:
        c = d["counts"]
        out = [_user_line(d["user"]), f"messages sent: {d['message_count']}"]
        out.append(f"friends {c['friends']}, followers {c['followers']}, following {c['following']}")
        out += [f"device {x['device_id']} ({x['platform']}) last seen {_when(x['last_seen_at'])}" for x in d["devices"]]
        out += [f"group {g['conv_id']} {g['name']!r} as {g['role']}" for g in d["groups"]]
        return out

    return _show(args, await _as_user(args, work), lines)


def _action(
    method: str, suffix: str, body: Callable[[argparse.Namespace], dict[str, Any]]
) -> Callable[[argparse.Namespace], Awaitable[int]]:
    """A command that runs one admin action on the account ``args.target``."""

    async def command(args: argparse.Namespace) -> int:
        async def work(api: HttpApi) -> Any:
            path = f"{_ADMIN}/users/{await _user_id(api, args.target)}{suffix}"
            return await api.request(method, path, body=body(args))

        answer = await _as_user(args, work)
        return _show(args, answer, lambda a: [_user_line(a)] if "user_id" in a else [f"sessions ended: {a['revoked']}"])

    return command


async def _erase(args: argparse.Namespace) -> int:
    async def work(api: HttpApi) -> Any:
        path = f"{_ADMIN}/users/{await _user_id(api, args.target)}/erase"
        return await api.request("POST", path, body={"reason": args.reason})

    def lines(a: dict[str, Any]) -> list[str]:
        return [
            f"erased {a['user_id']}: {a['entries']} entries cleared, {a['groups']} groups left,"
            f" {a['blobs']} files deleted"
        ]

    return _show(args, await _as_user(args, work), lines)


async def _reset_password(args: argparse.Namespace) -> int:
    password = _new_password(args, f"new password for {args.target}: ")

    async def work(api: HttpApi) -> Any:
        path = f"{_ADMIN}/users/{await _user_id(api, args.target)}/password"
        return await api.request("POST", path, body={"password": password, "reason": args.reason})

    answer = await _as_user(args, work)
    return _show(args, answer, lambda a: [f"password reset; sessions ended: {a['revoked']}"])


async def _audit(args: argparse.Namespace) -> int:
    params = {"limit": str(args.limit)}
    if args.before:
        params["before"] = args.before
    page = await _as_user(args, lambda api: api.request("GET", f"{_ADMIN}/audit", params=params))

    def lines(p: dict[str, Any]) -> list[str]:
        out = [
            f"{e['id']}  {_when(e['at'])}  {e['actor_id'] or 'host operator'}  {e['action']} {e['target']}"
            f"  {e['detail'] or ''}  from {e['source']}"
            for e in p["entries"]
        ]
        return out + ([f"(older: --before {p['next_before']})"] if p["next_before"] else [])

    return _show(args, page, lines)


def _group_line(g: dict[str, Any]) -> str:
    state = " dissolved" if g["dissolved"] else ""
    return f"{g['conv_id']}  {g['name']!r}  owner {g['owner_id']}, {g['member_count']} members{state}"


async def _groups(args: argparse.Namespace) -> int:
    return await _search(args, "groups", _group_line)


async def _group_dissolve(args: argparse.Namespace) -> int:
    path = f"{_ADMIN}/groups/{args.conv_id}"
    answer = await _as_user(args, lambda api: api.request("DELETE", path, body={"reason": args.reason}))
    return _show(args, answer, lambda a: [_group_line(a["group"])])


async def _group_transfer(args: argparse.Namespace) -> int:
    async def work(api: HttpApi) -> Any:
        body = {"user_id": await _user_id(api, args.target), "reason": args.reason}
        return await api.request("PUT", f"{_ADMIN}/groups/{args.conv_id}/owner", body=body)

    return _show(args, await _as_user(args, work), lambda a: [_group_line(a["group"])])


async def _shop_create(args: argparse.Namespace) -> int:
    async def work(api: HttpApi) -> Any:
        body = {"owner_id": await _user_id(api, args.owner), "name": args.name, "reason": args.reason}
        return await api.request("POST", f"{_ADMIN}/shops", body=body)

    answer = await _as_user(args, work)
    return _show(args, answer, lambda a: [f"shop {a['shop_id']} {a['name']!r}, owner {a['owner_id']}"])


async def _shop_agent(args: argparse.Namespace) -> int:
    async def work(api: HttpApi) -> Any:
        body: dict[str, Any] = {"role": args.role, "capacity": args.capacity, "reason": args.reason}
        if args.skills is not None:
            body["skills"] = [s for s in args.skills.split(",") if s]
        path = f"{_ADMIN}/shops/{args.shop_id}/agents/{await _user_id(api, args.target)}"
        return await api.request("PUT", path, body=body)

    def lines(a: dict[str, Any]) -> list[str]:
        skills = ",".join(a["skills"]) or "-"
        return [f"shop {a['shop_id']}: {a['user_id']} {a['role']}, skills {skills}, capacity {a['capacity']}"]

    return _show(args, await _as_user(args, work), lines)


async def export_over_http(args: argparse.Namespace) -> int:
    """``yim admin export USER --out FILE``: the user's data archive from a running node."""
    if not args.user:
        raise UsageError("give --user ADMIN (a server admin of the node), or --direct to read the store itself")

    async def work(api: HttpApi) -> int:
        return await api.admin_export(await _user_id(api, args.target), args.out, args.reason)

    size = await _as_user(args, work)
    sys.stdout.write(f"{args.out}: {size:,} bytes\n")
    return 0


async def _passwd(args: argparse.Namespace) -> int:
    old = read_password(args)
    new = _new_password(args, "new password: ")
    answer = await _as_user_with(args, old, new)
    return _show(args, answer, lambda a: [f"password changed; other sessions ended: {a['revoked']}"])


async def _as_user_with(args: argparse.Namespace, old: str, new: str) -> Any:
    async with HttpApi(_servers(args)) as api:
        device_id = LocalState(args.state).device_id(_servers(args)[0], args.user, "cli")
        await api.login(args.user, old, device_id, PLATFORM, "yim command line")
        try:
            return await api.request("PUT", "/api/v1/me/password", body={"old_password": old, "new_password": new})
        finally:
            with contextlib.suppress(YimClientError, aiohttp.ClientError, TimeoutError):
                await api.logout()


def _common(parser: argparse.ArgumentParser) -> None:
    _account_args(parser)
    parser.add_argument("--json", action="store_true", help="print the API's answer as JSON")


def add_admin_parsers(admin: Any) -> None:
    """Add the admin commands that run against a node to ``yim admin``."""
    users = admin.add_parser("users", help="list or search accounts (as a server admin, --user)")
    _common(users)
    users.add_argument("query", nargs="?", help="an id, or part of a username or display name")
    users.add_argument("--after", metavar="USER_ID", help="the next page: the id the previous one ended with")
    users.add_argument("--limit", type=int, default=50, help="rows per page (1…1000, default 50)")
    users.set_defaults(func=_one_shot(_users))

    user = admin.add_parser("user", help="show one account: devices, groups, counts, state")
    _common(user)
    user.add_argument("target", metavar="USER", help="a username or user id")
    user.set_defaults(func=_one_shot(_user))

    for name, suffix, text in (
        ("disable", "/disable", "disable an account: its sessions end, its logins are refused"),
        ("enable", "/enable", "enable a disabled account again"),
    ):
        p = admin.add_parser(name, help=text)
        _common(p)
        p.add_argument("target", metavar="USER", help="a username or user id")
        p.add_argument("--reason", default="", help="written to the audit log")
        p.set_defaults(func=_one_shot(_action("POST", suffix, lambda a: {"reason": a.reason})))

    erase = admin.add_parser(
        "erase", help="erase an account now: it cannot log in or be found, its messages are cleared (no undo)"
    )
    _common(erase)
    erase.add_argument("target", metavar="USER", help="a username or user id")
    erase.add_argument("--reason", default="", help="written to the audit log")
    erase.add_argument("--yes", action="store_true", required=True, help="confirm: an erasure cannot be undone")
    erase.set_defaults(func=_one_shot(_erase))

    reset = admin.add_parser("reset-password", help="set a new password for an account; all its sessions end")
    _common(reset)
    reset.add_argument("target", metavar="USER", help="a username or user id")
    reset.add_argument("--reason", default="", help="written to the audit log")
    reset.add_argument(
        "--new-password-file", metavar="FILE", help="the new password (else $YIM_NEW_PASSWORD, else a prompt)"
    )
    reset.set_defaults(func=_one_shot(_reset_password))

    revoke = admin.add_parser("revoke", help="sign out one device of an account (--device), or all of them")
    _common(revoke)
    revoke.add_argument("target", metavar="USER", help="a username or user id")
    revoke.add_argument("--device", metavar="DEVICE_ID", help="only this device")
    revoke.add_argument("--reason", default="", help="written to the audit log")
    revoke.set_defaults(
        func=_one_shot(
            _action(
                "DELETE", "/devices", lambda a: {"reason": a.reason, **({"device_id": a.device} if a.device else {})}
            )
        )
    )

    role = admin.add_parser("role", help="make an account a server admin, or a plain user again")
    _common(role)
    role.add_argument("target", metavar="USER", help="a username or user id")
    role.add_argument("role", choices=["admin", "user"])
    role.add_argument("--reason", default="", help="written to the audit log")
    role.set_defaults(
        func=_one_shot(_action("PUT", "/role", lambda a: {"admin": a.role == "admin", "reason": a.reason}))
    )

    groups = admin.add_parser("groups", help="list or search groups (dissolved ones too)")
    _common(groups)
    groups.add_argument("query", nargs="?", help="a group id, or part of its name")
    groups.add_argument("--after", metavar="CONV_ID", help="the next page: the id the previous one ended with")
    groups.add_argument("--limit", type=int, default=50, help="rows per page (1…1000, default 50)")
    groups.set_defaults(func=_one_shot(_groups))

    dissolve = admin.add_parser("group-dissolve", help="dissolve a group; its members are told")
    _common(dissolve)
    dissolve.add_argument("conv_id", metavar="CONV_ID", help="the group's id")
    dissolve.add_argument("--reason", default="", help="written to the audit log")
    dissolve.set_defaults(func=_one_shot(_group_dissolve))

    transfer = admin.add_parser("group-transfer", help="hand a group to one of its members")
    _common(transfer)
    transfer.add_argument("conv_id", metavar="CONV_ID", help="the group's id")
    transfer.add_argument("target", metavar="USER", help="the new owner: a username or user id")
    transfer.add_argument("--reason", default="", help="written to the audit log")
    transfer.set_defaults(func=_one_shot(_group_transfer))

    shops = admin.add_parser("shops", help="customer-service shops: create one for a user, set its agents")
    shop_sub = shops.add_subparsers(dest="shops_command", required=True)
    create = shop_sub.add_parser("create", help="a shop for a user, who becomes its admin")
    _common(create)
    create.add_argument("owner", metavar="OWNER", help="a username or user id")
    create.add_argument("name", metavar="NAME", help="the shop's name")
    create.add_argument("--reason", default="", help="written to the audit log")
    create.set_defaults(func=_one_shot(_shop_create))
    agent = shop_sub.add_parser("agent", help="add an agent to a shop, or change its role, skills, capacity")
    _common(agent)
    agent.add_argument("shop_id", metavar="SHOP_ID")
    agent.add_argument("target", metavar="USER", help="a username or user id")
    agent.add_argument("--role", choices=["agent", "admin"], default="agent")
    agent.add_argument("--skills", metavar="A,B", help="service categories (default pre_sale,after_sale)")
    agent.add_argument("--capacity", type=int, default=10, help="sessions at once (0…1000, default 10)")
    agent.add_argument("--reason", default="", help="written to the audit log")
    agent.set_defaults(func=_one_shot(_shop_agent))

    audit = admin.add_parser("audit", help="page through the audit log, newest first")
    _common(audit)
    audit.add_argument("--before", metavar="ID", help="the next page: the id the previous one ended with")
    audit.add_argument("--limit", type=int, default=50, help="rows per page (1…1000, default 50)")
    audit.set_defaults(func=_one_shot(_audit))


def add_passwd_parser(sub: Any) -> None:
    passwd = sub.add_parser("passwd", help="change your password; your other sessions end")
    _common(passwd)
    passwd.add_argument(
        "--new-password-file", metavar="FILE", help="the new password (else $YIM_NEW_PASSWORD, else a prompt)"
    )
    passwd.set_defaults(func=_one_shot(_passwd))

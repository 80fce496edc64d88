"""The ``yim`` commands of the terminal client: ``chat`` (the process around the chat loop)
and the one-shot ``send``, ``history`` and ``register`` for operators and scripts, with
how they get a password and a device id."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import logging
import os
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

from yim.client.sdk import ApiError, ConnectionLost, HttpApi, SessionEnded, YimClientError
from yim.client.terminal.chat import ChatApp
from yim.client.terminal.commands import UsageError
from yim.client.terminal.render import Directory, history_line, shown_in_history
from yim.client.terminal.state import PLATFORM, LocalState
from yim.protocol.frames import ConversationOut, Password, Username

DEFAULT_SERVER = "http://127.0.0.1:8080"


# --- passwords -------------------------------------------------------------------------------------


def read_password(
    args: argparse.Namespace, *, confirm: bool = False, check: Callable[[str], None] | None = None
) -> str:
    """From ``--password-file`` (its first line), ``YIM_PASSWORD``, or a prompt on the terminal.
    ``check`` refuses a password (with a UsageError) before it is asked for a second time."""
    if args.password_file:
        try:
            text = Path(args.password_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot read the password file: {exc}") from None
        password = text.splitlines()[0] if text else ""
        if not password:
            raise UsageError(f"the password file {args.password_file} is empty")
        if check is not None:
            check(password)
        return password
    env = os.environ.get("YIM_PASSWORD")
    if env:
        if check is not None:
            check(env)
        return env
    if not sys.stdin.isatty():
        raise UsageError("no password: give --password-file, set YIM_PASSWORD, or run in a terminal")
    password = getpass.getpass(f"password for {args.user}: ")
    if check is not None:
        check(password)
    if confirm and getpass.getpass("again: ") != password:
        raise UsageError("the passwords do not match")
    return password


# --- the chat ---------------------------------------------------------------------------------------


def _tolerant_output() -> None:
    """Never fail on a character the terminal's encoding lacks (a C locale is UTF-8 anyway)."""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="replace")


def _chat(args: argparse.Namespace) -> int:
    _tolerant_output()
    servers = _servers(args)
    password = read_password(args)
    device_id = LocalState(args.state).device_id(servers[0], args.user, "chat")
    logging.getLogger("yim.client").setLevel(max(logging.WARNING, logging.getLogger().level))
    app = ChatApp(servers, args.user, password, device_id)
    try:
        code = asyncio.run(app.run())
    except KeyboardInterrupt:
        code = 130
    finally:
        app.restore_terminal()
    if app.reader_waiting():
        # The input thread still waits for a line that will never be used; leave without it.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


# --- one-shot commands ------------------------------------------------------------------------------


def _servers(args: argparse.Namespace) -> list[str]:
    servers = args.server or [os.environ.get("YIM_SERVER", DEFAULT_SERVER)]
    return [s for item in servers for s in item.split(",") if s]


async def _logged_in(args: argparse.Namespace, api: HttpApi) -> None:
    password = read_password(args)
    device_id = LocalState(args.state).device_id(_servers(args)[0], args.user, "cli")
    await api.login(args.user, password, device_id, PLATFORM, "yim command line")


def _print_json(obj: Any) -> None:
    sys.stdout.write(msgspec.json.encode(obj).decode() + "\n")


def _check(value: str, rule: Any, what: str) -> None:
    """``value`` against a field type of the protocol (frames.py keeps the rule itself)."""
    try:
        msgspec.convert(value, rule)
    except msgspec.ValidationError:
        raise UsageError(what) from None


async def _register(args: argparse.Namespace) -> int:
    # What can be wrong is said before the password is asked for (twice, at a prompt).
    _check(args.user, Username, f"{args.user!r} cannot be a username: 3 to 32 letters, digits, '_', '.' or '-'")
    async with HttpApi(_servers(args)) as api:
        await api.request("GET", "/healthz", auth=False)  # unreachable: said now, not after the prompt
        password = read_password(
            args, confirm=True, check=lambda p: _check(p, Password, "the password must be 8 to 256 characters long")
        )
        user = await api.register(args.user, password, args.display_name or "")
    _print_json(user)
    return 0


async def _send(args: argparse.Namespace) -> int:
    # From stdin, the line break that ends the input (`echo`, a file) is not part of the message.
    text = sys.stdin.read().rstrip("\r\n") if args.text == ["-"] else " ".join(args.text)
    if not text.strip():
        raise UsageError("nothing to send")
    async with HttpApi(_servers(args)) as api:
        await _logged_in(args, api)
        try:
            if args.to is not None:
                target = {"to": (await api.user_by_name(args.to)).user_id}
            else:
                target = {"conv_id": await _group_conversation(api, args.group)}
            client_msg_id = uuid.uuid4().hex
            for attempt in range(3):  # a resend with the same client_msg_id is never a second message
                try:
                    ack = await api.send(body={"text": text}, client_msg_id=client_msg_id, **target)
                    break
                except (ConnectionLost, aiohttp.ClientError, TimeoutError):
                    if attempt == 2:
                        raise
                    await asyncio.sleep(0.5 * (attempt + 1))
        finally:
            with contextlib.suppress(YimClientError, aiohttp.ClientError, TimeoutError):
                await api.logout()
    _print_json(ack)
    return 0


async def _history(args: argparse.Namespace) -> int:
    async with HttpApi(_servers(args)) as api:
        await _logged_in(args, api)
        try:
            conv_id = args.conv or await _direct_conversation(api, args.with_user)
            page = await api.history(conv_id, limit=args.limit)
            if args.json:
                _print_json(page)
                return 0
            names = Directory(api)
            for message in filter(shown_in_history, page.messages):
                sys.stdout.write(await history_line(message, names, full_time=True) + "\n")
            if page.has_more:
                sys.stdout.write(f"(older messages before #{page.messages[0].seq})\n")
        finally:
            with contextlib.suppress(YimClientError, aiohttp.ClientError, TimeoutError):
                await api.logout()
    return 0


async def _group_conversation(api: HttpApi, group: str) -> str:
    """A group's conversation id, from the id itself (digits) or from the group's name:
    exactly as written, else ignoring case; a name that two groups share is refused."""
    if group.isdigit():
        return group
    exact: list[ConversationOut] = []
    folded: list[ConversationOut] = []
    before: str | None = None
    while True:
        page = await api.conversations(limit=200, before=before)
        for conv in page.conversations:
            if conv.type == "group" and conv.active:
                if conv.name == group:
                    exact.append(conv)
                elif conv.name.casefold() == group.casefold():
                    folded.append(conv)
        if page.next_before is None:
            break
        before = page.next_before
    found = exact or folded
    if not found:
        raise UsageError(f"no group named {group} among your conversations")
    if len(found) > 1:
        ids = ", ".join(c.conv_id for c in found)
        raise UsageError(f"{len(found)} groups are named {group}: give the id instead ({ids})")
    return found[0].conv_id


async def _direct_conversation(api: HttpApi, username: str) -> str:
    before: str | None = None
    while True:
        page = await api.conversations(limit=200, before=before)
        for conv in page.conversations:
            if conv.type == "direct" and conv.peer is not None and conv.peer.username.casefold() == username.casefold():
                return conv.conv_id
        if page.next_before is None:
            raise UsageError(f"no conversation with {username}")
        before = page.next_before


def _one_shot(command: Callable[[argparse.Namespace], Any]) -> Callable[[argparse.Namespace], int]:
    """Run an async command; print API and usage errors on stderr (exit status 1)."""

    def run(args: argparse.Namespace) -> int:
        _tolerant_output()
        logging.getLogger("yim.client").setLevel(max(logging.WARNING, logging.getLogger().level))
        try:
            return int(asyncio.run(command(args)))
        except ApiError as exc:
            print(f"yim {args.command}: {exc.code}: {exc.message}", file=sys.stderr)
        except UsageError as exc:
            print(f"yim {args.command}: {exc}", file=sys.stderr)
        except (ConnectionLost, aiohttp.ClientError, TimeoutError, OSError) as exc:
            print(f"yim {args.command}: cannot reach the server: {exc}", file=sys.stderr)
        except KeyboardInterrupt:
            return 130
        return 1

    return run


def _chat_entry(args: argparse.Namespace) -> int:
    try:
        return _chat(args)
    except ApiError as exc:
        print(f"yim chat: {exc.code}: {exc.message}", file=sys.stderr)
    except UsageError as exc:
        print(f"yim chat: {exc}", file=sys.stderr)
    except (SessionEnded, ConnectionLost, aiohttp.ClientError, TimeoutError, OSError) as exc:
        print(f"yim chat: cannot connect: {exc}", file=sys.stderr)
    return 1


def _account_args(parser: argparse.ArgumentParser, *, state: bool = True) -> None:
    parser.add_argument(
        "--server",
        action="append",
        metavar="URL",
        help=f"node URL, e.g. {DEFAULT_SERVER} (repeat for more nodes; default $YIM_SERVER or {DEFAULT_SERVER})",
    )
    parser.add_argument("--user", required=True, metavar="NAME", help="your username")
    parser.add_argument(
        "--password-file", metavar="FILE", help="read the password from FILE (else $YIM_PASSWORD, else a prompt)"
    )
    if state:
        parser.add_argument("--state", metavar="DIR", help="where the device id is kept (default ~/.config/yim)")


def add_terminal_parsers(sub: Any) -> None:
    """Add ``chat``, ``send``, ``history`` and ``register`` to the ``yim`` command."""
    chat = sub.add_parser("chat", help="chat in the terminal")
    _account_args(chat)
    chat.set_defaults(func=_chat_entry)

    send = sub.add_parser("send", help="send one text message; prints the ACK as JSON")
    _account_args(send)
    to = send.add_mutually_exclusive_group(required=True)
    to.add_argument("--to", metavar="USER", help="a username: the one-to-one conversation with them")
    to.add_argument("--group", metavar="NAME|ID", help="a group you are in, by its name or conversation id")
    send.add_argument("text", nargs="+", metavar="TEXT", help="the message ('-': read it from stdin)")
    send.set_defaults(func=_one_shot(_send))

    history = sub.add_parser("history", help="print a conversation's latest messages")
    _account_args(history)
    which = history.add_mutually_exclusive_group(required=True)
    which.add_argument("--with", dest="with_user", metavar="USER", help="the one-to-one conversation with USER")
    which.add_argument("--conv", metavar="CONV_ID", help="a conversation id (one-to-one or group)")
    history.add_argument("--limit", type=int, default=50, help="how many messages (1…200, default 50)")
    history.add_argument("--json", action="store_true", help="print the page as JSON")
    history.set_defaults(func=_one_shot(_history))

    register = sub.add_parser("register", help="create an account; prints it as JSON")
    _account_args(register, state=False)
    register.add_argument("--display-name", metavar="NAME", help="shown instead of the username")
    register.set_defaults(func=_one_shot(_register))

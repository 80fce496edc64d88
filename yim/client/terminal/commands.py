"""Command parsing of the chat: what a typed line asks for, before anything is done."""

from __future__ import annotations

from typing import NamedTuple

#: how many entries /history and opening a conversation show
HISTORY_LINES = 20
#: the most /history shows (one page of the server)
HISTORY_MAX = 200

HELP = """\
commands:
  /list               conversations, with unread counts
  /open N|NAME        open conversation N of the list, or by username or group name
  /dm USER            open the one-to-one chat with USER
  /group NAME         open a group by its name
  /create NAME USER…  create a group with these members and open it
  /shop NAME          open the chat with a shop's customer service, by its name or a part of it
  /history [N]        the last N messages of the open conversation (default 20)
  /read               mark the open conversation read (what it shows is read already)
  /reply SEQ TEXT     reply to message #SEQ of the open conversation, quoting it
  /quit               leave (also Ctrl-D)
anything else is sent to the open conversation; in a group, @NAME (a member's username
or display name) mentions that member and @everyone everyone (owner and admins)"""

#: the commands (each a ``cmd_NAME`` method of the chat) and their other names
COMMANDS = frozenset({"help", "list", "open", "dm", "group", "create", "history", "read", "reply", "shop"})
QUIT = frozenset({"quit", "exit", "q"})


class UsageError(Exception):
    """A problem with what the user asked for; printed without a traceback."""


class Command(NamedTuple):
    """A typed ``/name rest``: ``name`` in lower case, ``arg`` stripped."""

    name: str
    arg: str


class Text(NamedTuple):
    """A line to send to the open conversation, as typed."""

    text: str


class Quit(NamedTuple):
    """The user leaves (``/quit`` or the end of the input)."""


Typed = Command | Text | Quit | None


def parse_line(line: str | None) -> Typed:
    """What one typed line asks for: None for a blank line (nothing to do). A command that
    does not exist is still a :class:`Command`; :func:`known` tells."""
    if line is None:
        return Quit()
    text = line.strip()
    if not text:
        return None
    if not text.startswith("/"):
        return Text(line)
    name, _, rest = text[1:].partition(" ")
    if name in QUIT:
        return Quit()
    return Command(name.lower(), rest.strip())


def known(command: Command) -> bool:
    return command.name in COMMANDS


def history_limit(arg: str) -> int:
    """``/history [N]``: N within 1…HISTORY_MAX, HISTORY_LINES without a number."""
    limit = int(arg) if arg.isdigit() else HISTORY_LINES
    return max(1, min(limit, HISTORY_MAX))


def reply_args(arg: str) -> tuple[int, str]:
    """``/reply SEQ TEXT``: the seq quoted and the text of the reply."""
    seq, _, text = arg.partition(" ")
    if not seq.lstrip("#").isdigit() or not text.strip():
        raise UsageError("/reply SEQ TEXT (SEQ: the #number a message shows)")
    return int(seq.lstrip("#")), text.strip()


def list_number(arg: str, listed: int) -> int | None:
    """``/open N``: the place in the list (from 1) if ``arg`` is one, else None."""
    if arg.isdigit() and 1 <= int(arg) <= listed:
        return int(arg)
    return None


def create_args(arg: str) -> tuple[str, list[str]]:
    """``/create NAME USER…``: the group's name and the members' usernames."""
    if not arg:
        raise UsageError("/create NAME USER…")
    name, *usernames = arg.split()
    return name, usernames


def pick_shop(names: list[str], typed: str) -> int:
    """Which of the shops a search for ``typed`` found is meant (an index of ``names``): the
    one named exactly so (in any case), else the only one; UsageError if none or several."""
    exact = [i for i, name in enumerate(names) if name.casefold() == typed.strip().casefold()]
    if len(exact) == 1:
        return exact[0]
    if len(names) == 1:
        return 0
    if not names:
        raise UsageError(f"no shop named like {typed!r}")
    raise UsageError(f"several shops match {typed!r}: {', '.join(names)} (type more of the name)")

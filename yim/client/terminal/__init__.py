"""The terminal client and the scriptable account and message commands, built on the SDK.

- ``yim chat``: an interactive chat in line mode. It lists the conversations with their
  unread counts, opens one (by number, username or group name), shows its history, sends
  what is typed and prints what arrives above the prompt, live; what the open conversation
  shows is marked read, as a person is looking at it.
- ``yim send``, ``yim history``, ``yim register``: one-shot commands for operators and
  scripts. ``send`` prints the server's ACK as JSON; ``history`` prints lines or JSON.

Passwords come from ``--password-file``, the ``YIM_PASSWORD`` environment variable, or a
prompt, never from the command line (it would show in ``ps`` and shell history).

A device id per user and server is kept in ``state.json`` under ``--state`` (default
``$XDG_CONFIG_HOME/yim`` or ``~/.config/yim``). ``yim chat`` and the one-shot commands
use different device ids: logging a device in again ends its earlier session, so a
``yim send`` never disconnects a running ``yim chat`` of the same user.

The package, by concern: ``commands`` parses what is typed, ``render`` formats entries and
names, ``state`` keeps the device ids and what the chat shows, ``screen`` draws and reads
lines, ``chat`` is the I/O loop of ``yim chat``, ``cli`` the ``yim`` commands around them.
``python -m yim.client.terminal COMMAND …`` runs them as ``yim COMMAND …`` does.
"""

from yim.client.terminal.chat import ChatApp
from yim.client.terminal.cli import DEFAULT_SERVER, add_terminal_parsers, read_password
from yim.client.terminal.commands import HELP, UsageError, parse_line
from yim.client.terminal.render import Directory, describe, display_width, fit, history_line, one_line
from yim.client.terminal.state import PLATFORM, ChatState, LocalState, Target

__all__ = [
    "DEFAULT_SERVER",
    "HELP",
    "PLATFORM",
    "ChatApp",
    "ChatState",
    "Directory",
    "LocalState",
    "Target",
    "UsageError",
    "add_terminal_parsers",
    "describe",
    "display_width",
    "fit",
    "history_line",
    "one_line",
    "parse_line",
    "read_password",
]

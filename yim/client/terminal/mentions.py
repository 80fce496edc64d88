"""Mentions typed in a line: ``@bob`` or ``@鲍勃`` (a member's username or display name) in
a group becomes a mention of that member's id (docs/protocol.md §6.3 ``mentions``), and
``@everyone`` a ``mention_all``. Pure: the chat loop (chat.py) fetches the members."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from typing import NamedTuple

from yim.client.terminal.commands import UsageError
from yim.protocol.frames import UserOut

#: the word that mentions everyone (the web client's word too)
EVERYONE = "everyone"
#: the most members a line's names are looked up among (pages of ``group_members``); a
#: member beyond it is not found by name and the text goes as typed
MEMBERS_SCANNED = 5000


class Mentions(NamedTuple):
    """What a line mentions: member ids in the order written, and whether everyone."""

    ids: list[str]
    everyone: bool = False


def fold(text: str) -> str:
    """Names compare case- and width-insensitively: a fullwidth "BOB" (U+FF22 …) is "bob"."""
    return unicodedata.normalize("NFKC", text).casefold()


def _word(ch: str) -> bool:
    return ch.isascii() and (ch.isalnum() or ch == "_")


def _ends_at(name: str, rest: str) -> bool:
    """Whether a name written at the start of ``rest`` ends there: ``@bob,`` and ``@鲍勃你好``
    (Chinese needs no space) name bob and 鲍勃, ``@bobby`` does not name bob."""
    after = rest[len(name) :]
    return not after or not (_word(name[-1]) and _word(after[0]))


#: characters after which an "@" is part of an address ("bob@example.com", "https://x.org/@bob"),
#: not a mention; after anything else it is (Chinese is written without spaces: "你好@鲍勃")
_IN_ADDRESS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.+-/:")


def _at_mention(text: str, i: int) -> bool:
    return text[i] == "@" and (i == 0 or text[i - 1] not in _IN_ADDRESS)


def wants_lookup(text: str) -> bool:
    """Whether a line may mention someone: only then are the members fetched."""
    return any(_at_mention(text, i) for i in range(len(text)))


def resolve(text: str, members: Iterable[UserOut], me_id: str = "") -> Mentions:
    """The mentions of a line among ``members``. Each ``@`` not inside an address is matched against
    every member's username and display name; the longest name written there wins. A name
    two members share is ambiguous: :class:`UsageError` says who they are (and nothing is
    sent). An ``@`` naming no member stays text, as does one naming oneself."""
    names: list[tuple[str, UserOut]] = []
    for user in members:
        if user.user_id == me_id:
            continue
        for name in {fold(user.username), fold(user.display_name)}:
            if name:
                names.append((name, user))
    folded = fold(text)
    ids: list[str] = []
    everyone = False
    for i in range(len(folded)):
        if not _at_mention(folded, i):
            continue
        rest = folded[i + 1 :]
        found = [(name, user) for name, user in names if rest.startswith(name) and _ends_at(name, rest)]
        if not found:
            everyone = everyone or (rest.startswith(EVERYONE) and _ends_at(EVERYONE, rest))
            continue
        longest = max(len(name) for name, _ in found)
        users = {user.user_id: user for name, user in found if len(name) == longest}
        if len(users) > 1:
            who = ", ".join(f"{u.display_name or u.username} (@{u.username})" for u in users.values())
            raise UsageError(f"@{rest[:longest]} could be {who}: type the username (not sent)")
        (user_id,) = users
        if user_id not in ids:
            ids.append(user_id)
    return Mentions(ids, everyone)

"""The history search store interface and its records.

A query is a list of terms; every term must occur in the message's searchable text (a
text's text, a file's name), case-insensitively, as a substring — so Chinese needs no word
segmentation. Terms of 3 or more characters are looked up in a trigram index (SQLite: FTS5
``trigram``; PostgreSQL: ``pg_trgm``); shorter terms have no trigram, so a query made only
of them scans the messages of the user's own conversations — bounded by what one user can
see, never the whole table.

Every hit lies inside the user's visible window of its conversation (``joined_seq < seq <=
left_seq``, or the head while a member) and is not recalled: search never returns a message
the user could not page to with ``history``.
"""

from __future__ import annotations

import abc

import msgspec

from yim.storage.records import MessageRec

#: trigram: shorter terms have no trigram to look up
MIN_INDEXED_CHARS = 3


class SearchRow(msgspec.Struct, frozen=True):
    message: MessageRec
    text: str
    previous: MessageRec | None  # the nearest readable entry before it in the user's window
    next: MessageRec | None


class SearchStore(abc.ABC):
    @abc.abstractmethod
    async def search(
        self, user_id: int, conv_id: int | None, terms: list[str], before: int | None, limit: int
    ) -> tuple[list[SearchRow], bool]:
        """Hits newest first (by msg_id, below ``before``), at most ``limit``, and whether
        there are more. ``not_member`` if ``conv_id`` is given and not the user's."""

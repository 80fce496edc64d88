"""History search (op ``search``, ``GET /api/v1/search``): full-text search over the
messages a user can see, newest first, each hit with its neighbours for context.

Matching is by substring, case-insensitive, every whitespace-separated term required;
Chinese works without word segmentation ("亿级消息" finds "支持亿级消息量", and a
2-character query like "亿级" too). See :mod:`yim.storage.search` for how.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from yim.protocol.errors import YimError
from yim.protocol.frames import Search, SearchHit, SearchPage
from yim.protocol.ids import parse_id
from yim.services.sync import within_budget
from yim.services.wire import message_out

if TYPE_CHECKING:
    from yim.services.context import Context
    from yim.storage.records import SessionRec

MAX_TERMS = 8
MAX_HIGHLIGHTS = 32


def query_terms(q: str) -> list[str]:
    if any((c < " " and c not in "\t\n\r") or c == "\x7f" for c in q):
        # messages never hold control characters, and a NUL breaks the FTS5 query syntax
        raise YimError("bad_request", "`q` must not contain control characters")
    terms = list(dict.fromkeys(q.split()))
    if not terms:
        raise YimError("bad_request", "`q` must contain a word to search for")
    if len(terms) > MAX_TERMS:
        # Dropping the rest would find messages that lack them: a wider search than asked.
        raise YimError("bad_request", f"`q` has {len(terms)} different terms; at most {MAX_TERMS}")
    return terms


def highlights(text: str, terms: list[str]) -> list[tuple[int, int]]:
    """[start, end) code-point ranges of the occurrences of the terms (merged, sorted): at
    most MAX_HIGHLIGHTS ranges, always including the first occurrence of every term, then
    the earliest of the others."""
    folded = text.lower()
    if len(folded) != len(text):  # case folding changed offsets (rare scripts): no ranges
        return []
    firsts: list[tuple[int, int]] = []
    others: list[tuple[int, int]] = []
    for term in terms:
        needle = term.lower()
        at = folded.find(needle)
        found = 0
        # More than MAX_HIGHLIGHTS of one term can never be shown: stop looking there.
        while at != -1 and found < MAX_HIGHLIGHTS:
            (others if found else firsts).append((at, at + len(needle)))
            found += 1
            at = folded.find(needle, at + len(needle))
    others.sort()
    # firsts has at most MAX_TERMS (< MAX_HIGHLIGHTS) spans; merging only lowers the count.
    spans = sorted(firsts + others[: MAX_HIGHLIGHTS - len(firsts)])
    merged: list[tuple[int, int]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


async def search(node: Context, session: SessionRec, req: Search, origin: Any = None) -> SearchPage:
    terms = query_terms(req.q)
    conv_id = parse_id(req.conv_id, "conversation") if req.conv_id is not None else None
    before = min(int(req.before), 2**63 - 1) if req.before is not None else None
    rows, more = await node.store.search.search(session.user_id, conv_id, terms, before, req.limit)
    kept = within_budget(rows, lambda r: len(r.text) * 3 + 2048)  # hit text plus its context messages
    more = more or len(kept) < len(rows)
    rows = kept
    hits = [
        SearchHit(
            message=message_out(r.message),
            text=r.text,
            highlights=highlights(r.text, terms),
            previous=message_out(r.previous) if r.previous is not None else None,
            next=message_out(r.next) if r.next is not None else None,
        )
        for r in rows
    ]
    return SearchPage(hits=hits, next_before=str(rows[-1].message.msg_id) if more and rows else None)

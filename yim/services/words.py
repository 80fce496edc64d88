"""Sensitive-word filter: listed words in user-written text are refused or masked.

Operators give word lists (``word_lists`` in yim/config.py; docs/operations.md §1.6):
UTF-8 files, one entry a line, each list with its action — ``reject`` (the request fails
with ``content_blocked``) or ``mask`` (each matched character becomes ``*``). It applies to
text message bodies, group names and announcements, and display names.

Matching runs on *normalised* text, so that trivial disguises still match:

- NFKC: full-width letters and digits become half-width (U+FF21 -> A), compatibility
  forms their plain letter;
- case folding (ABC -> abc, ß -> ss);
- zero-width and invisible formatting characters are dropped wherever they are;
- between two CJK characters, any run of characters that are neither letters nor digits
  (spaces, punctuation, symbols, emoji) is dropped: 敏 感 词, 敏*感*词 and 敏。感。词 read 敏感词.
  Elsewhere spaces stay: "bad word" does not match "badword".

Entries are normalised the same way and matched as substrings by one Aho-Corasick
automaton holding both actions' entries, so the cost per text is one pass over it whatever
the lists' sizes and however many lists there are. A clean text (the common case) costs
C-level work only: NFKC (full-width punctuation mapped first), casefold, a regex and the
automaton scan (~4.5 µs per 100 Chinese or mixed characters with 10,000 entries, of which
the scan is under 1 and normalising ~3; ~0.6 µs for ASCII text, which skips the
normalising steps it cannot need; docs/performance.md). Only a text with a hit to mask
makes the map back to the characters written, so that exactly the matched characters are
masked and the rest of the text stays byte-identical: in C when every character maps to
one (the usual case), character by character otherwise; and only the matched characters'
origins are looked up.

Lists are reloaded without a restart: on SIGHUP, and when a file's mtime, size or inode
changed (checked every ``word_lists_check_s``, never per text). A reload builds new
automata off the event loop and swaps them in with one assignment; a reload that fails
(a file missing or not UTF-8) keeps the lists in use and says so in one log line.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import logging
import os
import re
import signal
import unicodedata
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

import daachorse
import msgspec

from yim.config import SettingsError, WordList
from yim.protocol.errors import YimError
from yim.protocol.frames import CustomBody, TextBody
from yim.storage.records import SendResult

if TYPE_CHECKING:
    from yim.config import Settings

log = logging.getLogger("yim.words")

#: invisible characters dropped everywhere (all of Unicode category Cf, so that
#: str.isprintable() is False for any text holding one): soft hyphen, Mongolian vowel
#: separator, zero-width space / non-joiner / joiner, direction marks and embeddings, word
#: joiner and invisible operators, direction isolates, zero-width no-break space (BOM)
_INVISIBLE = "\u00ad\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff"
_INVISIBLE_RUN = re.compile(f"[{_INVISIBLE}]+")
#: CJK characters: kana, Han (unified, extension A, compatibility, extensions B and later), Hangul
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\U00020000-\U0003134f"
# A run of characters that are neither letters nor digits ([\W_]: re's \w is str.isalnum()
# plus "_") between two CJK characters. Written to start with its run's first character
# (the lookbehind checks the character before it) so that re scans for candidates in C:
# ~1.7 µs per 100 characters instead of ~2.4 with the lookbehind first.
_CJK_GAP = re.compile(f"[\\W_](?<=[{_CJK}][\\W_])[\\W_]*(?=[{_CJK}])")
#: the same two patterns as one group each: their split() alternates kept and dropped pieces
_INVISIBLE_RUN_SPLIT = re.compile(f"({_INVISIBLE_RUN.pattern})")
_CJK_GAP_SPLIT = re.compile(f"({_CJK_GAP.pattern})")


_text_decoder = msgspec.json.Decoder(TextBody)
_custom_decoder = msgspec.json.Decoder(CustomBody)
_encoder = msgspec.json.Encoder()

T = TypeVar("T", bound=msgspec.Struct)


#: full-width ASCII forms and the ideographic space, whose NFKC form is their ASCII twin
_FULL_WIDTH = re.compile("[\uff01-\uff5e\u3000]+")
_HALF_WIDTH = {c: c - 0xFEE0 for c in range(0xFF01, 0xFF5F)} | {0x3000: 0x20}


#: the full-width punctuation of everyday Chinese text, with the ASCII NFKC makes of it
_COMMON_FULL_WIDTH = tuple(
    (c, unicodedata.normalize("NFKC", c)) for c in "\uff0c\uff01\uff1f\uff1a\uff1b\uff08\uff09\u3000"
)


def _nfkc(text: str) -> str:
    """``unicodedata.normalize("NFKC", text)``, faster for Chinese text. Its full-width
    punctuation (U+FF0C, U+FF01 ...) fails NFKC's quick check, and the full algorithm then
    costs ~20 µs per 100 characters. Replacing the common ones (a C scan each) and then any
    other full-width form by its ASCII twin (exactly what NFKC does with them) usually
    leaves a text NFKC has nothing more to do with."""
    if unicodedata.is_normalized("NFKC", text):
        return text
    for wide, narrow in _COMMON_FULL_WIDTH:
        if wide in text:
            text = text.replace(wide, narrow)
    if unicodedata.is_normalized("NFKC", text):
        return text
    text = _FULL_WIDTH.sub(lambda m: m.group().translate(_HALF_WIDTH), text)
    return text if unicodedata.is_normalized("NFKC", text) else unicodedata.normalize("NFKC", text)


def normalise(text: str) -> str:
    """The form both entries and texts are matched in (see the module's docstring)."""
    if text.isascii():
        # ASCII is NFKC already, its case folding is lower(), and it can hold neither an
        # invisible character nor a CJK one: one C pass instead of four.
        return text.lower()
    norm = _nfkc(text).casefold()
    if not norm.isprintable():  # ~0.3 µs per 100 characters: most texts skip the regex
        norm = _INVISIBLE_RUN.sub("", norm)
    # A text of letters and digits alone has no gap to drop: a short message without
    # punctuation ("好的", "哈哈哈") skips the regex, ~half its normalising cost; any other
    # text stops this C scan at its first space or punctuation.
    return norm if norm.isalnum() else _CJK_GAP.sub("", norm)


class _Mapped:
    """A normalised text and where each of its characters came from in the original, kept
    as little as the usual case needs: one-for-one characters (``starts`` None), and for
    each dropping step only where its kept pieces start. A character's origin is looked up
    only for the characters a match covers."""

    __slots__ = ("drops", "ends", "norm", "starts")

    def __init__(self, text: str) -> None:
        half = text
        for wide, narrow in _COMMON_FULL_WIDTH:  # one for one, as _FULL_WIDTH's map (C scans)
            if wide in half:
                half = half.replace(wide, narrow)
        if _FULL_WIDTH.search(half) is not None:
            half = _FULL_WIDTH.sub(lambda m: m.group().translate(_HALF_WIDTH), half)
        folded = half.casefold()
        self.starts: list[int] | None = None
        self.ends: list[int] | None = None
        if len(folded) == len(text) and unicodedata.is_normalized("NFKC", half):
            # The usual case, in C: NFKC leaves the text as it is once its full-width forms are
            # mapped, and case folding maps each character to one, so character i came from
            # character i. (casefold never maps a character to none.)
            norm = folded
        else:
            # Character by character, each with the combining marks that follow it (so é
            # written as e + U+0301 composes as it does in normalise()).
            pieces: list[str] = []
            starts: list[int] = []
            ends: list[int] = []
            i, n = 0, len(text)
            while i < n:
                j = i + 1
                while j < n and unicodedata.combining(text[j]):
                    j += 1
                piece = unicodedata.normalize("NFKC", text[i:j]).casefold()
                pieces.append(piece)
                starts.extend([i] * len(piece))
                ends.extend([j] * len(piece))
                i = j
            norm, self.starts, self.ends = "".join(pieces), starts, ends
        # The same two steps as normalise(); for each, the kept pieces' starts before and after.
        self.drops: list[tuple[list[int], list[int]]] = []
        for pattern in (_INVISIBLE_RUN_SPLIT, _CJK_GAP_SPLIT):
            parts = pattern.split(norm)  # kept, dropped, kept, ..., kept: in C, no loop here
            if len(parts) == 1:
                continue
            kept = parts[0::2]
            bounds = list(itertools.accumulate(map(len, parts)))  # where each part ends
            self.drops.append(([0, *itertools.accumulate(map(len, kept[:-1]))], [0, *bounds[1::2]]))
            norm = "".join(kept)
        self.norm = norm

    def origin(self, k: int) -> tuple[int, int]:
        """The ``[start, end)`` of the original characters character ``k`` came from."""
        for after, before in reversed(self.drops):
            piece = bisect.bisect_right(after, k) - 1
            k = before[piece] + k - after[piece]
        if self.starts is None or self.ends is None:
            return k, k + 1
        return self.starts[k], self.ends[k]


def normalise_mapped(text: str) -> tuple[str, list[int], list[int]]:
    """``normalise(text)``, and for each of its characters the ``[start, end)`` of the
    original characters it came from."""
    mapped = _Mapped(text)
    spans = [mapped.origin(k) for k in range(len(mapped.norm))]
    return mapped.norm, [a for a, _ in spans], [b for _, b in spans]


#: what an entry of the automaton asks for (bits of :attr:`Automaton.actions`)
REJECT, MASK = 1, 2


class Automaton:
    """Both lists' normalised entries in one Aho-Corasick automaton (daachorse's character-wise
    double array: finding a state's next state is one array lookup, where pyahocorasick
    searched a node's children one by one; docs/performance.md), and each entry's action."""

    __slots__ = ("actions", "find")

    def __init__(self, actions: dict[str, int]) -> None:
        words = list(actions)
        #: the ``REJECT | MASK`` bits of each entry, by the entry's index in the automaton
        self.actions = [actions[word] for word in words]
        #: every match in a normalised text, overlapping ones included: ``(start, end, index)``
        #: with ``[start, end)`` in characters of that text (a bound method: one lookup less a text)
        self.find: Callable[[str], list[tuple[int, int, int]]] = daachorse.CharwiseDoubleArrayAhoCorasick(
            words
        ).find_overlapping


def mask(automaton: Automaton, text: str) -> str:
    """``text`` with each original character that a match of a ``MASK`` entry of
    ``automaton`` covers replaced by one ``*`` (when the text needed composing, a character
    with its combining marks counts as one); the rest unchanged."""
    mapped = _Mapped(text)
    actions = automaton.actions
    spans = [(start, end) for start, end, index in automaton.find(mapped.norm) if actions[index] & MASK]
    return _masked(text, mapped, spans)


def _masked(text: str, mapped: _Mapped, spans: list[tuple[int, int]]) -> str:
    """``text`` with the original characters of ``spans`` (``[start, end)`` in characters of
    ``mapped.norm``) masked."""
    if not spans:
        return text
    covered: dict[int, int] = {}  # start -> end of each original character to mask
    for first, end in spans:
        for k in range(first, end):
            start, stop = mapped.origin(k)
            covered[start] = stop
    out: list[str] = []
    pos = 0
    for start in sorted(covered):
        if start < pos:  # inside a character already masked
            continue
        out.append(text[pos:start])
        out.append("*")
        pos = covered[start]
    out.append(text[pos:])
    return "".join(out)


def load_entries(path: str) -> list[str]:
    """The normalised entries of one list file: one a line; blank lines and lines starting
    with ``#`` are skipped, and so (with a warning) is an entry that normalises to nothing.
    OSError or ValueError (not UTF-8) if the file cannot be read."""
    with open(path, "rb") as fh:
        data = fh.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 (byte {exc.start})") from None
    entries: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        word = normalise(entry)
        if not word:
            log.warning("word list %s line %d: %r is nothing once normalised; skipped", path, number, entry)
            continue
        entries.append(word)
    return entries


def build_automaton(masked: Sequence[str], rejected: Sequence[str] = ()) -> Automaton | None:
    """One automaton over the normalised entries of both actions, so that a text is scanned
    once whatever lists are configured; an entry on both lists has both bits. None if no
    entries."""
    actions: dict[str, int] = {}
    for words, action in ((masked, MASK), (rejected, REJECT)):
        for word in words:
            actions[word] = actions.get(word, 0) | action
    return Automaton(actions) if actions else None


Signature = tuple[int, int, int]


def _signature(path: str) -> Signature:
    st = os.stat(path)
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class _State(msgspec.Struct, frozen=True):
    """Everything a check reads, replaced as a whole on reload."""

    words: Automaton | None  # both lists' entries (build_automaton)
    signatures: tuple[Signature, ...]
    counts: dict[str, int]


def _build(specs: Sequence[WordList]) -> _State:
    # The signatures are taken before the files are read: a write during the read shows
    # as a change at the next check, never as a change already seen.
    signatures = tuple(_signature(spec.path) for spec in specs)
    entries: dict[str, list[str]] = {"reject": [], "mask": []}
    for spec in specs:
        entries[spec.action] += load_entries(spec.path)
    return _State(
        words=build_automaton(entries["mask"], entries["reject"]),
        signatures=signatures,
        counts={action: len(set(words)) for action, words in entries.items()},
    )


def _reason(exc: Exception) -> str:
    """One line naming the file and what is wrong with it."""
    if isinstance(exc, OSError):
        return f"{exc.filename}: {exc.strerror or exc}"
    return str(exc)


#: filters of the running nodes, all reloaded on SIGHUP (several nodes may share a process in tests)
_live: weakref.WeakSet[WordFilter] = weakref.WeakSet()
_sighup = False  # the handler is installed


def _on_sighup() -> None:
    for words in list(_live):
        words.reload_soon()


class WordFilter:
    """The node's sensitive-word lists. ``Node.words`` is None when none are configured, so a
    node without lists pays one attribute check per text."""

    def __init__(self, specs: Sequence[WordList], check_s: float) -> None:
        self._specs = tuple(specs)
        self._check_s = check_s
        try:
            self._state = _build(self._specs)
        except (OSError, ValueError) as exc:
            raise SettingsError(f"bad setting: word_lists: cannot load {_reason(exc)}") from None
        self._failed: tuple[Signature, ...] | None = None  # files of the last failed reload
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        #: SIGHUP reloads (a loop outside the main thread cannot take signal handlers)
        self.sighup = False
        log.info("word lists loaded: %s", self._describe())

    @classmethod
    def from_settings(cls, settings: Settings) -> WordFilter | None:
        specs = settings.word_lists
        assert not isinstance(specs, str)  # parsed in Settings.__post_init__
        return cls(specs, settings.word_lists_check_s) if specs else None

    def _describe(self) -> str:
        counts = self._state.counts
        return f"{counts['reject']} entries to reject, {counts['mask']} to mask"

    # -- checks -------------------------------------------------------------------------
    def apply(self, text: str, what: str) -> str:
        """``text``, masked if a mask list matches; YimError("content_blocked") if a reject
        list does. ``what`` names the text in the error ("the message", "the group name")."""
        words = self._state.words  # one read: a reload in between cannot mix two generations
        if words is None:
            return text
        norm = normalise(text)
        matches = words.find(norm)
        if not matches:  # a clean text: one call, no loop
            return text
        actions = words.actions
        spans: list[tuple[int, int]] = []
        for start, end, index in matches:
            if actions[index] & REJECT:
                # The message never names the word: that would publish the list.
                raise YimError("content_blocked", f"{what} contains words that are not allowed")
            spans.append((start, end))  # a mask entry's, in characters of norm
        # Only a text to mask gets here: the map back to the characters written is made now,
        # and the matches of the scan above are reused, its normalised text being the same.
        mapped = _Mapped(text)
        return _masked(text, mapped, spans) if mapped.norm == norm else mask(words, text)

    def message_body(self, kind: str, body: bytes) -> tuple[bytes, bool]:
        """A message's canonical body, filtered, and whether it changed (masked). User-written
        text is a text body's ``text`` and a custom message's ``text`` fallback (what clients
        without support show, and search finds); the other kinds pass unchanged."""
        if kind == "text":
            text = _text_decoder.decode(body).text
            filtered = self.apply(text, "the message")
            if filtered is text:
                return body, False
            return _encoder.encode(TextBody(text=filtered)), True
        if kind == "custom":
            custom = _custom_decoder.decode(body)
            if not custom.text:
                return body, False
            filtered = self.apply(custom.text, "the message's text")
            if filtered is custom.text:
                return body, False
            return _encoder.encode(msgspec.structs.replace(custom, text=filtered)), True
        return body, False

    def fields(self, struct: T, *names: str, what: str = "the") -> T:
        """``struct`` with its named text fields filtered (a field that is None or empty is
        left alone); YimError("content_blocked") naming the field if one is rejected."""
        changes: dict[str, str] = {}
        for name in names:
            value = getattr(struct, name)
            if value:
                filtered = self.apply(value, f"{what} {name.replace('_', ' ')}")
                if filtered is not value:
                    changes[name] = filtered
        return msgspec.structs.replace(struct, **changes) if changes else struct

    # -- reloading ------------------------------------------------------------------------
    def start(self) -> None:
        """Watch the files (every ``word_lists_check_s``) and SIGHUP, on the running loop."""
        loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._task = loop.create_task(self._watch())
        global _sighup
        if not _live:
            try:
                loop.add_signal_handler(signal.SIGHUP, _on_sighup)
                _sighup = True
            except (RuntimeError, ValueError, NotImplementedError):  # not the main thread's loop
                _sighup = False
                log.info("SIGHUP does not reload the word lists here; their files are still watched")
        self.sighup = _sighup
        _live.add(self)

    async def stop(self) -> None:
        global _sighup
        _live.discard(self)
        if not _live and _sighup:
            _sighup = False
            with contextlib.suppress(RuntimeError, ValueError, NotImplementedError):
                asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def reload_soon(self) -> None:
        """Reload now, changed or not (SIGHUP)."""
        if self._wake is not None:
            self._wake.set()

    async def _watch(self) -> None:
        assert self._wake is not None
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._check_s or None):
                    await self._wake.wait()
            forced = self._wake.is_set()
            self._wake.clear()
            try:
                await self.reload(force=forced)
            except Exception:  # the watch must outlive anything one reload does
                log.exception("word lists: reload failed")

    async def reload(self, force: bool = True) -> bool:
        """Reload the lists if a file changed (or ``force``); True if new lists are in use.
        On failure the lists in use stay, and one line says why (once per state of the files)."""
        async with self._lock:
            try:
                signatures = tuple(_signature(spec.path) for spec in self._specs)
            except OSError as exc:
                if force or self._failed != ():
                    log.warning("word lists not reloaded, the old ones stay: %s", _reason(exc))
                self._failed = ()
                return False
            if not force and signatures in (self._state.signatures, self._failed):
                return False
            try:
                state = await asyncio.to_thread(_build, self._specs)
            except (OSError, ValueError) as exc:
                log.warning("word lists not reloaded, the old ones stay: %s", _reason(exc))
                self._failed = signatures
                return False
            self._state = state  # the swap: checks read either the old state or this one
            self._failed = None
            log.info("word lists reloaded: %s", self._describe())
            return True


class EchoedResult(SendResult, frozen=True):
    """A send whose stored body is not the one sent (masked): its ACK carries the body."""


def _copy_echoed(done: asyncio.Future[SendResult], out: asyncio.Future[SendResult]) -> None:
    if out.done():
        return
    if done.cancelled():
        out.cancel()
    elif (exc := done.exception()) is not None:
        out.set_exception(exc)
    else:
        result = done.result()
        out.set_result(EchoedResult(**{f: getattr(result, f) for f in result.__struct_fields__}))


def echo_body(fut: asyncio.Future[SendResult]) -> asyncio.Future[SendResult]:
    """A future resolving like ``fut``, with an :class:`EchoedResult`, so that the sender's
    ACK shows the masked body its other devices and its peers get: for a caller that awaits
    it. It resolves a loop turn after ``fut``; a callback that answers the sender in the
    order of its sends takes :func:`echoed_now` in ``fut``'s own callback instead."""
    out: asyncio.Future[SendResult] = asyncio.get_running_loop().create_future()
    fut.add_done_callback(lambda done: _copy_echoed(done, out))
    return out


def echoed_now(done: asyncio.Future[SendResult]) -> asyncio.Future[SendResult]:
    """``done`` (a done future) as a future already done the same way, with an
    :class:`EchoedResult`: no loop turn between the two."""
    out: asyncio.Future[SendResult] = asyncio.get_running_loop().create_future()
    _copy_echoed(done, out)
    return out

"""The store of a node's worker processes: one store in the store process, reached by every
worker over its channel (yim/ipc/channel.py).

- :class:`StoreServer`, in the store process, answers a call ``store.<path>`` (``store.sync``,
  ``store.relations.friend_request``) by calling the real store's method at ``<path>`` with the
  arguments of the call's body, a msgpack array of every parameter in order.
- :class:`RemoteStore`, in a worker, is a :class:`~yim.storage.base.Store` with the same
  attribute tree (``remote.relations.friend_request(...)``), every method of it forwarded as
  that call, its reply decoded into the method's return type.

Both ends are built from one description, :data:`METHODS`, read at import from the abstract
interfaces themselves (:class:`Store` and the concept stores its annotations name), so a
method added to an interface is forwarded and served with no change here; one that is not a
plain async method stops the import until it is given a way below. The description is also
the allow-list: the server calls nothing else, no private or backend-only attribute.

What is not a plain async method with msgspec-encodable arguments and result, and how each is
handled:

=================================  ==========================================================
``Store.send_message``,            return a Future, not a coroutine (the hot path): forwarded
``MediaStore.send``                by :meth:`Channel.request`, a Future the reply resolves, no
                                   task per message; one connection's futures resolve in the
                                   order of its sends (the channel keeps order, the store's
                                   writer resolves in submission order)
``Store.stats`` (a property)       the store process's counters, as of a snapshot: reading it
                                   starts a refresh (``store.stats``) when the snapshot is over
                                   :data:`STATS_MAX_AGE` seconds old and answers the snapshot it
                                   holds (empty before the first reply). Every worker reports
                                   the same counters of the one store: aggregate with max
``Store.open`` / ``Store.close``   the store process owns the store's life: the remote's open
                                   checks the channel, its close closes the channel
``ServiceStore.ctx``               the routing context is the store process's (its
                                   ``is_connected`` answers from the worker hub); a worker's
                                   services set the remote's own attribute, which nothing reads
``ServiceStore.may_be_agent``      True (always safe: ``agent_presence`` is then asked of the
                                   store process, whose own check makes it cheap for non-agents)
``ServiceStore.may_become_agent``  a cast (nothing to wait for)
the concept attributes             proxies built the same way, one per concept
=================================  ==========================================================

Errors: a YimError of the store crosses the channel as itself (code, message, retry_after);
a store process that is gone fails every pending and later call with ``unavailable``, the code
a store that is away gives in one process. A call the server cannot match to a method, or
whose arguments do not decode as its parameters, is answered ``internal``: between two
processes of one node only a bug (or a worker of another version) sends one.
"""

from __future__ import annotations

import abc
import asyncio
import inspect
import sys
import time
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from yim.ipc.channel import Channel
from yim.protocol.errors import YimError
from yim.storage import (
    admin,
    base,
    erase,
    media,
    outbox,
    push,
    reactions,
    records,
    relations,
    reports,
    search,
    service,
)
from yim.storage.base import Store
from yim.storage.records import SendResult
from yim.storage.rules import quotes

#: the prefix of every store op on a node's channels
PREFIX = "store."
#: how old (seconds) a worker's snapshot of the store's counters may get before a read of
#: ``stats`` refreshes it
STATS_MAX_AGE = 5.0

Kind = Literal["call", "future", "cast", "property"]


@dataclass(frozen=True)
class StoreMethod:
    """One method of the store interface, as both ends of the channel see it."""

    op: str  # "store.relations.friend_request"
    concept: str  # "relations"; "" for the Store itself
    name: str  # "friend_request"
    kind: Kind  # call: a coroutine; future: returns a Future; cast: sync, no answer; property
    signature: inspect.Signature  # without self
    positional: int  # how many parameters are passed by position (the rest are keyword-only)
    args_type: Any  # tuple[<each parameter's type>] of a call's body
    reply_type: Any  # what the reply decodes into


# The interface modules name each other's records under TYPE_CHECKING only; resolving their
# annotations needs every name they use.
_MODULES = (records, relations, service, media, search, reactions, admin, push, outbox, erase, reports, quotes, base)
_NAMES: dict[str, Any] = {}
for _m in _MODULES:
    _NAMES.update(vars(_m))
_NAMES.update(asyncio=asyncio)

#: not forwarded as a call: what the worker answers itself (see the module docstring)
_LOCAL: dict[tuple[str, str], str] = {
    ("", "open"): "the store process opens the store; the remote checks its channel",
    ("", "close"): "the store process closes the store; the remote closes its channel",
    ("service", "may_be_agent"): "True: always safe (its docstring), the store process checks again",
    ("service", "ctx"): "the store process's own routing context",
}
#: sync methods with no result, forwarded as casts
_CASTS = frozenset({("service", "may_become_agent")})


def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    return typing.get_type_hints(fn, globalns={**_NAMES, **vars(sys.modules[fn.__module__])})


def _describe(concept: str, iface: type) -> list[StoreMethod]:
    out: list[StoreMethod] = []
    prefix = f"{PREFIX}{concept}." if concept else PREFIX
    for name in sorted(dir(iface)):
        if name.startswith("_") or (concept, name) in _LOCAL:
            continue
        raw = inspect.getattr_static(iface, name)
        if isinstance(raw, property):
            if (concept, name) != ("", "stats"):
                raise TypeError(f"{iface.__name__}.{name}: a property the remote store cannot forward")
            reply = typing.get_type_hints(raw.fget, globalns=_NAMES)["return"]
            sig = inspect.Signature()
            out.append(StoreMethod(prefix + name, concept, name, "property", sig, 0, tuple[()], reply))
            continue
        if not inspect.isfunction(raw):
            raise TypeError(f"{iface.__name__}.{name}: an attribute the remote store does not know how to forward")
        hints = _hints(raw)
        full = inspect.signature(raw)
        params = list(full.parameters.values())[1:]  # without self
        if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params):
            raise TypeError(f"{iface.__name__}.{name}: *args / **kwargs cannot cross the channel")
        sig = full.replace(parameters=params)
        positional = sum(p.kind != p.KEYWORD_ONLY for p in params)
        args_type = tuple[tuple(hints[p.name] for p in params)] if params else tuple[()]  # type: ignore[misc]
        ret = hints["return"]
        kind: Kind
        if inspect.iscoroutinefunction(raw):
            kind, reply = "call", ret
        elif typing.get_origin(ret) is asyncio.Future:
            kind, reply = "future", typing.get_args(ret)[0]
        elif (concept, name) in _CASTS:
            kind, reply = "cast", None
        else:
            raise TypeError(f"{iface.__name__}.{name}: a sync method the remote store does not know how to forward")
        out.append(StoreMethod(prefix + name, concept, name, kind, sig, positional, args_type, reply))
    return out


def _concepts() -> dict[str, type]:
    """The concept stores :class:`Store` names (``relations``: RelationStore, ...)."""
    hints = typing.get_type_hints(Store, globalns=_NAMES)
    return {k: v for k, v in hints.items() if isinstance(v, type) and issubclass(v, abc.ABC)}


CONCEPTS: dict[str, type] = _concepts()
#: every op a worker may ask of the store process: the allow-list, by op name
METHODS: dict[str, StoreMethod] = {
    m.op: m for concept, iface in [("", Store), *CONCEPTS.items()] for m in _describe(concept, iface)
}

_decoders: dict[Any, msgspec.msgpack.Decoder[Any]] = {}

# --- timeline entries in replies --------------------------------------------------------------

#: appends the timeline entries a reply holds to the list it is given
EntryFinder = Callable[[Any, list[SendResult]], None]


def _take(value: SendResult, out: list[SendResult]) -> None:
    out.append(value)


def _entry_finder(type_: Any, seen: frozenset[Any] = frozenset()) -> EntryFinder | None:
    """How to find the :class:`SendResult` values in a value of ``type_`` (a reply type), or
    None when it cannot hold one. Read from the type once, so a reply is walked only along
    the fields and items that can hold an entry, never through its other lists."""
    if isinstance(type_, type) and issubclass(type_, SendResult):
        return _take
    origin, args = typing.get_origin(type_), typing.get_args(type_)
    if origin in (typing.Union, types.UnionType):
        members = [(typing.get_origin(a) or a, f) for a in args if (f := _entry_finder(a, seen)) is not None]
        if not members:
            return None

        def one_of(value: Any, out: list[SendResult]) -> None:
            for kind, find in members:
                if isinstance(value, kind):
                    find(value, out)
                    return

        return one_of
    if origin in (list, tuple) and args:
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):  # tuple[A, B]: by position
            at = [(i, f) for i, a in enumerate(args) if (f := _entry_finder(a, seen)) is not None]
            if not at:
                return None

            def positions(value: Any, out: list[SendResult]) -> None:
                for i, find in at:
                    find(value[i], out)

            return positions
        item = _entry_finder(args[0], seen)
        if item is None:
            return None

        def items(value: Any, out: list[SendResult]) -> None:
            for v in value:
                item(v, out)

        return items
    if isinstance(type_, type) and issubclass(type_, msgspec.Struct) and type_ not in seen:
        hints = typing.get_type_hints(type_, globalns=_NAMES)
        inside = seen | {type_}
        fields = [(n, f) for n in type_.__struct_fields__ if (f := _entry_finder(hints[n], inside)) is not None]
        if not fields:
            return None

        def attributes(value: Any, out: list[SendResult]) -> None:
            for name, find in fields:
                find(getattr(value, name), out)

        return attributes
    return None


#: op -> how to find the timeline entries its reply holds, for every op whose reply can hold
#: one (a send, a recall, a group change, a pin ...): the store process routes each committed
#: entry's event to the workers holding its recipients (see yim/bus/workers_hub.py)
ENTRY_OPS: dict[str, EntryFinder] = {
    op: f for op, m in METHODS.items() if m.kind in ("call", "future") and (f := _entry_finder(m.reply_type))
}


def entries_in(op: str, reply: Any) -> list[SendResult]:
    """The timeline entries of ``op``'s ``reply`` (none for an op that cannot hold one)."""
    out: list[SendResult] = []
    find = ENTRY_OPS.get(op)
    if find is not None and reply is not None:
        find(reply, out)
    return out


def _decoder(type_: Any) -> msgspec.msgpack.Decoder[Any]:
    dec = _decoders.get(type_)
    if dec is None:
        dec = _decoders[type_] = msgspec.msgpack.Decoder(type_)
    return dec


# --- the store process's end ----------------------------------------------------------------


class StoreServer:
    """Serves the methods of :data:`METHODS` of ``store`` to the workers."""

    def __init__(self, store: Store) -> None:
        self.store = store
        # op -> (the bound method, the decoder of its arguments, how many go by position,
        # the names of its keyword-only parameters); calls and casts apart, so neither can
        # be sent as the other
        self._calls: dict[str, _Bound] = {}
        self._casts: dict[str, _Bound] = {}
        for m in METHODS.values():
            fn: Callable[..., Any]
            if m.kind == "property":
                fn = self._stats
            else:
                fn = getattr(getattr(store, m.concept) if m.concept else store, m.name)
            keyword_only = tuple(m.signature.parameters)[m.positional :]
            table = self._casts if m.kind == "cast" else self._calls
            table[m.op] = (fn, _decoder(m.args_type), m.positional, keyword_only)
        #: every op this server takes (calls and casts): :data:`METHODS`, bound to ``store``
        self.ops = frozenset(self._calls) | frozenset(self._casts)

    def _stats(self) -> dict[str, int]:
        return dict(self.store.stats)

    def handle(self, op: str, body: msgspec.Raw, channel: Channel | None = None) -> Any:
        """Answer the call ``op`` (``store.<path>``): the store method's coroutine or Future
        (the channel awaits it and replies), or a value. ``channel`` is the one the call came
        on: the store's methods need nothing of it; the store process's router passes it to
        the hub's handlers and this one alike."""
        return _run(self._calls, "call", op, body)

    def handle_cast(self, op: str, body: msgspec.Raw) -> None:
        """Take the cast ``op`` (``store.service.may_become_agent``)."""
        _run(self._casts, "cast", op, body)


_Bound = tuple[Callable[..., Any], msgspec.msgpack.Decoder[Any], int, tuple[str, ...]]


def _run(table: dict[str, _Bound], what: str, op: str, body: msgspec.Raw) -> Any:
    entry = table.get(op)
    if entry is None:
        raise YimError("internal", f"the store takes no {what} {op!r} from a worker")
    fn, dec, positional, keyword_only = entry
    try:
        args = dec.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise YimError("internal", f"{op}: arguments that do not fit its parameters: {exc}") from None
    if keyword_only:
        return fn(*args[:positional], **dict(zip(keyword_only, args[positional:], strict=True)))
    return fn(*args)


# --- a worker's end ----------------------------------------------------------------------------


def _forwarder(m: StoreMethod) -> Callable[..., Any]:
    op, reply, sig = m.op, m.reply_type, m.signature
    names = tuple(sig.parameters)
    # the hot path: every argument by position, none left to a default, nothing to bind
    fast = len(names) if m.positional == len(names) else -1

    def full(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
        bound = sig.bind(*args, **kwargs)
        bound.apply_defaults()
        return tuple(bound.arguments[n] for n in names)

    if m.kind == "call":

        def call(self: _Remote, *args: Any, **kwargs: Any) -> Any:
            return self._channel.call(op, args if not kwargs and len(args) == fast else full(args, kwargs), reply)

        fn = call
    elif m.kind == "future":

        def future(self: _Remote, *args: Any, **kwargs: Any) -> Any:
            return self._channel.request(op, args if not kwargs and len(args) == fast else full(args, kwargs), reply)

        fn = future
    else:

        def cast(self: _Remote, *args: Any, **kwargs: Any) -> None:
            self._channel.cast(op, full(args, kwargs))

        fn = cast
    fn.__name__ = fn.__qualname__ = m.name
    fn.__doc__ = f"Forwarded to the store process as {op!r}."
    fn.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD), *sig.parameters.values()],
        return_annotation=sig.return_annotation,
    )
    return fn


class _Remote:
    _channel: Channel


def _install(cls: Any, concept: str) -> Any:
    """Give ``cls`` a forwarder for every method of ``concept`` (its abstract ones included);
    returns it, now concrete."""
    for m in METHODS.values():
        if m.concept == concept and m.kind != "property":
            setattr(cls, m.name, _forwarder(m))
    abc.update_abstractmethods(cls)
    if cls.__abstractmethods__:
        raise TypeError(f"{cls.__name__} leaves {sorted(cls.__abstractmethods__)} unforwarded")
    return cls


def _proxy(concept: str, iface: type) -> type:
    def __init__(self: _Remote, channel: Channel) -> None:
        self._channel = channel

    cls = type(f"Remote{iface.__name__}", (_Remote, iface), {"__init__": __init__, "__module__": __name__})
    result: type = _install(cls, concept)
    return result


_PROXIES: dict[str, type] = {concept: _proxy(concept, iface) for concept, iface in CONCEPTS.items()}


class _RemoteStore(_Remote, Store):
    """The store in a worker process: every method forwarded to the store process over
    ``channel`` (see the module docstring)."""

    def __init__(self, channel: Channel) -> None:
        self._channel = channel
        self._stats: dict[str, int] = {}
        self._stats_at = -STATS_MAX_AGE
        self._stats_refresh: asyncio.Future[dict[str, int]] | None = None
        for concept, proxy in _PROXIES.items():
            setattr(self, concept, proxy(channel))

    async def open(self) -> None:
        if self._channel.closed.is_set():
            raise YimError("unavailable", "the store process is gone")

    async def close(self) -> None:
        self._channel.close()

    async def refresh_stats(self) -> dict[str, int]:
        """Fetch the store's counters now (``stats`` answers them until they age)."""
        self._stats = await self._channel.call(PREFIX + "stats", (), dict[str, int])
        self._stats_at = time.monotonic()
        return self._stats

    @property
    def stats(self) -> dict[str, int]:
        now = time.monotonic()
        if self._stats_refresh is None and now - self._stats_at >= STATS_MAX_AGE and not self._channel.closed.is_set():
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                return self._stats  # read off the loop: the channel is the loop's alone
            self._stats_at = now
            self._stats_refresh = self._channel.request(PREFIX + "stats", (), dict[str, int])
            self._stats_refresh.add_done_callback(self._stats_taken)
        return self._stats

    def _stats_taken(self, fut: asyncio.Future[dict[str, int]]) -> None:
        self._stats_refresh = None
        if not fut.cancelled() and fut.exception() is None:
            self._stats = fut.result()


#: ``RemoteStore(channel)``: the class above with its forwarders, concrete (the type checker
#: sees it through this name; annotate a variable holding one as ``Store``)
RemoteStore: type[_RemoteStore] = _install(_RemoteStore, "")
RemoteStore.__name__ = RemoteStore.__qualname__ = "RemoteStore"

"""Settings: one typed struct, filled from defaults < TOML file < ``YIM_*`` env vars < CLI flags.

The embedded default needs no configuration at all: ``yim serve`` keeps its SQLite store,
its token secret and its node id under ``--data``.
"""

from __future__ import annotations

import os
import re
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

#: Floor of ``max_send_buffer_bytes``: twice the payload budget of one sync / history page
#: (REPLY_BUDGET_BYTES in yim/services/sync.py, which a page passes by at most one entry).
MIN_SEND_BUFFER_BYTES = 2 * 1024 * 1024


class SettingsError(ValueError):
    """A setting that cannot work; the message names it and says why."""


class WordList(msgspec.Struct, forbid_unknown_fields=True):
    """One sensitive-word list (docs/operations.md §1.6): a UTF-8 file, one entry
    a line, and what happens to text containing an entry."""

    path: str
    #: "reject": the request fails with content_blocked; "mask": each matched character becomes "*"
    action: Literal["reject", "mask"]


#: the events a webhook may subscribe to (docs/operations.md §9)
WEBHOOK_EVENTS = ("before_send", "after_send", "account_created", "group_changed", "session_opened", "session_closed")


class Webhook(msgspec.Struct, forbid_unknown_fields=True):
    """One webhook (docs/operations.md §9): a URL, the events POSTed to it, and the secret
    its requests are signed with (HMAC-SHA256)."""

    url: str
    events: list[str]  # of WEBHOOK_EVENTS
    secret: str


#: the shortest webhook secret: an HMAC key much shorter than its hash is guessable
MIN_WEBHOOK_SECRET_BYTES = 16


def check_webhooks(hooks: list[Webhook]) -> None:
    """The rules of the ``webhooks`` setting that its types cannot say."""
    for i, hook in enumerate(hooks):
        where = f"webhooks[{i}]"
        if not re.fullmatch(r"https?://[^\s/?#]+(/\S*)?", hook.url):
            raise ValueError(f"{where}.url must be an http:// or https:// URL, got {hook.url!r}")
        if not hook.events:
            raise ValueError(f"{where}.events is empty: name at least one event")
        for event in hook.events:
            if event not in WEBHOOK_EVENTS:
                raise ValueError(f"{where}.events: {event!r} is not an event (one of {', '.join(WEBHOOK_EVENTS)})")
        if len(hook.secret.encode()) < MIN_WEBHOOK_SECRET_BYTES:
            raise ValueError(f"{where}.secret must be at least {MIN_WEBHOOK_SECRET_BYTES} bytes")
    urls = [hook.url for hook in hooks]
    if len(set(urls)) != len(urls):
        # outbox rows name their hook by URL: one URL, one secret (list all its events in one entry)
        raise ValueError("two webhooks have the same url: give each URL once, with all its events")
    if sum("before_send" in hook.events for hook in hooks) > 1:
        # one synchronous verdict per message: two could disagree, and each adds its latency
        raise ValueError("at most one webhook may take the before_send event")


def parse_word_lists(value: str) -> list[WordList]:
    """The env / command-line form of ``word_lists``: ``ACTION:PATH`` items, comma-separated."""
    lists = []
    for item in filter(None, (part.strip() for part in value.split(","))):
        action, sep, path = item.partition(":")
        if not sep or action not in ("reject", "mask") or not path:
            raise ValueError(f"word_lists item {item!r} is not ACTION:PATH with ACTION reject or mask")
        lists.append(WordList(path=path, action=action))  # type: ignore[arg-type]  # checked just above
    return lists


class Settings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 8080  # 0: any free port
    data_dir: str = "./data"
    #: "sqlite" (embedded, under data_dir) or a postgres:// DSN (cluster mode).
    store: str = "sqlite"
    node_id: Annotated[int, msgspec.Meta(ge=0, le=1023)] = 0  # Snowflake: 10 bits
    #: processes serving this node (docs/operations.md §1.7): 1 is one process; N >= 2 is a
    #: store process and N workers on the same port (embedded SQLite store only); "auto" is
    #: one worker per core this process may run on, or 1 where workers cannot run (one core,
    #: a PostgreSQL store or redis_url: a cluster grows by nodes; a host that is not Linux
    #: 5.3 or later, workers_unsupported). Resolved to an int by __post_init__. Settings
    #: built in code default to 1 (a Node object is one process); ``yim serve`` defaults to
    #: "auto" (SERVE_DEFAULTS).
    workers: int | str = 1

    # accounts and tokens
    token_ttl_s: int = 30 * 24 * 3600
    #: argon2 profile: "default" (RFC 9106 low-memory) or "cheapest" (tests only).
    password_hashing: str = "default"

    # gateway
    heartbeat_s: float = 25.0  # how often clients should ping
    idle_timeout_s: float = 75.0  # silent for this long -> closed, device offline
    auth_timeout_s: float = 10.0  # time to send `auth` after connecting
    max_frame_bytes: int = 64 * 1024  # larger frames get `frame_too_large`, the connection lives
    hard_frame_bytes: int = 1024 * 1024  # larger frames close the connection (1009)
    #: bytes queued to a connection before it counts as a slow reader and is cut off
    #: (it then catches up by sync). 50,000 connections x this is the worst-case memory.
    #: At least MIN_SEND_BUFFER_BYTES (checked in __post_init__).
    max_send_buffer_bytes: int = 4 * 1024 * 1024

    # devices and presence
    #: at most this many devices of one platform class online at once (0 = no limit); a new
    #: connection beyond it closes the oldest of that class (close code 4006).
    max_online_mobile: int = 1  # android + ios
    max_online_desktop: int = 0
    max_online_web: int = 0
    max_connections_per_user: int = 16
    #: presence changes are published after this quiet period, so a flapping connection
    #: produces at most one change per period (or none, if it flapped back).
    presence_debounce_s: float = 1.0

    # messages
    max_text_chars: int = 8000
    history_page_max: int = 200
    sync_page_max: int = 1000

    # groups
    #: groups with at most this many members use write fan-out (a copy in every member's
    #: inbox); larger ones use read fan-out (one copy, members pull). See docs/performance.md.
    group_write_fanout_max: int = 500
    group_max_members: int = 100_000
    recall_limit_s: int = 120
    #: different emoji one user may put on one message
    reactions_per_user_max: int = 20
    #: pinned messages one conversation may have
    pins_max: int = 50
    #: how long after sending a text message its sender may edit it; 0 turns editing off
    edit_window_s: int = 86_400
    #: new reports one user may file in any hour (docs/protocol.md §19.9); 0 turns the limit off
    report_limit_per_hour: int = 20
    typing_interval_s: float = 3.0  # at most one typing notice per user and conversation per interval
    #: member lists kept in memory for pushes to read-fan-out groups and typing notices
    roster_cache_groups: int = 10_000

    # media (docs/protocol.md, "Media, search")
    #: where media bytes live: "local" (<data_dir>/blobs) or "s3://bucket[/prefix]"
    blob_store: str = "local"
    s3_endpoint_url: str = ""  # empty: AWS itself; else any S3-compatible endpoint
    s3_region: str = "us-east-1"
    s3_access_key_id: str = ""  # empty: boto3's default credential chain
    s3_secret_access_key: str = ""
    #: uploads to S3 above this size go up as multipart uploads (parts of 8 MiB)
    s3_multipart_threshold_bytes: int = 16 * 1024 * 1024
    media_max_image_bytes: int = 30 * 1024 * 1024
    media_max_video_bytes: int = 500 * 1024 * 1024
    media_max_file_bytes: int = 500 * 1024 * 1024
    #: images with more pixels are refused (decompression bombs); decoding costs ~4 B/pixel
    media_max_image_pixels: int = 50_000_000
    media_thumbnail_px: int = 320  # thumbnails fit in a square of this many pixels
    media_cache_max_age_s: int = 86_400  # Cache-Control max-age of media downloads
    #: data exports (docs/protocol.md §19.7) this node builds at once; more get ``export_busy``.
    #: Each reads the store page by page and writes a zip under <data_dir>/tmp/exports.
    export_max_concurrent: Annotated[int, msgspec.Meta(ge=1, le=64)] = 2
    # limits and abuse (docs/security.md). Token buckets: ``*_s`` is the sustained rate per
    # second, ``*_burst`` how much may be saved up; a rate of 0 turns that limit off. The
    # defaults are far above what a person's client does.
    #: comma-separated networks exempt from the per-IP limits (not from per-user ones)
    limits_exempt_networks: str = "127.0.0.0/8,::1/128"
    rate_send_per_user_s: float = 200.0  # messages per user (WebSocket and HTTP)
    rate_send_burst: int = 5000
    rate_send_per_ip_s: float = 1000.0
    rate_send_ip_burst: int = 20_000
    #: every other request (history, sync, group and relation ops ...) per user; not ping/ack
    rate_requests_per_user_s: float = 100.0
    rate_requests_burst: int = 2000
    rate_register_per_ip_s: float = 0.1
    rate_register_ip_burst: int = 50
    rate_login_per_ip_s: float = 2.0  # login attempts (each costs an argon2 verify)
    rate_login_ip_burst: int = 100
    #: failed logins per username before exponential back-off (base * 2**k, at most max)
    login_free_failures: int = 5
    login_ip_free_failures: int = 50
    login_backoff_base_s: float = 1.0
    login_backoff_max_s: float = 900.0
    login_failure_window_s: float = 3600.0  # failures are forgotten this long after the last
    rate_upload_per_user_s: float = 1.0
    rate_upload_burst: int = 60
    #: reactions (adds and removes) per user: a flood of them costs every member's devices
    rate_react_per_user_s: float = 5.0
    rate_react_burst: int = 30
    max_connections_per_ip: int = 1000  # TCP connections (HTTP + WebSocket); 0 = no cap
    #: a connection that has not sent a complete HTTP request within this long of connecting
    #: (or of its last response) is closed: idle keep-alive and slowloris sockets
    http_idle_timeout_s: float = 15.0
    limits_max_keys: int = 200_000  # entries per limit table (~150 B each)
    # TLS: both set -> https/wss on the same port (``yim serve --tls-cert --tls-key``)
    tls_cert: str = ""
    tls_key: str = ""

    # store
    #: SQLite group commit: one transaction takes at most this many queued writes (a batch
    #: is whatever queued up during the previous commit; a lone write never waits for one).
    commit_batch_max: int = 512
    #: WAL + NORMAL keeps every commit across a process kill; FULL also across power loss
    #: (one fsync per group commit).
    sqlite_synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    #: where the SQLite store's search indexer runs: "thread" (sharing the store process's
    #: GIL with its event loop and writer), "process" (a child process: another core), or
    #: "auto": a process in the store process of ``--workers >= 2``, which bounds the whole
    #: node, a thread in the one-process node, where a process measured no gain. See
    #: :attr:`indexer_in_process`.
    search_indexer: Literal["thread", "process", "auto"] = "auto"
    #: PostgreSQL store (``store = "postgres://..."``): pooled connections for reads; the
    #: group-commit writer holds one more of its own.
    pg_pool_min: int = 2
    pg_pool_max: int = 10

    # cluster mode (docs/architecture.md, "Cluster mode")
    #: Redis for device routing, node-id leases and cross-node push: "redis://host:port/db",
    #: or "redis+cluster://host:port,host:port" for Redis Cluster. Empty: one node, in-process bus.
    # Push (docs/operations.md §7): off unless enabled; each provider is configured by its own
    # settings (a provider left unconfigured refuses pushers of its kind: push_unavailable).
    push_enabled: bool = False
    push_vapid_dir: str = ""  # where vapid_private.pem lives; empty: the data folder
    push_vapid_subject: str = ""  # mailto: or https: contact for the push services; Web Push needs it
    push_webpush_allow_http: bool = False  # plain-http endpoints: loopback test receivers only
    push_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=300)] = 10.0
    push_max_connections: Annotated[int, msgspec.Meta(ge=1, le=1024)] = 16
    push_max_in_flight: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 256
    push_max_response_bytes: Annotated[int, msgspec.Meta(ge=1024, le=16 * 1024 * 1024)] = 64 * 1024
    push_ca_file: str = ""  # trust this CA bundle instead of the system's (a proxy, a test stand-in)
    push_ttl_s: Annotated[int, msgspec.Meta(ge=0, le=28 * 86_400)] = 86_400
    push_apns_base_url: str = "https://api.push.apple.com"
    push_apns_sandbox_base_url: str = "https://api.sandbox.push.apple.com"
    push_apns_key_file: str = ""
    push_apns_key_id: str = ""
    push_apns_team_id: str = ""
    push_apns_topic: str = ""
    push_fcm_base_url: str = "https://fcm.googleapis.com"
    push_fcm_token_url: str = "https://oauth2.googleapis.com/token"
    push_fcm_credentials_file: str = ""
    push_gateway_url: str = ""
    push_preview: bool = True  # notifications show the message; off: only "New message from <sender>"
    #: one visible notification per conversation and device per interval (a burst collapses)
    push_collapse_s: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 5.0
    #: how often each node looks for push work (besides being woken by its own sends)
    push_poll_s: Annotated[float, msgspec.Meta(gt=0, le=60)] = 1.0
    #: how long a node holds claimed work; past it, another node (or this one restarted) takes it
    push_lease_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 60.0
    #: pushers claimed per round, so the pushes in progress on a node are bounded
    push_batch: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 100
    #: the first retry's delay when a provider did not say (doubling per failure, up to push_retry_max_s)
    push_retry_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 5.0
    push_retry_max_s: Annotated[float, msgspec.Meta(gt=0, le=86_400)] = 600.0
    #: while a user's quiet hours hold their pushes, how often each held device is looked at again
    push_dnd_recheck_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 60.0

    redis_url: str = ""
    #: lease a free Snowflake node id from Redis instead of using ``node_id`` (``--node-id auto``)
    node_id_lease: bool = False
    #: a node id lease lives this long unless renewed (every third of it); a node whose
    #: lease lapsed issues no id until it holds the lease again.
    node_lease_ttl_s: float = 15.0
    #: a (user, device) -> node route lives this long unless refreshed (every third of it)
    #: while its connection lives, so a dead node's routes vanish on their own.
    cluster_route_ttl_s: float = 30.0
    #: a node that lost its node id lease (fenced: it closed its connections and refuses new
    #: ones) tries this long to lease a fresh id, then exits with code 3 for its supervisor.
    node_relet_timeout_s: float = 300.0

    #: cluster-wide state (presence, rate limits, online agents; docs/operations.md §6):
    #: what each node spent of the shared send-rate buckets is added to them this often, so
    #: a send pays no Redis round trip; concurrent nodes may overdraw by one period's spending.
    cluster_limits_sync_s: float = 0.1
    #: a cluster-state call to Redis that takes longer fails, and that check falls back to
    #: this node's own state (nothing is refused because Redis is away).
    cluster_state_timeout_s: float = 1.0

    # sensitive-word filter (docs/operations.md §1.6; yim/services/words.py)
    #: TOML: ``word_lists = [{path = "...", action = "reject"}, ...]``; env / command line:
    #: "reject:PATH,mask:PATH". Empty: no filter, and nothing is paid for it.
    word_lists: list[WordList] | str = []
    #: how often the lists' files are checked for a change (0: only on SIGHUP)
    word_lists_check_s: Annotated[float, msgspec.Meta(ge=0)] = 5.0

    # webhooks (docs/operations.md §9; yim/services/hooks.py)
    #: TOML: ``webhooks = [{url = "https://...", events = ["before_send"], secret = "..."}]``;
    #: env / command line: the same list as JSON. Empty: no hook, and nothing is paid for it.
    webhooks: list[Webhook] | str = []
    #: the longest a send waits for the before_send hook's verdict
    before_send_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=30)] = 2.0
    #: when the before_send hook does not answer in time or answers nonsense: "open" stores
    #: the message as sent, "closed" refuses it (``unavailable``, the client may retry)
    before_send_fail: Literal["open", "closed"] = "closed"
    #: events after a change (after_send) go through a durable outbox: the waits between a
    #: failed delivery and the next attempt, the last repeated ("1,5,30" as env / flag)
    webhook_retry_s: list[Annotated[float, msgspec.Meta(ge=0)]] | str = "1,5,30,120,600,1800"
    #: after this many failed attempts an event is a dead letter (kept, counted, not retried)
    webhook_dead_after: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 10
    #: the longest one outbox delivery may take
    webhook_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=300)] = 10.0
    #: a node claims outbox events for this long; one that dies holding them leaves them to be
    #: delivered again (by any node) once it ends. Longer than webhook_timeout_s.
    webhook_lease_s: Annotated[float, msgspec.Meta(gt=0)] = 60.0

    # erasing accounts (docs/operations.md §8.5; yim/services/erase.py)
    #: what an erased account's messages become: "tombstone" (each reads as recalled: its
    #: place and sender stay, its content goes) or "remove" (an empty "removed" entry)
    erase_messages: Literal["tombstone", "remove"] = "tombstone"
    #: how long a user's own deletion waits before it runs; a login in that time cancels it
    delete_grace_s: Annotated[float, msgspec.Meta(ge=0)] = 7 * 24 * 3600.0
    #: how often each node looks for deletions that are due
    erase_sweep_s: Annotated[float, msgspec.Meta(gt=0)] = 60.0

    def __post_init__(self) -> None:
        self.workers = check_workers(self.workers, self.store, self.redis_url)
        if isinstance(self.word_lists, str):
            self.word_lists = parse_word_lists(self.word_lists)
        if isinstance(self.webhooks, str):
            try:
                self.webhooks = msgspec.json.decode(self.webhooks or "[]", type=list[Webhook])
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                raise ValueError(f"webhooks is not a JSON list of {{url, events, secret}}: {exc}") from None
        check_webhooks(self.webhooks)
        if isinstance(self.webhook_retry_s, str):
            try:
                self.webhook_retry_s = [float(v) for v in self.webhook_retry_s.split(",") if v.strip()]
            except ValueError:
                raise ValueError(f"webhook_retry_s {self.webhook_retry_s!r} is not comma-separated seconds") from None
        if not self.webhook_retry_s or min(self.webhook_retry_s) < 0:
            raise ValueError("webhook_retry_s must list at least one wait, none negative")
        if self.webhook_lease_s <= self.webhook_timeout_s:
            raise ValueError(
                f"webhook_lease_s ({self.webhook_lease_s}) must exceed webhook_timeout_s ({self.webhook_timeout_s}):"
                " a claim would end while its delivery may still run, and another node deliver it too"
            )
        if self.max_send_buffer_bytes < MIN_SEND_BUFFER_BYTES:
            raise ValueError(
                f"max_send_buffer_bytes must be at least {MIN_SEND_BUFFER_BYTES} (2 MiB), got"
                f" {self.max_send_buffer_bytes}: a sync or history page may take 1 MiB and more, and a"
                " connection that cannot queue one would be closed (4008) on every large page"
            )

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)

    @property
    def worker_count(self) -> int:
        """``workers`` as the int __post_init__ made of it."""
        return self.workers if isinstance(self.workers, int) else 1

    @property
    def class_limits(self) -> dict[str, int]:
        """The online limit of each platform class (yim/protocol/platforms.py; 0: none)."""
        return {"mobile": self.max_online_mobile, "desktop": self.max_online_desktop, "web": self.max_online_web}

    @property
    def indexer_in_process(self) -> bool:
        """Whether the SQLite search indexer runs in a child process (``search_indexer``)."""
        if self.search_indexer == "auto":
            return self.worker_count >= 2
        return self.search_indexer == "process"


#: the most workers one node runs (each is a process with its own connections and caches)
MAX_WORKERS = 64


#: what ``yim serve`` assumes where neither the command line, the environment nor the
#: settings file says: a node uses every core it may run on, as the servers it replaces do
SERVE_DEFAULTS: dict[str, Any] = {"workers": "auto"}


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity (what a container's cpuset or
    ``taskset`` leaves it), not every core of the host as ``os.cpu_count()`` says."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def workers_unsupported() -> str | None:
    """Why this host cannot run a node's worker processes, or None if it can.

    The store process hands each worker its settings in a memfd, watches it through a pidfd
    (Linux 5.3 and later) and has the kernel kill it with the store process (prctl), all
    Linux only (yim/supervisor.py). Elsewhere (macOS, where the README's ``make serve`` runs
    too; an older kernel; a sandbox whose seccomp filter refuses pidfd_open) a node runs as
    one process. One syscall, made only when workers are asked for."""
    if not sys.platform.startswith("linux") or not hasattr(os, "pidfd_open") or not hasattr(os, "memfd_create"):
        return f"worker processes need Linux, and this is {sys.platform}"
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError as exc:
        return f"worker processes need pidfd_open (Linux 5.3 or later), which this host refuses: {exc.strerror}"
    return None


def check_workers(value: int | str, store: str, redis_url: str) -> int:
    """``workers`` as a number of processes, or a ValueError that says what is allowed."""
    clustered = bool(redis_url) or not (store == "sqlite" or store.startswith("sqlite:"))
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "auto":
            # "as many as fit": a clustered node is one process (it grows by nodes), and so
            # is a node on a host that cannot run workers, so auto is never the reason a
            # node refuses to start
            if clustered or workers_unsupported() is not None:
                return 1
            return min(usable_cores(), MAX_WORKERS)
        if not text.isdigit():
            raise ValueError(f"workers = {value!r}: give a number from 1 to {MAX_WORKERS}, or auto (one per core)")
        count = int(text)
    else:
        count = value
    if not 1 <= count <= MAX_WORKERS:
        raise ValueError(f"workers = {count}: give a number from 1 to {MAX_WORKERS}, or auto (one per core)")
    if count >= 2 and clustered:
        raise ValueError(
            f"workers = {count} needs the embedded SQLite store and no redis_url: a cluster scales by adding nodes"
        )
    if count >= 2 and (why := workers_unsupported()) is not None:
        raise ValueError(f"workers = {count}: {why}; run one process (workers = 1)")
    return count


_ENV_PREFIX = "YIM_"


def load_settings(
    config_file: str | None = None, *, defaults: Mapping[str, Any] | None = None, **overrides: Any
) -> Settings:
    """Merge defaults (Settings' own, then ``defaults``: a command's, e.g. SERVE_DEFAULTS), an
    optional TOML file, ``YIM_<FIELD>`` env vars and explicit overrides, later ones winning."""
    values: dict[str, Any] = dict(defaults or {})
    origin: dict[str, str] = {}  # where each value came from, for the error message
    path = config_file or os.environ.get("YIM_CONFIG")
    if path:
        try:
            with open(path, "rb") as fh:
                values.update(tomllib.load(fh))
        except OSError as exc:
            raise SettingsError(f"config file {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"config file {path} is not valid TOML: {exc}") from None
        origin.update({name: path for name in values})
    fields = {f.name: f for f in msgspec.structs.fields(Settings)}
    for name in fields:
        env = os.environ.get(_ENV_PREFIX + name.upper())
        if env is not None:
            values[name] = env
            origin[name] = _ENV_PREFIX + name.upper()
    given = {k: v for k, v in overrides.items() if v is not None}
    values.update(given)
    origin.update({name: "the command line" for name in given})
    # strict=False lets "8080" from the environment become an int, with range/type checks intact.
    try:
        return msgspec.convert(values, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise SettingsError(_explain(str(exc), values, origin)) from None


_AT = re.compile(r" - at `\$\.(\w+)`$")
_UNKNOWN = re.compile(r"^Object contains unknown field `(\w+)`$")


def _explain(error: str, values: dict[str, Any], origin: dict[str, str]) -> str:
    """msgspec's message, with the setting, the value given, where it came from and what
    the setting takes."""
    unknown = _UNKNOWN.match(error)
    if unknown:
        name = unknown.group(1)
        return f"bad setting: there is no setting {name!r} (in {origin.get(name, 'the settings')})"
    at = _AT.search(error)
    if at is None:  # a check of __post_init__: its message already says it all
        return f"bad setting: {error}"
    name = at.group(1)
    value = "***" if "secret" in name or name == "webhooks" else repr(values.get(name))  # webhooks hold secrets
    return (
        f"bad setting: {name} = {value} (from {origin.get(name, 'the defaults')}): {error[: at.start()]};"
        f" allowed: {_allowed(name)}"
    )


def _allowed(name: str) -> str:
    struct = msgspec.inspect.type_info(Settings)
    assert isinstance(struct, msgspec.inspect.StructType)
    info = next(f.type for f in struct.fields if f.name == name)
    if isinstance(info, msgspec.inspect.LiteralType):
        return "one of " + ", ".join(repr(v) for v in info.values)
    if isinstance(info, msgspec.inspect.BoolType):
        return "true or false"
    if isinstance(info, msgspec.inspect.IntType | msgspec.inspect.FloatType):
        kind = "an integer" if isinstance(info, msgspec.inspect.IntType) else "a number"
        low = info.ge if info.ge is not None else info.gt
        high = info.le if info.le is not None else info.lt
        if low is not None and high is not None:
            return f"{kind} from {low} to {high}"
        if low is not None:
            return f"{kind} >= {low}"
        return kind
    return "text"

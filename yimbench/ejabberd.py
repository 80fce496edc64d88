"""A private ejabberd for ``yim bench pairs --server ejabberd``: the XMPP server the issue
compares yim with, started by the bench on loopback and measured by the same probe.

It runs Debian's package (``apt-get install --no-install-recommends ejabberd``) through
its own ``ejabberdctl foreground``, with everything in one temporary folder: the
ejabberd config, the ``ejabberdctl`` config (its own Erlang node name, cookie and
distribution port, so no epmd is started and nothing is shared with a system ejabberd),
the Mnesia spool and the logs. Every run's config has:

- one c2s listener on 127.0.0.1 (a free port), no TLS (no certificate, so no STARTTLS is
  offered: ``starttls_required: false``), no shaper, ``max_stanza_size`` 256 KiB, and a
  listen backlog of 4096 as yim's (ejabberd's default of 5 makes a burst of connects wait
  for SYN retransmits, seconds each);
- ``auth_method: internal``, passwords stored plain (SASL PLAIN is then one compare),
  accounts made by in-band registration (``mod_register``, XEP-0077) before the run, with
  ``registration_timeout: infinity`` so that many accounts from one address are not refused;
- no traffic shaping (``shaper: {}``, ``c2s_shaper`` none): ejabberd's own limits never
  throttle the load.

Its modules are one of two sets (``--ejabberd-modules``), neither with ``mod_mam``
(relaying only, no message archive, as in the issue's figures):

- ``minimal`` (the default): ``mod_register`` alone — no ``mod_offline``, ``mod_roster``,
  ``mod_stream_mgmt``, ``mod_carboncopy``, ``mod_privacy``, ``mod_ping`` or any other, so
  a message meets no module's hook on its way;
- ``debian``: the module list of Debian's own /etc/ejabberd/ejabberd.yml as shipped (it
  has no ``mod_mam``), ``mod_register`` added: what an ejabberd installed from the package
  runs, its message hooks (privacy, blocking, carbons, offline …) included.

It is stopped by the pid of its Erlang VM (SIGTERM: ``init:stop()``, a clean shutdown),
then the folder is removed.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import psutil

from yimbench.target import Target, free_port, raise_fd_limit
from yimbench.xmpp import stream_header

EJABBERDCTL = "/usr/sbin/ejabberdctl"
#: the XMPP domain of the private server (its users are ``name@DOMAIN``)
DOMAIN = "localhost"
#: what a run's ``params`` says about the server
NOTES: dict[str, object] = {
    "started_by_bench": True,
    "auth": "internal, plain passwords, SASL PLAIN",
    "shapers": "none",
}
#: the system user that Debian's ejabberdctl insists on (it refuses root's own runs)
_USER = "ejabberd"

#: what every profile shares: the listener, the accounts, no traffic shaping
_CONFIG_HEAD = """\
hosts: ["{domain}"]
loglevel: warning
log_rotate_count: 0
hide_sensitive_log_data: true
listen:
  -
    port: {port}
    ip: "127.0.0.1"
    module: ejabberd_c2s
    max_stanza_size: 262144
    starttls_required: false
    backlog: 4096
auth_method: internal
auth_password_format: plain
registration_timeout: infinity
default_db: mnesia
shaper: {{}}
"""

#: ``--ejabberd-modules minimal``: relaying only, one module for the accounts
_MINIMAL = """\
acl: {}
access_rules:
  register:
    allow: all
shaper_rules: {}
modules:
  mod_register:
    access: register
    ip_access: all
"""

#: ``--ejabberd-modules debian``: the module list of Debian's /etc/ejabberd/ejabberd.yml
#: (23.01-1) as shipped, which has no mod_mam, plus mod_register for the accounts; its ACLs
#: and access rules as shipped; its shaper rules with ``c2s_shaper`` none instead of
#: ``normal`` (3,000 bytes/s per connection)
_DEBIAN = """\
acl:
  admin:
    user:
      - ""
  local:
    user_regexp: ""
  loopback:
    ip:
      - 127.0.0.0/8
      - ::1/128
access_rules:
  local:
    allow: local
  c2s:
    deny: blocked
    allow: all
  announce:
    allow: admin
  configure:
    allow: admin
  muc_create:
    allow: local
  pubsub_createnode:
    allow: local
  trusted_network:
    allow: loopback
  register:
    allow: all
shaper_rules:
  max_user_sessions: 10
  max_user_offline_messages:
    5000: admin
    100: all
  c2s_shaper: none
modules:
  mod_adhoc: {}
  mod_admin_extra: {}
  mod_announce:
    access: announce
  mod_avatar: {}
  mod_blocking: {}
  mod_bosh: {}
  mod_caps: {}
  mod_carboncopy: {}
  mod_client_state: {}
  mod_configure: {}
  mod_disco: {}
  mod_fail2ban: {}
  mod_http_api: {}
  mod_last: {}
  mod_mqtt: {}
  mod_muc:
    access:
      - allow
    access_admin:
      - allow: admin
    access_create: muc_create
    access_persistent: muc_create
    access_mam:
      - allow
    default_room_options:
      mam: true
  mod_muc_admin: {}
  mod_offline:
    access_max_user_messages: max_user_offline_messages
  mod_ping: {}
  mod_pres_counter:
    count: 5
    interval: 60
  mod_privacy: {}
  mod_private: {}
  mod_pubsub:
    access_createnode: pubsub_createnode
    plugins:
      - flat
      - pep
  mod_push: {}
  mod_push_keepalive: {}
  mod_register:
    access: register
    ip_access: all
  mod_roster:
    versioning: true
  mod_s2s_dialback: {}
  mod_shared_roster: {}
  mod_sic: {}
  mod_stream_mgmt:
    resend_on_timeout: if_offline
  mod_stun_disco: {}
  mod_vcard:
    search: false
  mod_vcard_xupdate: {}
  mod_version: {}
"""

#: the module sets of ``--ejabberd-modules``, and what a run's ``params`` says of each
PROFILES = {"minimal": _MINIMAL, "debian": _DEBIAN}
PROFILE_NOTES = {
    "minimal": "mod_register only (account set-up)",
    "debian": "Debian's default list (no mod_mam) + mod_register",
}

# sourced by ejabberdctl (a shell script); ERL_DIST_PORT makes it skip epmd altogether
_CTL_CONFIG = """\
ERLANG_NODE={node}
ERL_DIST_PORT={dist_port}
ERL_OPTIONS="-setcookie {cookie} -kernel inet_dist_use_interface {{127,0,0,1}} -env ERL_CRASH_DUMP_BYTES 0{vm_flags}"
EJABBERD_CONFIG_PATH={config}
EJABBERD_BYPASS_WARNINGS=true
"""


#: ``--ejabberd-busy-wait``: the VM flags of each choice. The schedulers spin a while
#: (``+sbwt``, ``+sbwtdcpu``, ``+sbwtdio``, Erlang's default ``medium``) before they sleep,
#: which keeps a vCPU awake between messages; ``none`` makes them sleep at once, as a
#: thread blocked in epoll does, to tell that wake-up latency from the rest of the work.
BUSY_WAIT = {"default": "", "none": " +sbwt none +sbwtdcpu none +sbwtdio none"}
BUSY_WAIT_NOTES = {"default": "Erlang's default (medium)", "none": "off (+sbwt none +sbwtdcpu none +sbwtdio none)"}


class EjabberdMissing(RuntimeError):
    pass


class EjabberdServer:
    """ejabberd in a subprocess on a free loopback port; a context manager giving its Target."""

    def __init__(
        self,
        *,
        modules: str = "minimal",
        busy_wait: str = "default",
        ejabberdctl: str = EJABBERDCTL,
        startup_timeout: float = 60.0,
    ) -> None:
        if modules not in PROFILES:
            raise ValueError(f"ejabberd modules: one of {', '.join(PROFILES)}, not {modules!r}")
        if busy_wait not in BUSY_WAIT:
            raise ValueError(f"ejabberd busy wait: one of {', '.join(BUSY_WAIT)}, not {busy_wait!r}")
        if not Path(ejabberdctl).is_file():
            raise EjabberdMissing(
                f"{ejabberdctl} not found: install Debian's package `ejabberd`"
                " (apt-get install --no-install-recommends ejabberd) to compare with ejabberd"
            )
        self.modules = modules
        self.busy_wait = busy_wait
        self.ejabberdctl = ejabberdctl
        self.startup_timeout = startup_timeout
        self.port = free_port()
        self.tmp = Path(tempfile.mkdtemp(prefix="yim-bench-ejabberd-"))
        self.node = f"yimbench{secrets.token_hex(3)}@localhost"
        self.proc: subprocess.Popen[bytes] | None = None
        self.beam: psutil.Process | None = None

    def _write_config(self) -> None:
        for sub in ("spool", "logs"):
            (self.tmp / sub).mkdir()
        config = self.tmp / "ejabberd.yml"
        config.write_text(_CONFIG_HEAD.format(domain=DOMAIN, port=self.port) + PROFILES[self.modules])
        (self.tmp / "ejabberdctl.cfg").write_text(
            _CTL_CONFIG.format(
                node=self.node,
                dist_port=free_port(),
                cookie=secrets.token_hex(16),
                config=config.as_posix(),
                vm_flags=BUSY_WAIT[self.busy_wait],
            )
        )
        shutil.copy("/etc/ejabberd/inetrc", self.tmp / "inetrc")

    def command(self) -> list[str]:
        t = self.tmp
        return [
            self.ejabberdctl,
            "--config-dir",
            str(t),
            "--ctl-config",
            str(t / "ejabberdctl.cfg"),
            "--spool",
            str(t / "spool"),
            "--logs",
            str(t / "logs"),
            "--node",
            self.node,
            "foreground",
        ]

    def __enter__(self) -> Target:
        raise_fd_limit()
        self._write_config()
        uid: int | None = None
        gid: int | None = None
        if os.geteuid() == 0:
            # ejabberdctl run by root re-runs itself through `su ejabberd`, whose session
            # would hide the VM from our process tree: drop to that user here instead
            pw = pwd.getpwnam(_USER)
            for path in [self.tmp, *self.tmp.rglob("*")]:
                os.chown(path, pw.pw_uid, pw.pw_gid)
            uid, gid = pw.pw_uid, pw.pw_gid
        env = {**os.environ, "HOME": str(self.tmp)}
        with open(self.tmp / "logs" / "console.log", "wb") as log:
            self.proc = subprocess.Popen(
                self.command(),
                cwd=self.tmp,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                user=uid,
                group=gid,
                extra_groups=None if uid is None else [],
            )
        try:
            self._wait_ready()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        assert self.beam is not None
        # the VM is the server: its threads are the schedulers, its children (erl_child_setup,
        # the eimp and memsup helpers) count with it; the ejabberdctl shell above it only waits
        notes = {"server": f"ejabberd {package_version()} (Debian package)", **NOTES}
        notes["modules"] = PROFILE_NOTES[self.modules]
        notes["busy_wait"] = BUSY_WAIT_NOTES[self.busy_wait]
        return Target(url=f"xmpp://127.0.0.1:{self.port}", system="ejabberd", pid=self.beam.pid, notes=notes)

    def _wait_ready(self) -> None:
        """Until the c2s listener answers a stream header with its features."""
        assert self.proc is not None
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ejabberd exited with {self.proc.returncode}: {self.log_tail()}")
            if self.beam is None:
                self.beam = self._find_beam()
            if self.beam is not None and _answers(self.port):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"ejabberd did not answer on 127.0.0.1:{self.port} within {self.startup_timeout}s")
            time.sleep(0.1)

    def _find_beam(self) -> psutil.Process | None:
        assert self.proc is not None
        with contextlib.suppress(psutil.Error):
            for child in psutil.Process(self.proc.pid).children(recursive=True):
                if child.name().startswith("beam"):
                    return child
        return None

    def log_tail(self, lines: int = 20) -> str:
        out = []
        for name in ("console.log", "ejabberd.log", "error.log"):
            with contextlib.suppress(OSError):
                out += (self.tmp / "logs" / name).read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(out[-lines:])

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            beam = self.beam or self._find_beam()
            victims = [beam] if beam is not None else []
            with contextlib.suppress(psutil.Error):
                victims += [c for c in psutil.Process(proc.pid).children(recursive=True) if c not in victims]
            if beam is not None:
                with contextlib.suppress(psutil.Error):
                    beam.send_signal(signal.SIGTERM)  # the VM's clean shutdown; ejabberdctl then exits
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
            # anything of the tree still there (the VM's port helper) goes by its pid
            for p in victims:
                with contextlib.suppress(psutil.Error):
                    p.wait(timeout=5)
                with contextlib.suppress(psutil.Error):
                    p.kill()
        shutil.rmtree(self.tmp, ignore_errors=True)


def _answers(port: int) -> bool:
    """Does the c2s listener answer a stream header with its stream features?"""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
            s.sendall(stream_header(DOMAIN))
            got = b""
            end = time.monotonic() + 2.0
            while b"</stream:features>" not in got and time.monotonic() < end:
                chunk = s.recv(4096)
                if not chunk:
                    return False
                got += chunk
            return b"</stream:features>" in got
    except OSError:
        return False


def package_version() -> str:
    """The installed ejabberd package's version (``?`` where dpkg does not know it)."""
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f", "${Version}", "ejabberd"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "?"

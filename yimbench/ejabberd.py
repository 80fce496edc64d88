"""A private ejabberd for ``yim bench pairs --server ejabberd``: the XMPP server the issue
compares yim with, started by the bench on loopback and measured by the same probe.

It runs Debian's package (``apt-get install --no-install-recommends ejabberd``) through
its own ``ejabberdctl foreground``, with everything in one temporary folder: the
ejabberd config, the ``ejabberdctl`` config (its own Erlang node name, cookie and
distribution port, so no epmd is started and nothing is shared with a system ejabberd),
the Mnesia spool and the logs. The config is relaying only, as in the issue's figures:

- one c2s listener on 127.0.0.1 (a free port), no TLS (no certificate, so no STARTTLS is
  offered: ``starttls_required: false``), no shaper, ``max_stanza_size`` 256 KiB, and a
  listen backlog of 4096 as yim's (ejabberd's default of 5 makes a burst of connects wait
  for SYN retransmits, seconds each);
- ``auth_method: internal``, passwords stored plain (SASL PLAIN is then one compare);
- one module, ``mod_register`` (in-band registration, XEP-0077), used only to make the
  accounts before a run, with ``registration_timeout: infinity`` so that many accounts
  from one address are not refused; no ``mod_mam``, ``mod_offline``, ``mod_roster``,
  ``mod_stream_mgmt``, ``mod_carbons``, ``mod_ping`` or any other;
- no shaper rules and no ``mod_fail2ban``: ejabberd's own limits never throttle the load.

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
    "server": "ejabberd (Debian package), relaying only",
    "modules": "mod_register (account set-up only)",
    "auth": "internal, plain passwords, SASL PLAIN",
    "shapers": "none",
}
#: the system user that Debian's ejabberdctl insists on (it refuses root's own runs)
_USER = "ejabberd"

_CONFIG = """\
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
acl: {{}}
access_rules:
  register:
    allow: all
shaper: {{}}
shaper_rules: {{}}
modules:
  mod_register:
    access: register
    ip_access: all
"""

# sourced by ejabberdctl (a shell script); ERL_DIST_PORT makes it skip epmd altogether
_CTL_CONFIG = """\
ERLANG_NODE={node}
ERL_DIST_PORT={dist_port}
ERL_OPTIONS="-setcookie {cookie} -kernel inet_dist_use_interface {{127,0,0,1}} -env ERL_CRASH_DUMP_BYTES 0"
EJABBERD_CONFIG_PATH={config}
EJABBERD_BYPASS_WARNINGS=true
"""


class EjabberdMissing(RuntimeError):
    pass


class EjabberdServer:
    """ejabberd in a subprocess on a free loopback port; a context manager giving its Target."""

    def __init__(self, *, ejabberdctl: str = EJABBERDCTL, startup_timeout: float = 60.0) -> None:
        if not Path(ejabberdctl).is_file():
            raise EjabberdMissing(
                f"{ejabberdctl} not found: install Debian's package `ejabberd`"
                " (apt-get install --no-install-recommends ejabberd) to compare with ejabberd"
            )
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
        config.write_text(_CONFIG.format(domain=DOMAIN, port=self.port))
        (self.tmp / "ejabberdctl.cfg").write_text(
            _CTL_CONFIG.format(
                node=self.node, dist_port=free_port(), cookie=secrets.token_hex(16), config=config.as_posix()
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
        return Target(url=f"xmpp://127.0.0.1:{self.port}", system="ejabberd", pid=self.beam.pid, notes=dict(NOTES))

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

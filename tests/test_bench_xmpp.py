"""``yim bench pairs --server ejabberd``: a private ejabberd that the bench starts, drives
with its XMPP client, and stops; and the client's stanza scanner on reads cut anywhere.

Needs Debian's package ``ejabberd`` (.ci/run installs it): without it the run test fails
and says so, it is never skipped.
"""

from __future__ import annotations

import argparse
import io
import time

import psutil
import pytest

from yimbench.cli import add_bench_parser, run_bench
from yimbench.ejabberd import BUSY_WAIT_NOTES, PROFILE_NOTES, EjabberdMissing, EjabberdServer
from yimbench.runner import run_on
from yimbench.scenarios.pairs import PairsScenario
from yimbench.xmpp import StanzaScanner, XmppError


def bench_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="yim")
    add_bench_parser(parser.add_subparsers(dest="command"), help_line="bench")
    return parser.parse_args(["bench", *argv])


@pytest.mark.parametrize("modules", ["minimal", "debian"])
def test_pairs_against_a_private_ejabberd_delivers_every_message_and_stops_it(modules: str) -> None:
    args = bench_args(
        "pairs", "--server", "ejabberd", "--ejabberd-modules", modules, "--pairs", "2", "--messages", "10"
    )
    scenario = PairsScenario(args)
    scenario.validate()
    server = EjabberdServer(modules=args.ejabberd_modules)  # fails, naming the package, without ejabberd
    with server as target:
        vm = psutil.Process(target.pid)
        assert vm.name() == "beam.smp" and vm.is_running()
        tree = [vm, *vm.children(recursive=True), psutil.Process(vm.ppid())]  # and ejabberdctl above it
        row = run_on(scenario, target, time.monotonic() + args.timeout, args)
    assert (row["system"], row["sent"], row["received"], row["lost"], row["dups"]) == ("ejabberd", 20, 20, 0, 0)
    assert row["errors"] == 0 and row["msgs_per_s"] > 0 and row["p99_ms"] is not None
    assert row["params"]["modules"] == PROFILE_NOTES[modules] and row["params"]["server"].startswith("ejabberd 2")
    # CPU per message is the VM's and its helpers', as a yim node's is its processes' (the
    # figures of 20 messages are below the clock's tick, so only their presence is checked)
    assert {"node", "erl_child_setup"} <= set(row["server_procs_cpu_us_per_msg"])
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in tree), tree
    assert not server.tmp.exists()


def test_missing_ejabberdctl_names_the_debian_package() -> None:
    with pytest.raises(EjabberdMissing, match="Debian's package `ejabberd`"):
        EjabberdServer(ejabberdctl="/nonexistent/sbin/ejabberdctl")


def test_server_option_interleaves_and_is_checked(capsys: pytest.CaptureFixture[str]) -> None:
    from yimbench.cli import _systems

    args = bench_args("pairs", "--server", "yim,ejabberd", "--workers", "1,2")
    assert _systems(args, PairsScenario) == ["yim-w1", "yim-w2", "ejabberd"]
    assert _systems(bench_args("pairs", "--server", "ejabberd,yim"), PairsScenario) == ["ejabberd", "yim"]
    for argv, says in (
        (["group", "--server", "ejabberd"], "pairs only"),
        (["pairs", "--server", "ejabberd", "--url", "http://127.0.0.1:9"], "drop --url"),
        (["pairs", "--server", "ejabberd", "--compare-baseline"], "relay options"),
        (["pairs", "--server", "ejabberd", "--workers", "2"], "add yim to --server"),
        (["pairs", "--server", "yim,prosody"], "--server takes"),
        (["pairs", "--server", "ejabberd", "--push"], "--push needs a yim node"),
    ):
        assert run_bench(bench_args(*argv), out=io.StringIO()) == 2, argv
        assert says in capsys.readouterr().err, argv


def _stream() -> bytes:
    return (
        b"<?xml version='1.0'?><stream:stream id='1' version='1.0' xmlns='jabber:client'>"
        b"<presence from='a@localhost/bench' to='a@localhost/bench'/> "
        b"<message xml:lang='en' to='r@localhost/bench' from='s@localhost/bench' type='chat' id='3-17'>"
        b"<body>3 17 123456789</body></message>"
        b"<iq type='result' id='x'/>"
        b'<message type="error" id="4-0" to="s@localhost/bench"><body>4 0 1</body>'
        b"<error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>"
        b"<messages-not-a-stanza/>"
        b"<message to='r@localhost' id='5-2'/>"
        b"\n<message to='r@localhost' type='chat' id='6-9'><body>6 9 2 xx&lt;message id=&apos;7-7&apos;</body>"
        b"</message>"
    )


WANTED = [(b"3-17", b"chat"), (b"4-0", b"error"), (b"5-2", b""), (b"6-9", b"chat")]


def test_scanner_finds_each_message_once_however_the_stream_is_cut() -> None:
    data = _stream()
    scanner = StanzaScanner()
    assert scanner.feed(data) == WANTED
    assert scanner.pending() < len(b"<message")
    for cut in range(1, len(data)):  # every place a read can end, a stanza cut across two reads
        scanner = StanzaScanner()
        assert scanner.feed(data[:cut]) + scanner.feed(data[cut:]) == WANTED, cut
    scanner = StanzaScanner()
    assert [found for byte in range(len(data)) for found in scanner.feed(data[byte : byte + 1])] == WANTED


def test_scanner_holds_a_cut_stanza_until_its_end() -> None:
    scanner = StanzaScanner()
    assert scanner.feed(b"<message to='r@localhost' type='chat' id='1-2'><body>1 2 3</bo") == []
    assert scanner.pending() > 0
    assert scanner.feed(b"dy></message><mess") == [(b"1-2", b"chat")]
    assert scanner.feed(b"age id='1-3' type='chat'><body/></message>") == [(b"1-3", b"chat")]
    assert scanner.pending() == 0


def test_scanner_refuses_to_hold_a_stanza_past_its_bound() -> None:
    scanner = StanzaScanner(max_stanza=64)
    assert scanner.feed(b"<message id='1-1' type='chat'><body>" + b"x" * 20) == []
    with pytest.raises(XmppError, match="longer than 64 bytes"):
        scanner.feed(b"x" * 40)
    assert StanzaScanner(max_stanza=64).feed(b" " * 1000) == []  # what is not a stanza is never held


def test_busy_wait_none_starts_the_vm_with_its_schedulers_sleeping_at_once() -> None:
    args = bench_args("pairs", "--server", "ejabberd", "--ejabberd-busy-wait", "none")
    with EjabberdServer(busy_wait=args.ejabberd_busy_wait) as target:
        flags = psutil.Process(target.pid).cmdline()
        assert target.notes["busy_wait"] == BUSY_WAIT_NOTES["none"]
    for flag in ("-sbwt", "-sbwtdcpu", "-sbwtdio"):
        assert flags[flags.index(flag) + 1] == "none", flags
    with EjabberdServer() as target:  # the default leaves Erlang's own setting
        flags = psutil.Process(target.pid).cmdline()
        assert target.notes["busy_wait"] == BUSY_WAIT_NOTES["default"]
    assert not any(f.startswith("-sbwt") for f in flags), flags

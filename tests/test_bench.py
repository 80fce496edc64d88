"""Smoke test of ``yim bench``: tiny runs of each scenario against real subprocess nodes.

Only correctness is asserted (nothing lost or duplicated, the fields are there); the
figures themselves depend on the machine and are never asserted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FIELDS = (
    "system",
    "scenario",
    "params",
    "msgs_per_s",
    "deliveries_per_s",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "max_ms",
    "sent",
    "received",
    "lost",
    "dups",
    "server_rss_mb",
    "kb_per_conn",
    "server_cpu_pct",
    "client_cpu_pct",
)


def bench(*args: str) -> list[dict[str, Any]]:
    """Run ``yim bench ... --json`` in a subprocess (bounded by --timeout); its JSON lines."""
    proc = subprocess.run(
        [sys.executable, "-m", "yim", "bench", *args, "--json", "--timeout", "60"],
        cwd=ROOT,
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


def runs(lines: list[dict[str, Any]], system: str = "yim") -> list[dict[str, Any]]:
    return [r for r in lines if r.get("kind") == "run" and r["system"] == system]


def test_pairs_against_yim_and_the_bare_relay(tmp_path: Path) -> None:
    plots = tmp_path / "plots"
    lines = bench(
        "pairs",
        "--pairs",
        "2",
        "--messages",
        "20",
        "--procs",
        "2",
        "--runs",
        "2",
        "--compare-baseline",
        "--plot",
        str(plots),
    )
    for system in ("yim", "relay"):
        rows = runs(lines, system)
        assert len(rows) == 2
        for row in rows:
            assert all(key in row for key in FIELDS), row
            assert (row["sent"], row["received"], row["lost"], row["dups"]) == (40, 40, 0, 0)
            assert row["params"]["pairs"] == 2 and row["params"]["procs"] == 2
            assert row["server_rss_mb"] > 0
        assert [r["system"] for r in lines if r["kind"] == "median"].count(system) == 1
    yim = runs(lines)[0]
    assert yim["params"]["password_hashing"] == "cheapest"
    (comparison,) = (r for r in lines if r["kind"] == "comparison")
    assert "msgs_per_s" in comparison["ratio"]
    assert (plots / "pairs-latency.svg").read_text().startswith("<svg")


def test_idle_holds_connections_from_two_source_addresses() -> None:
    (row,) = runs(bench("idle", "--conns", "20", "--per-addr", "10", "--hold", "0.2"))
    assert all(key in row for key in FIELDS), row
    assert row["conns"] == 20 and row["failed"] == 0
    assert row["source_addrs"] == 2
    assert row["connects_per_s"] > 0
    assert set(row["server_idle_cpu_pct_by_process"]) == {"node"}  # the one process of --workers 1


def test_sync_catches_up_every_message_once() -> None:
    (row,) = runs(bench("sync", "--messages", "200", "--page", "50", "--senders", "3"))
    assert all(key in row for key in FIELDS), row
    assert (row["sent"], row["received"], row["lost"], row["dups"], row["gaps"]) == (200, 200, 0, 0, 0)
    assert row["pages"] >= 4 and row["head"] == 200


def test_group_in_both_fanout_modes() -> None:
    for mode in ("write", "read"):
        [row] = runs(bench("group", "--members", "12", "--senders", "2", "--messages", "15", "--fanout", mode))
        assert all(key in row for key in FIELDS), row
        assert row["fanout_mode"] == mode
        # every message reaches every member but its sender's own connection, exactly once
        assert (row["sent"], row["received"], row["lost"], row["dups"]) == (30, 30 * 11, 0, 0)


def test_react_in_both_fanout_modes() -> None:
    for mode in ("write", "read"):
        args = ("--members", "8", "--reactors", "2", "--reactions", "10", "--targets", "3", "--fanout", mode)
        [row] = runs(bench("react", *args))
        assert row["fanout_mode"] == mode
        # every change reaches every member but the reactor's own connection
        assert (row["sent"], row["acked"], row["received"], row["lost"], row["errors"]) == (20, 20, 20 * 7, 0, 0)


def test_fanout_sweep_forces_each_mode_and_counts_store_rows(tmp_path: Path) -> None:
    plots = tmp_path / "plots"
    # 60 receipts per point: 60 / (2 x 2) = 15, capped at 10 messages per sender for 3
    # members; 60 / (2 x 5) = 6 for 6 members. Catch-up: 30 messages over 4 groups
    # (8, 8, 7, 7 each) of min(size, 4) members, pages of 7; then 1 and 5 groups of 3.
    lines = bench(
        "fanout-sweep",
        "--sizes",
        "3,6",
        "--deliveries",
        "60",
        "--max-messages",
        "10",
        "--catchup-groups",
        "4",
        "--catchup-messages",
        "30",
        "--catchup-max-members",
        "4",
        "--catchup-page",
        "7",
        "--catchup-repeat",
        "2",
        "--sweep-groups",
        "1,5",
        "--sweep-groups-members",
        "3",
        "--plot",
        str(plots),
    )
    rows = [r for r in runs(lines) if r["sweep"] == "size"]
    assert [(r["members"], r["fanout_mode"]) for r in rows] == [(3, "write"), (3, "read"), (6, "write"), (6, "read")]
    for row in rows:
        assert (row["catchup_groups"], row["catchup_group_members"]) == (4, min(row["members"], 4))
        assert row["catchup_fanout"] == row["fanout_mode"]
        # write fan-out: each fill message is one inbox row per member
        assert row["catchup_fill_inbox_rows"] == (30 * min(row["members"], 4) if row["fanout_mode"] == "write" else 0)
        assert_caught_up(row, 30, {"write": (5, 0), "read": (1, 2 + 2 + 1 + 1)})
    groups = [r for r in runs(lines) if r["sweep"] == "groups"]
    assert [(r["catchup_groups"], r["fanout_mode"]) for r in groups] == [
        (1, "write"),
        (1, "read"),
        (5, "write"),
        (5, "read"),
    ]
    for row in groups:
        assert all(key in row for key in FIELDS), row
        assert row["catchup_group_members"] == row["members"] == 3
        assert (row["sent"], row["received"], row["lost"], row["dups"]) == (30, 30, 0, 0)
        # one group: 30 entries in pages of 7 (5); five groups: 6 entries each (1 page each)
        assert_caught_up(row, 30, {"write": (5, 0), "read": (1, 5)})
    for row in rows:
        assert all(key in row for key in FIELDS), row
        members, mode = row["members"], row["fanout_mode"]
        sent = 2 * {3: 10, 6: 6}[members]
        assert row["params"]["members"] == members and row["params"]["fanout"] == mode
        assert row["messages_per_sender"] == sent // 2
        assert (row["sent"], row["received"], row["lost"], row["dups"]) == (sent, sent * (members - 1), 0, 0)
        # one messages row per message; under write fan-out one inbox row per member too
        inbox = sent * members if mode == "write" else 0
        assert (row["store_message_rows"], row["store_inbox_rows"]) == (sent, inbox)
        assert row["store_writes_per_s"] > 0
        assert row["server_rss_mb"] > 0 and row["server_rss_connected_mb"] > 0
    assert (plots / "fanout-sweep.png").read_bytes().startswith(b"\x89PNG")


def assert_caught_up(row: dict[str, Any], messages: int, pages: dict[str, tuple[int, int]]) -> None:
    """The returning member got every fill message exactly once, with no hole in its inbox
    or in any group, in the (sync, history) pages the protocol implies for its mode."""
    assert row["catchup_messages"] == row["catchup_sent"] == row["catchup_received"] == messages
    assert (row["catchup_lost"], row["catchup_dups"], row["catchup_gaps"]) == (0, 0, 0)
    assert (row["catchup_sync_pages"], row["catchup_history_pages"]) == pages[row["fanout_mode"]]
    assert row["catchup_requests"] == sum(pages[row["fanout_mode"]])
    assert len(row["catchup_ms_runs"]) == 2 and row["catchup_ms"] > 0 and row["catchup_msgs_per_s"] > 0
    assert row["catchup_fill_message_rows"] == messages


def test_mixed_paced_on_one_sqlite_node() -> None:
    # 2 s at 30 msgs/s: 60 planned messages, one-to-one and in 2 groups of 3-5 of 6 users
    (row,) = runs(
        bench("mixed", "--users", "6", "--groups", "2", "--group-min", "3", "--group-max", "5", "--rate", "30",
              "--duration", "2")
    )  # fmt: skip
    assert all(key in row for key in FIELDS), row
    assert row["planned"] == row["sent"] == row["acked"] == 60
    assert 0 < row["group_messages"] < 60
    assert row["received"] == row["expected_deliveries"] > 60  # group messages reach several members
    assert (row["lost"], row["dups"], row["errors"]) == (0, 0, 0)
    assert row["ack_p50_ms"] > 0 and row["p99_ms"] > 0
    assert row["node_cpu_us_per_msg"] > 0 and "postgres_cpu_us_per_msg" not in row


def test_mixed_windowed_on_a_two_node_cluster() -> None:
    """PostgreSQL + Redis + 2 nodes started by the bench: users alternate between the
    nodes, so group messages and half the one-to-one ones cross nodes."""
    (row,) = runs(
        bench("mixed", "--users", "6", "--groups", "2", "--group-min", "4", "--group-max", "6", "--rate", "0",
              "--messages", "10", "--window", "3", "--store", "postgres", "--nodes", "2", "--procs", "2")
    )  # fmt: skip
    assert row["params"]["nodes"] == 2 and row["params"]["procs"] == 2
    assert row["planned"] == row["sent"] == row["acked"] == 60
    assert row["received"] == row["expected_deliveries"]
    assert (row["lost"], row["dups"], row["errors"], row["pg_deadlocks"]) == (0, 0, 0, 0)
    for role in ("node", "postgres", "redis", "generator"):
        assert row[f"{role}_cpu_us_per_msg"] >= 0, role
    assert row["postgres_cpu_us_per_msg"] > 0 and row["node_cpu_us_per_msg"] > 0


def test_pairs_on_postgres_reports_cpu_per_process_and_statements() -> None:
    # 300 messages: PostgreSQL's CPU is read in clock ticks (10 ms), and 60 could cost less
    (row,) = runs(bench("pairs", "--pairs", "3", "--messages", "100", "--store", "postgres", "--pg-stat-statements"))
    assert (row["sent"], row["received"], row["lost"], row["dups"]) == (300, 300, 0, 0)
    assert row["params"]["store"].startswith("postgres")
    assert row["postgres_cpu_us_per_msg"] > 0
    assert row["stack_cpu_us_per_msg"] >= row["node_cpu_us_per_msg"] + row["postgres_cpu_us_per_msg"] - 0.2
    sends = [s for s in row["pg_statements"] if "yim_send" in s["query"]]
    # one call per run of sends (at most one per message), counted from when the load began
    assert sends and 0 < sends[0]["calls"] <= 300


def test_cluster_options_are_checked() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "yim", "bench", "mixed", "--nodes", "3"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "--store postgres" in proc.stderr


def test_workers_option_is_checked() -> None:
    for args, says in (
        (["--workers", "0"], "at least 1"),
        (["--workers", "1,x"], "comma-separated"),
        (["--workers", "2", "--store", "postgres"], "embedded store"),
        (["--workers", "1,2", "--compare-baseline"], "one --workers count"),
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "yim", "bench", "pairs", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 2 and says in proc.stderr, (args, proc.stderr)


def test_pairs_at_one_and_two_workers_counts_every_process() -> None:
    lines = bench("pairs", "--pairs", "4", "--messages", "20", "--workers", "1,2")
    for system in ("yim-w1", "yim-w2"):
        (row,) = runs(lines, system)
        assert (row["sent"], row["received"], row["lost"], row["dups"]) == (80, 80, 0, 0), system
    (two,) = runs(lines, "yim-w2")
    assert two["params"]["workers"] == 2
    # the CPU per message is the store process's ("node"), its workers' and its search
    # indexer process's together (search_indexer "auto": a process at 2 workers, a thread at 1)
    procs = two["server_procs_cpu_us_per_msg"]
    assert {"node", "workers", "indexer"} <= set(procs), procs
    (one,) = runs(lines, "yim-w1")
    assert "indexer" not in one.get("server_procs_cpu_us_per_msg", {}), one

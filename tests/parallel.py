"""``make test`` on several cores: the test files are split into ``--jobs`` groups of about
equal measured time, and each group runs in its own pytest process, all at once.

Why it pays on 2 cores: much of the suite waits on real time, not on a CPU — load runs
paced at a fixed rate, SIGSTOPped or killed nodes, ping and lease timeouts, browsers,
subprocess starts — so a second process fills those waits with another group's work.

Why it is safe: every pytest process is a session of its own, with its own PostgreSQL
cluster, Redis servers and temporary folders (tests/services.py, pytest's ``tmp_path``), on
ports picked free at the moment of use; no test shares anything with another process but
the machine. A file's tests stay together in one process, in their usual order, so
module-scoped servers and the order a module relies on are unchanged.

The first group's output is shown as it runs; the others' is written to files and shown
after, each under a header. The exit status is the first failing group's (0 when all passed).

    python -m tests.parallel --jobs 2                 # what `make test` runs: every test file
    python -m tests.parallel tests/test_a.py tests/test_b.py   # these files, split
    python -m tests.parallel -- tests/test_a.py -x    # pytest arguments: one process, as given
    python -m tests.parallel --dry-run                # print the groups and their weights
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: Seconds each file took alone (``pytest tests/FILE --durations=0``, session time) on the
#: project's 2-core machine; only the balance of the groups depends on them, never which
#: tests run. A file missing here (a new one) counts as DEFAULT_WEIGHT_S; add it once measured.
WEIGHTS_S: dict[str, float] = {
    "test_cluster_faults.py": 135, "test_crash_harness.py": 93, "test_bench.py": 89, "test_sdk_failover.py": 74,
    "test_push.py": 55, "test_cluster_state.py": 50, "test_openapi.py": 50, "test_web_features.py": 38,
    "test_web_admin_tab.py": 31, "test_webhooks.py": 23, "test_web.py": 22, "test_cluster.py": 21,
    "test_admin_cli.py": 19, "test_relations.py": 17, "test_web_edit.py": 17, "test_cluster_redis_restart.py": 16,
    "test_media.py": 15, "test_serve_command.py": 15, "test_cluster_fencing.py": 14, "test_groups.py": 14,
    "test_pg_lock_order.py": 14, "test_service.py": 14, "test_hostile_live.py": 13, "test_web_fixes.py": 13,
    "test_reply_budget.py": 11, "test_reports.py": 11, "test_web_mentions.py": 11, "test_authz.py": 10,
    "test_erase.py": 10, "test_multidevice.py": 10, "test_reactions.py": 10, "test_reply_forward.py": 10,
    "test_terminal.py": 10, "test_web_admin.py": 10, "test_web_reply.py": 10, "test_accounts.py": 9,
    "test_data_lock.py": 9, "test_delivery.py": 9, "test_protocol_fixes.py": 9, "test_bench_package.py": 8,
    "test_cluster_messages.py": 8, "test_export.py": 8, "test_store_parity.py": 8, "test_web_notify.py": 8,
    "test_admin.py": 7, "test_avatar.py": 7, "test_cluster_alone.py": 7, "test_cluster_keys.py": 7,
    "test_edit.py": 7, "test_property.py": 7, "test_search.py": 7, "test_web_reports.py": 7,
    "test_bench_rawws.py": 6, "test_connect_races.py": 6, "test_fuzz_codec.py": 6, "test_shop_search.py": 6,
    "test_tls_secrets.py": 6, "test_web_avatar.py": 6, "test_writer_memory.py": 6, "test_crash.py": 5,
    "test_push_providers.py": 5, "test_sdk_edit.py": 5, "test_smoke.py": 5, "test_upgrade.py": 5,
    "test_web_erase.py": 5, "test_web_i18n.py": 5, "test_words.py": 5, "test_bad_input.py": 4,
    "test_cluster_admin.py": 4, "test_pg_send_batch.py": 4, "test_sdk_groups.py": 4, "test_workers_serve.py": 4,
    "test_limits.py": 3, "test_metrics_shutdown.py": 3, "test_quotes_parity.py": 3, "test_remote_store.py": 3,
    "test_reply_race.py": 3, "test_sdk_reply_forward.py": 3, "test_sync_payload.py": 3, "test_web_export.py": 3,
    "test_web_push_settings.py": 3, "test_web_push_sw.py": 3, "test_web_reactions.py": 3,
    "test_web_shop_search.py": 3, "test_parallel.py": 4,
    "test_client_core.py": 2, "test_hide.py": 2, "test_layers.py": 2,
    "test_rules_push.py": 2, "test_terminal_mentions.py": 2, "test_terminal_reply.py": 2,
    "test_web_group_hole.py": 2, "test_ipc_channel.py": 1, "test_redis_pool.py": 1, "test_rules_admin.py": 1,
    "test_rules_edits.py": 1, "test_rules_erase.py": 1, "test_rules_groups.py": 1, "test_rules_quotes.py": 1,
    "test_rules_reactions.py": 1, "test_rules_relations.py": 1, "test_rules_reports.py": 1,
    "test_rules_service.py": 1, "test_rules_timeline.py": 1, "test_sdk_push_settings.py": 1,
    "test_search_index.py": 1, "test_web_css.py": 1, "test_workers_bus.py": 1,
}  # fmt: skip
DEFAULT_WEIGHT_S = 6.0


def split(files: list[str], jobs: int) -> list[list[str]]:
    """Longest first, each file to the group with the least weight so far; every group's
    files are then put back in name order (the order one pytest process runs them in)."""
    groups: list[list[str]] = [[] for _ in range(jobs)]
    loads = [0.0] * jobs
    for f in sorted(files, key=lambda f: (-WEIGHTS_S.get(Path(f).name, DEFAULT_WEIGHT_S), f)):
        i = loads.index(min(loads))
        groups[i].append(f)
        loads[i] += WEIGHTS_S.get(Path(f).name, DEFAULT_WEIGHT_S)
    return [sorted(g) for g in groups if g]


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    """After Ctrl-C: the terminal interrupted every group already, and a second interrupt
    would cut pytest's teardown (which stops its servers) short; so wait for them first,
    and interrupt only a group that was not reached (this process alone was signalled)."""
    deadline = time.monotonic() + 15
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGINT)
    for p in procs:
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=10)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # everything after `--` is pytest's, untouched by this parser
    ours, pytest_args = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(
        prog="python -m tests.parallel", usage="%(prog)s [--jobs N] [--dry-run] [FILE ...] [-- PYTEST_ARG ...]"
    )
    parser.add_argument("--jobs", type=int, default=int(os.environ.get("YIM_TEST_JOBS", "2")))
    parser.add_argument("--dry-run", action="store_true", help="print the groups, run nothing")
    parser.add_argument("files", nargs="*", help="test files to split (default: every tests/test_*.py)")
    args = parser.parse_args(ours)
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    pytest = [sys.executable, "-m", "pytest"]
    if args.jobs == 1 or pytest_args:
        # A chosen selection (files, -k, -x ...) is run as asked, in one process.
        command = [*pytest, *args.files, *pytest_args]
        if args.dry_run:
            print(" ".join(command))
            return 0
        return subprocess.call(command, cwd=ROOT)
    files = args.files or sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "tests").glob("test_*.py"))
    groups = split(files, args.jobs)
    if args.dry_run:
        for i, g in enumerate(groups, 1):
            weight = sum(WEIGHTS_S.get(Path(f).name, DEFAULT_WEIGHT_S) for f in g)
            print(f"group {i}: {len(g)} files, ~{weight:.0f} s: {' '.join(g)}")
        return 0
    logs = Path(tempfile.mkdtemp(prefix="yim-test-groups-"))
    procs: list[subprocess.Popen[bytes]] = []
    started = time.monotonic()
    try:
        for i, group in enumerate(groups):
            if i == 0:
                procs.append(subprocess.Popen([*pytest, *group], cwd=ROOT))
                continue
            # shown later on the same terminal: coloured as the first group is
            color = ["--color=yes"] if sys.stdout.isatty() else []
            with open(logs / f"group{i + 1}.log", "wb") as out:
                procs.append(subprocess.Popen([*pytest, *color, *group], cwd=ROOT, stdout=out, stderr=out))
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt:
        _stop(procs)
        shutil.rmtree(logs, ignore_errors=True)
        return 130
    for i in range(1, len(groups)):
        sys.stdout.write(f"\n{'=' * 30} group {i + 1} of {len(groups)} (ran alongside group 1) {'=' * 30}\n")
        sys.stdout.flush()
        with open(logs / f"group{i + 1}.log", "rb") as f:
            shutil.copyfileobj(f, sys.stdout.buffer)
        sys.stdout.buffer.flush()
    shutil.rmtree(logs, ignore_errors=True)
    summary = ", ".join(f"group {i + 1}: {'passed' if c == 0 else f'exit {c}'}" for i, c in enumerate(codes))
    print(f"\n{len(groups)} groups in {time.monotonic() - started:.0f} s: {summary}")
    return next((c for c in codes if c != 0), 0)


if __name__ == "__main__":
    sys.exit(main())

"""Counts that reliability and security tests report (kills survived, messages checked,
inputs fuzzed ...). tests/conftest.py prints them in pytest's terminal summary, so they
show in ``make test`` output without ``-s``."""

from __future__ import annotations

LINES: list[str] = []


def record(line: str) -> None:
    LINES.append(line)

"""``yim admin reports | report | resolve``: the report queue of a running node, over its
HTTP API (docs/protocol.md §19.9), as a server admin (``--user``)."""

from __future__ import annotations

import argparse
from typing import Any

from yim.client.terminal.admin import _as_user, _common, _show, _when
from yim.client.terminal.cli import _one_shot

_REPORTS = "/api/v1/admin/reports"


def _target(r: dict[str, Any]) -> str:
    if r["target"] == "user":
        return f"user {r['user_id']}"
    return f"message {r['conv_id']}:{r['seq']} by {r['user_id']}"


def _report_lines(r: dict[str, Any]) -> list[str]:
    head = f"{r['report_id']}  {_when(r['created_at'])}  {r['status']}  {r['category']}  {_target(r)}"
    head += f"  reported by {r['reporter_id']}"
    out = [head]
    if r["text"]:
        out.append(f"    says: {r['text']}")
    if r["message"] is not None:
        out.append(f"    message ({r['message']['kind']}, {_when(r['message']['created_at'])}): {r['message']['body']}")
    if r["status"] == "resolved":
        by = r["resolved_by"] or "host operator"
        note = f": {r['note']}" if r["note"] else ""
        out.append(f"    resolved {_when(r['resolved_at'])} by {by}: {r['resolution']}{note}")
    return out


async def _reports(args: argparse.Namespace) -> int:
    params = {"status": args.status, "limit": str(args.limit)}
    if args.before:
        params["before"] = args.before
    page = await _as_user(args, lambda api: api.request("GET", _REPORTS, params=params))

    def lines(p: dict[str, Any]) -> list[str]:
        out = [line for r in p["reports"] for line in _report_lines(r)]
        return out + ([f"(older: --before {p['next_before']})"] if p["next_before"] else [])

    return _show(args, page, lines)


async def _report(args: argparse.Namespace) -> int:
    detail = await _as_user(args, lambda api: api.request("GET", f"{_REPORTS}/{args.report_id}"))

    def lines(d: dict[str, Any]) -> list[str]:
        seq = d["report"]["seq"]
        around = [
            f"  {'>' if e['seq'] == seq else ' '} {e['seq']}  {e['sender_id']}  "
            + ("(recalled)" if e["recalled"] else f"{e['kind']} {e['body']}")
            for e in d["context"]
        ]
        return _report_lines(d["report"]) + (["  now in the conversation:", *around] if around else [])

    return _show(args, detail, lines)


async def _resolve(args: argparse.Namespace) -> int:
    body = {"action": args.action, "note": args.note}
    path = f"{_REPORTS}/{args.report_id}/resolve"
    answer = await _as_user(args, lambda api: api.request("POST", path, body=body))

    def lines(a: dict[str, Any]) -> list[str]:
        done = f"resolved {a['closed']} report(s) of {_target(a['report'])}: {a['report']['resolution']}"
        if a["recall_seq"] is not None:
            done += f" (recall entry {a['recall_seq']})"
        if a["report"]["resolution"] == "disable":
            done += f" (sessions ended: {a['revoked']})"
        return [done]

    return _show(args, answer, lines)


def add_report_parsers(admin: Any) -> None:
    """Add ``reports``, ``report`` and ``resolve`` to ``yim admin``."""
    reports = admin.add_parser("reports", help="the report queue: open reports (--status), newest first")
    _common(reports)
    reports.add_argument("--status", choices=["open", "resolved", "all"], default="open")
    reports.add_argument("--before", metavar="ID", help="the next page: the id the previous one ended with")
    reports.add_argument("--limit", type=int, default=50, help="rows per page (1…1000, default 50)")
    reports.set_defaults(func=_one_shot(_reports))

    report = admin.add_parser("report", help="one report, with the conversation around its message")
    _common(report)
    report.add_argument("report_id", metavar="REPORT_ID")
    report.set_defaults(func=_one_shot(_report))

    resolve = admin.add_parser("resolve", help="resolve a report and the other open reports of its target")
    _common(resolve)
    resolve.add_argument("report_id", metavar="REPORT_ID")
    resolve.add_argument(
        "action",
        choices=["dismiss", "recall", "disable"],
        help="dismiss; recall the message for everyone; disable the reported user (the sender)",
    )
    resolve.add_argument("--note", default="", help="kept on the reports and in the audit log")
    resolve.set_defaults(func=_one_shot(_resolve))

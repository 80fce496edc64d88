"""Reports: a user reports a message or a user (``report``); server admins work the queue
(``admin_reports``, ``admin_report``) and resolve each report by one action
(``admin_resolve``: dismiss, recall the message for everyone, disable the sender).

The store checks everything inside its transactions (yim/storage/reports.py): what the
reporter may see, repeats, the hourly limit; the admin, and the audit row of a resolution.
Here: the request's shape, the audit entries, and telling the devices concerned afterwards
(the recall entry, as any recall; the disabled user's connections closed on every node, as
admin_disable does)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import msgspec

from yim.protocol import frames as f
from yim.protocol.close import CLOSE_DISABLED
from yim.protocol.errors import YimError
from yim.protocol.ids import parse_id
from yim.services.admin import audit_entry
from yim.services.delivery import publish_entry
from yim.storage.media import MediaRec
from yim.storage.records import SessionRec
from yim.storage.reports import ContextEntry, NewReport, ReportRec
from yim.storage.rules.reports import outcome

if TYPE_CHECKING:
    from yim.services.context import Context, Device


def report_out(r: ReportRec) -> f.AdminReportOut:
    snapshot = None
    if r.snap_kind is not None and r.snap_body is not None and r.snap_at is not None:
        snapshot = f.ReportedMessageOut(kind=r.snap_kind, body=msgspec.Raw(r.snap_body), created_at=r.snap_at)
    return f.AdminReportOut(
        report_id=str(r.id),
        reporter_id=str(r.reporter_id),
        target=r.kind,
        user_id=str(r.user_id),
        conv_id=None if r.conv_id is None else str(r.conv_id),
        seq=r.seq,
        msg_id=None if r.msg_id is None else str(r.msg_id),
        message=snapshot,
        category=r.category,
        text=r.text,
        created_at=r.created_at,
        status=r.status,
        resolved_at=r.resolved_at,
        resolved_by=None if r.resolved_by is None else str(r.resolved_by),
        resolution=r.resolution,
        note=r.note,
    )


def my_report_out(r: ReportRec) -> f.MyReportOut:
    """A report as its reporter sees it: the outcome, not the admin, the action or the note."""
    return f.MyReportOut(
        report_id=str(r.id),
        target=r.kind,
        user_id=str(r.user_id),
        conv_id=None if r.conv_id is None else str(r.conv_id),
        seq=r.seq,
        category=r.category,
        text=r.text,
        created_at=r.created_at,
        status=r.status,
        resolved_at=r.resolved_at,
        outcome=outcome(r.resolution),
    )


_notice = msgspec.json.Encoder()


def _context_out(e: ContextEntry) -> f.ReportContextOut:
    return f.ReportContextOut(
        seq=e.seq,
        sender_id=str(e.sender_id),
        kind=e.kind,
        body=msgspec.Raw(e.body),
        created_at=e.created_at,
        recalled=e.recalled,
    )


async def report(node: Context, session: SessionRec, req: f.Report, origin: Device | None = None) -> f.ReportOut:
    """File a report of a message or of a user (not both). The text is the reporter's own
    words to the admins, kept as written: the word filter does not apply to it."""
    message = req.conv_id is not None or req.seq is not None
    if message == (req.user_id is not None) or (message and (req.conv_id is None or req.seq is None)):
        raise YimError("bad_request", "name a message (conv_id and seq) or a user (user_id)")
    new = NewReport(
        id=node.ids.next_id(),
        reporter_id=session.user_id,
        category=req.category,
        text=req.text.strip(),
        created_at=int(time.time() * 1000),
        conv_id=None if req.conv_id is None else parse_id(req.conv_id, "conversation"),
        seq=req.seq,
        user_id=None if req.user_id is None else parse_id(req.user_id, "user"),
    )
    rec, duplicate = await node.store.reports.file(new, node.settings.report_limit_per_hour)
    return f.ReportOut(report_id=str(rec.id), status=rec.status, created_at=rec.created_at, duplicate=duplicate)


async def my_reports(
    node: Context, session: SessionRec, req: f.MyReports, origin: Device | None = None
) -> f.MyReportPage:
    """The caller's own reports, newest first, with the outcome of each resolved one."""
    before = parse_id(req.before, "report") if req.before else None
    rows = await node.store.reports.my_reports(session.user_id, before, req.limit + 1)
    more = len(rows) > req.limit
    page = rows[: req.limit]
    return f.MyReportPage(
        reports=[my_report_out(r) for r in page], next_before=str(page[-1].id) if more and page else None
    )


async def reports(
    node: Context, session: SessionRec | None, req: f.AdminReports, origin: Device | None = None
) -> f.AdminReportPage:
    actor = None if session is None else session.user_id
    before = parse_id(req.before, "report") if req.before else None
    status = None if req.status == "all" else req.status
    rows = await node.store.reports.reports(actor, status, before, req.limit + 1)
    more = len(rows) > req.limit
    page = rows[: req.limit]
    return f.AdminReportPage(
        reports=[report_out(r) for r in page], next_before=str(page[-1].id) if more and page else None
    )


async def report_detail(
    node: Context, session: SessionRec | None, req: f.AdminReport, origin: Device | None = None
) -> f.AdminReportDetail:
    actor = None if session is None else session.user_id
    rec, context = await node.store.reports.report(actor, parse_id(req.report_id, "report"))
    return f.AdminReportDetail(report=report_out(rec), context=[_context_out(e) for e in context])


async def resolve(
    node: Context, session: SessionRec | None, req: f.AdminResolve, origin: Device | None = None
) -> f.AdminResolveOut:
    """Resolve a report and every open report of the same target. ``recall``: the message is
    recalled for everyone, the admin named as the recall entry's sender; ``disable``: the
    reported user (the message's sender) is disabled as by admin_disable, and every session
    of theirs ends on every node. The audit log gets a ``report_resolve`` row (and, for
    ``disable``, the ``disable`` row) in the same transaction."""
    actor = None if session is None else session.user_id
    report_id = parse_id(req.report_id, "report")
    # The report's target never changes: read first, for what the resolution locks.
    rec, _ = await node.store.reports.report(actor, report_id)
    entry = audit_entry(
        "report_resolve", f"report:{report_id}", resolution=req.action, reported=rec.target, note=req.note
    )
    disable_entry = audit_entry("disable", f"user:{rec.user_id}", reason=f"report {report_id}", note=req.note)
    done = await node.store.reports.resolve(actor, rec, req.action, req.note, node.ids.next_id(), entry, disable_entry)
    if done.recall is not None:
        publish_entry(node, done.recall, origin)
    if req.action == "disable":
        node.accounts.sessions_ended(rec.user_id, done.revoked, "account disabled", CLOSE_DISABLED)
    # Each reporter's online devices learn the outcome at once (a notice: one offline
    # finds it with my_reports); never the admin, the action or the note.
    for r in done.resolved:
        node.bus.publish_notice([r.reporter_id], "report", _notice.encode(my_report_out(r)))
    return f.AdminResolveOut(
        report=report_out(done.report),
        closed=done.closed,
        recall_seq=None if done.recall is None else done.recall.message.seq,
        revoked=len(done.revoked),
    )


async def report_media(node: Context, session: SessionRec, report_id: int, media_id: int) -> MediaRec:
    """The image, video or file of a reported message, for a server admin judging the report
    (who is usually no member of its conversation). Only through a report, and only the file
    its snapshot carries: the reporter could see it, and chose to show it to the admins.
    Not audited: reading a report is not, and the resolution is (docs/security.md §8.2)."""
    return await node.store.reports.report_media(session.user_id, report_id, media_id)

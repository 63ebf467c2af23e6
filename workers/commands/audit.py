"""``copyspan audit``, ``report`` and ``review``: batch audits and what reviewers make of them."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.config import Config
from pipeline.errors import PermanentError
from workers.commands.output import emit

VERDICT_CHOICES = ("copy", "not_copy", "licensed", "quarantined")  # pipeline/review/verdicts.py


def cmd_audit(args, config: Config) -> int:
    from workers.audit import Audit

    audit = Audit(config, args.index, args.out, args.ray_address, report=not args.no_report)
    summary = audit.run(args.source, progress=not args.quiet)
    return 1 if summary["failed"] else 0


def cmd_report(args, config: Config) -> int:
    from pipeline.review.report import write_report

    out = Path(args.audit_out)
    if not (out / "results.jsonl").exists():
        raise PermanentError(f"{out} holds no audit (results.jsonl)")
    target = write_report(out, args.html)
    emit({"report": str(target)}, args.json, str(target))
    return 0


def cmd_review(args, config: Config) -> int:
    """Record (mark) or show (list) reviewers' verdicts, kept beside the index."""
    import getpass

    from pipeline.review.verdicts import Verdicts

    verdicts = Verdicts.beside(args.index)
    try:
        if args.review_command == "mark":
            span = tuple(args.reference_span) if args.reference_span else None
            sha = args.sha256 or _audited_sha(args.audit, args.query_id)
            bank = _bank_of(args.index, args.reference_id)  # the verdict acts within it
            verdict = verdicts.mark(args.query_id, args.reference_id, args.verdict, args.note,
                                    args.by or getpass.getuser(), sha, span, bank)  # fmt: skip
            emit(verdict.to_dict(), args.json,
                  f"{verdict.verdict}: {verdict.query_id} / {verdict.reference_id}")  # fmt: skip
            return 0
        for verdict in verdicts.list(args.reference_id, args.query_id):
            line = (f"{verdict.at}  {verdict.verdict:11s} {verdict.query_id} / "
                    f"{verdict.reference_id}  by {verdict.by}  {verdict.note}")  # fmt: skip
            emit(verdict.to_dict(), args.json, line)
        return 0
    finally:
        verdicts.close()


def _bank_of(index_dir: str, reference_id: str) -> str | None:
    """The bank of a reference of the index at ``index_dir`` (None: not there, or no index)."""
    from pipeline.index import ReferenceIndex

    if not (Path(index_dir) / "catalog.sqlite").exists():
        return None
    with ReferenceIndex(index_dir, create=False) as index:
        ref = index.get(reference_id)
    return ref.bank if ref else None


def _audited_sha(audit: str | None, query_id: str) -> str | None:
    """The content hash an audit recorded for ``query_id`` (None: not audited, or no hash)."""
    if not audit:
        return None
    for line in (Path(audit) / "results.jsonl").read_text().splitlines():
        query = json.loads(line)["query"]
        if query["id"] == query_id:
            return query.get("sha256")
    raise PermanentError(f"no input {query_id!r} in the audit {audit}")


def register(commands, common) -> None:
    audit = commands.add_parser("audit", parents=[common], help="resumable batch audit on Ray")
    audit.add_argument("source", help="a folder (recursive) or a manifest (.csv/.jsonl: id,path)")
    audit.add_argument("--index", required=True)
    audit.add_argument("--out", required=True, help="results.jsonl, segments.csv, summary.json")
    audit.add_argument("--ray-address", help="an existing Ray cluster (default: local Ray)")
    audit.add_argument("--no-report", action="store_true", help="skip OUT/report.html")
    audit.set_defaults(handler=cmd_audit)

    report = commands.add_parser("report", parents=[common], help="HTML review page of an audit")
    report.add_argument("audit_out", help="the audit's --out folder")
    report.add_argument("--html", help="where to write it (default AUDIT_OUT/report.html)")
    report.set_defaults(handler=cmd_report)

    review = commands.add_parser("review", help="reviewers' verdicts on matches")
    review_commands = review.add_subparsers(dest="review_command", required=True)
    mark = review_commands.add_parser("mark", parents=[common], help="record a verdict")
    mark.add_argument("query_id", help="the upload's id, or '*' for the whole reference")
    mark.add_argument("reference_id")
    mark.add_argument("--verdict", required=True, choices=VERDICT_CHOICES)
    mark.add_argument("--note", default="")
    mark.add_argument("--by", help="who (default: the user)")
    mark.add_argument("--index", required=True)
    mark.add_argument("--sha256", help="the upload's content hash (else from --audit)")
    mark.add_argument("--audit", help="an audit's --out folder holding the upload")
    mark.add_argument("--reference-span", nargs=2, type=float, metavar=("START", "END"),
                      help="licensed: only this span of the reference (seconds)")  # fmt: skip
    mark.set_defaults(handler=cmd_review)
    listing = review_commands.add_parser("list", parents=[common], help="show verdicts")
    listing.add_argument("--index", required=True)
    listing.add_argument("--reference-id")
    listing.add_argument("--query-id")
    listing.set_defaults(handler=cmd_review)

"""Action Builder tag hygiene as assets: scan -> mismatches -> CSV report, email, tag cleanup."""

import csv
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal, Optional

import dagster as dg
import pandas as pd
from pydantic import Field

from .. import pools
from ..metadata import md_preview
from ..notify.resources import Attachment, EmailSender, Recipients, split_addresses
from ..privacy import cipher
from ..warehouse.audit import previous_attempts, record, run_identity
from ..warehouse.resources import AuditWarehouse
from .cleanup import DeletionOutcome, execute_deletions, merge_outcomes
from .journal import DeletionJournal, deliver_journal
from .records import Connection, Person, Tagging, Unit, from_frame, to_frame
from .resources import ActionBuilderResource
from .rules import (
    REPORT_COLUMNS,
    REPORT_NAME_COLUMNS,
    Mismatch,
    PlannedDeletion,
    evaluate,
    plan_deletions,
    report_rows,
)

GROUP = "action_builder"
KIND = {"dagster/kind/actionbuilder": ""}


class ScanConfig(dg.Config):
    """Which people to read: those modified recently (daily) or everyone (monthly)."""

    mode: Literal["incremental", "full"] = Field(
        default="incremental",
        description="incremental: modified since the last successful run; full: everyone.",
    )
    since: Optional[str] = Field(
        default=None, description="ISO timestamp overriding the incremental starting point."
    )
    strategy: Literal["auto", "per_person", "per_tag"] = Field(
        default="auto", description="How membership taggings are read; auto picks the cheaper."
    )
    connections: Literal["auto", "per_person", "per_unit"] = Field(
        default="auto",
        description="How unit connections are read; auto reads them per unit on full scans (~25x fewer requests).",
    )
    overlap_minutes: int = Field(
        default=60, description="Re-read people modified this long before the last run started."
    )


SCAN_STARTED_AT = "scan_started_at"  # ab_scan metadata: when the scan's first read began


def resolve_since(context: dg.AssetExecutionContext, config: ScanConfig) -> datetime | None:
    """Incremental starting point: explicit, else when the last successful scan started (minus
    overlap), else a day ago.

    The last scan is the latest ``ab_scan`` materialization, whatever job launched it (the
    asset graph's ``__ASSET_JOB`` is shared with every other asset) and however often its run
    was re-executed: its own recorded start, not a run's.
    """
    if config.mode == "full":
        return None
    if config.since:
        return _aware(datetime.fromisoformat(config.since.replace("Z", "+00:00")))
    last = last_scan_started_at(context.instance)
    if last is not None:
        return last - timedelta(minutes=config.overlap_minutes)
    return datetime.now(UTC) - timedelta(days=1)


def last_scan_started_at(instance: dg.DagsterInstance) -> datetime | None:
    event = instance.get_latest_materialization_event(dg.AssetKey("ab_scan"))
    materialization = event.asset_materialization if event is not None else None
    entry = materialization.metadata.get(SCAN_STARTED_AT) if materialization is not None else None
    if entry is None:
        return None
    return _aware(datetime.fromisoformat(str(entry.value)))


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@dg.multi_asset(
    group_name=GROUP,
    pool=pools.ACTION_BUILDER,
    outs={
        "ab_people": dg.AssetOut(
            description="Entities of the campaign read by the scan (people and units).", tags=KIND
        ),
        "ab_connections": dg.AssetOut(description="Connections of the scanned people.", tags=KIND),
        "ab_units": dg.AssetOut(description="Unit entities the people are connected to.", tags=KIND),
        "ab_taggings": dg.AssetOut(
            description="Unit/type/status taggings of judged people and their unit connections.", tags=KIND
        ),
        "ab_scan": dg.AssetOut(description="What the scan covered and what it cost in requests.", tags=KIND),
    },
    check_specs=[
        dg.AssetCheckSpec(
            "no_quarantined_people",
            asset="ab_people",
            description="Every scanned person could be read (quarantined people are never judged).",
        )
    ],
)
def action_builder_campaign(
    context: dg.AssetExecutionContext, config: ScanConfig, action_builder: ActionBuilderResource
):
    """Read the campaign: people (recently modified or all), unit connections, units, taggings."""
    since = resolve_since(context, config)
    client = action_builder.open_client(log=context.log)
    run = context.run
    checkpoint = action_builder.checkpoint(
        f"{run.root_run_id or run.run_id}:{config.mode}:{client.campaign_id}"
    )
    try:
        snap = action_builder.scanner(client, checkpoint, context.log).scan(
            since=since, strategy=config.strategy, connections=config.connections
        )
        checkpoint.complete()
    finally:
        checkpoint.close()
        client.api.close()

    people = to_frame(snap.entities, Person)
    people["quarantine_reason"] = people["person_id"].map(snap.quarantined)
    connections = to_frame(snap.connections, Connection)
    units = to_frame(list(snap.units.values()), Unit)
    taggings = to_frame(snap.taggings, Tagging)
    persons = len(snap.people)
    req = snap.requests
    summary = {
        "mode": config.mode,
        "since": since.isoformat() if since else None,
        "strategy": snap.strategy,
        "connections_strategy": snap.connections_strategy,
        "entities": len(snap.entities),
        "people": persons,
        "judged": len(snap.judged_person_ids),
        "quarantined": len(snap.quarantined),
        "requests": req["requests"],  # every attempt of this logical run
        "rate_limited_429": req["rate_limited_429"],
        "retries": req["retries"],
        "attempt_requests": snap.attempt_requests.get("requests", req["requests"]),
        "seconds": round(snap.seconds, 3),
        "requests_by_kind": req["by_kind"],
        "resumed_items": snap.resumed_items,
        "campaign_id": client.campaign_id,
        "notes": "; ".join(snap.notes) or None,
        SCAN_STARTED_AT: datetime.fromtimestamp(snap.first_started_at or snap.started_at, tz=UTC).isoformat(),
    }
    context.log.info(
        f"scan done: {persons} people ({summary['judged']} judged) in {snap.seconds:.1f}s with "
        f"{req['requests']} requests ({req['requests'] / max(persons, 1):.2f}/person, "
        f"{req['rate_limited_429']} rate-limited); taggings read {snap.strategy}, "
        f"connections read {snap.connections_strategy}"
    )
    yield dg.Output(
        people,
        "ab_people",
        metadata={
            "dagster/row_count": len(people),
            "people": persons,
            "mode": config.mode,
            "since": summary["since"] or "everyone",
            "requests": req["requests"],
            "requests_per_person": round(req["requests"] / max(persons, 1), 3),
            "rate_limited_429": req["rate_limited_429"],
            "scan_seconds": summary["seconds"],
            "resumed_items": snap.resumed_items,
            "requests_by_kind": dg.MetadataValue.json(req["by_kind"]),
        },
    )
    yield dg.Output(
        connections,
        "ab_connections",
        metadata={"dagster/row_count": len(connections), "strategy": snap.connections_strategy},
    )
    yield dg.Output(units, "ab_units", metadata={"dagster/row_count": len(units)})
    yield dg.Output(
        taggings,
        "ab_taggings",
        metadata={
            "dagster/row_count": len(taggings),
            "strategy": snap.strategy,
            "strategy_costs": dg.MetadataValue.json(snap.strategy_costs),
        },
    )
    yield dg.Output(
        summary,
        "ab_scan",
        metadata={k: v for k, v in summary.items() if not isinstance(v, dict) and v is not None},
    )
    yield dg.AssetCheckResult(
        check_name="no_quarantined_people",
        asset_key="ab_people",
        passed=not snap.quarantined,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "quarantined": len(snap.quarantined),
            "examples": dg.MetadataValue.md(
                "\n".join(f"- `{k}`: {v}" for k, v in list(snap.quarantined.items())[:20]) or "none"
            ),
        },
    )


class MismatchConfig(dg.Config):
    max_mismatch_fraction: float = Field(
        default=0.5,
        description="Block the report and cleanup if more than this share of judged people mismatch "
        "(a renamed field or unit usually means the rules, not the people, are wrong).",
    )


def _mismatch_frame(mismatches: list[Mismatch]) -> pd.DataFrame:
    rows = [
        {
            "person_id": m.person_id,
            "given_name": m.given_name,
            "family_name": m.family_name,
            "browser_url": m.browser_url,
            "inactive": m.inactive,
            "unit_name": m.unit_name,
            "membership_type": m.membership_type,
            "membership_status": m.membership_status,
            "current_unit_name": m.current_unit_name,
            "current_membership_type": m.current_membership_type,
            "current_membership_status": m.current_membership_status,
            "reasons": ", ".join(m.reasons),
            "outdated_taggings": len(m.outdated_taggings),
        }
        for m in mismatches
    ]
    columns = [
        "person_id",
        "given_name",
        "family_name",
        "browser_url",
        "inactive",
        "unit_name",
        "membership_type",
        "membership_status",
        "current_unit_name",
        "current_membership_type",
        "current_membership_status",
        "reasons",
        "outdated_taggings",
    ]
    return pd.DataFrame(rows, columns=columns)


@dg.multi_asset(
    group_name=GROUP,
    outs={
        "membership_mismatches": dg.AssetOut(
            description="People whose own unit/type/status tags disagree with their unit connection."
        ),
        "planned_tag_deletions": dg.AssetOut(description="Outdated taggings the cleanup would delete."),
    },
    check_specs=[
        dg.AssetCheckSpec(
            "mismatch_rate_plausible",
            asset="membership_mismatches",
            blocking=True,
            description="Blocks report and cleanup when an implausible share of people mismatch.",
        )
    ],
)
def membership_mismatches(
    context: dg.AssetExecutionContext,
    config: MismatchConfig,
    action_builder: ActionBuilderResource,
    ab_people: pd.DataFrame,
    ab_connections: pd.DataFrame,
    ab_units: pd.DataFrame,
    ab_taggings: pd.DataFrame,
):
    """Compare each person's own tags with what their active unit connection says."""
    readable = ab_people[ab_people["quarantine_reason"].isna()]
    names = action_builder.field_names
    result = evaluate(
        from_frame(Person, readable),
        from_frame(Connection, ab_connections),
        {u.unit_id: u for u in from_frame(Unit, ab_units)},
        from_frame(Tagging, ab_taggings),
        names,
    )
    plan = plan_deletions(result.mismatches, names)
    frame = _mismatch_frame(result.mismatches)
    plan_frame = to_frame(plan, PlannedDeletion)
    for note in result.notes[:50]:
        context.log.warning(note)
    active = frame[~frame["inactive"]] if len(frame) else frame
    by_reason = frame["reasons"].str.split(", ").explode().value_counts().to_dict() if len(frame) else {}
    preview_cols = [
        "person_id",
        "unit_name",
        "membership_type",
        "current_unit_name",
        "current_membership_type",
        "reasons",
        "browser_url",
    ]  # no names: run history keeps metadata for good
    yield dg.Output(
        frame,
        "membership_mismatches",
        metadata={
            "dagster/row_count": len(frame),
            "active_mismatches": len(active),
            "inactive_mismatches": len(frame) - len(active),
            "people_judged": result.people_evaluated,
            "without_unit_connection": len(result.without_unit_connection),
            "by_reason": dg.MetadataValue.json(by_reason),
            "preview": md_preview(frame, preview_cols, empty="no mismatches"),
        },
    )
    yield dg.Output(
        plan_frame,
        "planned_tag_deletions",
        metadata={
            "dagster/row_count": len(plan_frame),
            "by_field": dg.MetadataValue.json(
                plan_frame["field"].value_counts().to_dict() if len(plan_frame) else {}
            ),
        },
    )
    share = len(frame) / max(result.people_evaluated, 1)
    yield dg.AssetCheckResult(
        check_name="mismatch_rate_plausible",
        asset_key="membership_mismatches",
        passed=share <= config.max_mismatch_fraction,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"mismatch_share": round(share, 4), "limit": config.max_mismatch_fraction},
        description=None
        if share <= config.max_mismatch_fraction
        else (
            f"{share:.0%} of judged people mismatch (limit {config.max_mismatch_fraction:.0%}); "
            "report and cleanup blocked. Check field names and recent unit renames."
        ),
    )


def _mismatches_from_frame(frame: pd.DataFrame) -> list[Mismatch]:
    """Inverse of _mismatch_frame, without the outdated taggings (the report never shows them)."""
    return [
        Mismatch(
            person_id=r.person_id,
            given_name=r.given_name,
            family_name=r.family_name,
            browser_url=r.browser_url,
            inactive=bool(r.inactive),
            unit_name=r.unit_name,
            membership_type=r.membership_type,
            membership_status=r.membership_status,
            current_unit_name=r.current_unit_name,
            current_membership_type=r.current_membership_type,
            current_membership_status=r.current_membership_status,
            reasons=tuple(x for x in (r.reasons or "").split(", ") if x),
            outdated_taggings=(),
        )
        for r in frame.itertuples(index=False)
    ]


def report_csv(mismatches: pd.DataFrame) -> tuple[bytes, int]:
    rows = report_rows(_mismatches_from_frame(mismatches))
    buf = io.StringIO()
    # CRLF (RFC 4180) also makes the writer quote a value holding a lone carriage return.
    writer = csv.DictWriter(buf, fieldnames=REPORT_COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue().encode(), len(rows)


@dg.asset(group_name=GROUP, tags={"dagster/kind/csv": ""})
def mismatch_report(
    context: dg.AssetExecutionContext,
    action_builder: ActionBuilderResource,
    membership_mismatches: pd.DataFrame,
) -> dg.Output[str]:
    """CSV of active members' correct unit/type/status, for the people who maintain the tags."""
    content, rows = report_csv(membership_mismatches)
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    path = Path(action_builder.reports_dir) / context.run.run_id / f"ActionBuilder_Sync_Export_{day}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    context.log.info(f"mismatch report: {rows} rows -> {path}")
    # Run history keeps the preview for good: no names in it (the CSV file has them).
    preview = pd.read_csv(io.BytesIO(content), dtype=str, keep_default_na=False).head(15)
    shown = [c for c in REPORT_COLUMNS if c not in REPORT_NAME_COLUMNS]
    return dg.Output(
        str(path),
        metadata={
            "dagster/row_count": rows,
            "path": dg.MetadataValue.path(str(path)),
            "preview": md_preview(preview, shown, empty="no mismatches"),
        },
    )


class ReportEmailConfig(dg.Config):
    """A run launched by hand to look at results need not email the organizers."""

    send: bool = Field(default=True, description="false: write the CSV but do not email it.")
    recipients: Optional[str] = Field(
        default=None,
        description="Comma-separated recipients instead of REPORT_RECIPIENTS (e.g. yourself, for a test).",
    )


@dg.asset(group_name=GROUP, tags={"dagster/kind/email": ""}, pool=pools.ACTION_BUILDER)
def mismatch_report_email(
    context: dg.AssetExecutionContext,
    config: ReportEmailConfig,
    email: EmailSender,
    recipients: Recipients,
    mismatch_report: str,
    ab_scan: dict,
) -> dg.MaterializeResult:
    """Email the CSV to the configured recipients (SendGrid in production, outbox locally)."""
    to = split_addresses(config.recipients) if config.recipients else recipients.tag_report_list
    content = Path(mismatch_report).read_bytes()
    rows = max(content.count(b"\n") - 1, 0)
    if not config.send:
        context.log.info("report not emailed: the run config says send: false")
        return dg.MaterializeResult(metadata={"sent": False, "rows": rows, "reason": "send: false"})
    if not to:
        context.log.warning("no report recipients configured (REPORT_RECIPIENTS); report not emailed")
        return dg.MaterializeResult(metadata={"sent": False, "rows": rows})
    subject = (
        f"ActionBuilder membership sync: {rows} mismatches attached"
        if rows
        else "ActionBuilder membership sync: no mismatches found"
    )
    scope = "everyone" if ab_scan.get("mode") == "full" else f"people modified since {ab_scan.get('since')}"
    body = (
        f"The membership tag check read {ab_scan.get('people')} people ({scope}).\n"
        f"{ab_scan.get('judged')} have a unit connection and were compared with it.\n"
        f"{rows} active members carry unit, membership type or status tags that disagree with their "
        f"unit connection; the attached CSV lists the correct values.\n"
        f"Inactive members are not listed. Run: {context.run.run_id}\n"
    )
    if ab_scan.get("notes"):
        body += f"\nNote: {ab_scan['notes']}\n"
    message_id = email.send(to, subject, body, (Attachment(Path(mismatch_report).name, content, "text/csv"),))
    context.log.info(f"report emailed to {len(to)} recipients: {message_id}")
    return dg.MaterializeResult(
        metadata={
            "sent": True,
            "recipients": len(to),
            "recipients_from_run_config": bool(config.recipients),
            "rows": rows,
            "message": message_id,
        }
    )


DELETION_COLUMNS = [
    "person_id",
    "tagging_id",
    "tag_id",
    "field",
    "value",
    "expected_value",
    "inactive",
    "action",
    "error",
    "acted_at",
    "attempt_run_id",
]


class CleanupConfig(dg.Config):
    """Deleting taggings is destructive: a dry run unless a run explicitly says otherwise."""

    dry_run: bool = Field(default=True, description="Only record what would be deleted.")
    max_deletions: int = Field(default=500, description="Delete nothing if more than this many are planned.")


@dg.asset(group_name=GROUP, tags={**KIND, "membership/side_effect": "delete"}, pool=pools.ACTION_BUILDER)
def outdated_tagging_deletions(
    context: dg.AssetExecutionContext,
    config: CleanupConfig,
    action_builder: ActionBuilderResource,
    warehouse: AuditWarehouse,
    planned_tag_deletions: pd.DataFrame,
) -> dg.Output[pd.DataFrame]:
    """Delete the outdated taggings found in this run; one audit row per planned deletion."""
    plan = from_frame(PlannedDeletion, planned_tag_deletions)
    run = run_identity(context)
    # First what earlier cleanups recorded but the warehouse never got (an outage mid-cleanup).
    journal = DeletionJournal(action_builder.checkpoint_path, cipher=cipher())
    if delivered := deliver_journal(journal, warehouse):
        context.log.info(f"delivered the audit of {delivered} earlier cleanup(s) the warehouse missed")
    earlier = previous_attempts(warehouse, "ab_tagging_deletions", run)
    earlier_rows = earlier[DELETION_COLUMNS].to_dict("records") if len(earlier) else []

    def audit(outcomes: list[DeletionOutcome]) -> pd.DataFrame:
        """Durably record this logical run's deletions (earlier attempts' outcomes merged in):
        next to the scan state first, then in the warehouse."""
        rows = [{**o.as_row(), "attempt_run_id": run.attempt_run_id} for o in outcomes]
        if earlier_rows:  # a re-execution: earlier attempts' deletions stay theirs
            rows = merge_outcomes(earlier_rows, rows)
        frame = pd.DataFrame(rows, columns=DELETION_COLUMNS)
        token = journal.save(run.run_id, run.started_at, frame)
        record(warehouse, "ab_tagging_deletions", frame, run)
        journal.delivered(run.run_id, token)
        return frame

    client = None if config.dry_run or not plan else action_builder.open_client(log=context.log)
    try:
        # Live: every DELETE's intent is in the warehouse before it is sent (see execute_deletions).
        outcomes = execute_deletions(
            client,
            plan,
            dry_run=config.dry_run,
            max_deletions=config.max_deletions,
            workers=action_builder.workers,
            journal=audit,
        )
    finally:
        if client is not None:
            client.api.close()
    # The final audit is written before anything can fail the step.
    frame = audit(outcomes)
    counts = frame.loc[frame["attempt_run_id"] == run.attempt_run_id, "action"].value_counts().to_dict()
    context.log.info(
        f"tag cleanup ({'dry run' if config.dry_run else 'live'}): {counts or 'nothing planned'}"
    )
    if counts.get("blocked_cap"):
        raise dg.Failure(
            f"{len(plan)} deletions planned, more than max_deletions={config.max_deletions}; nothing "
            "was deleted. Review planned_tag_deletions, then re-run with a higher cap if they are right.",
            metadata={"planned": len(plan)},
        )
    bad = counts.get("failed", 0) + counts.get("not_attempted", 0)
    if bad:
        errors = frame.loc[frame["error"].notna(), "error"].head(5).tolist()
        raise dg.Failure(
            f"{bad} of {len(plan)} tagging deletions failed: {errors}", metadata={"by_action": counts}
        )
    return dg.Output(
        frame,
        metadata={
            "dagster/row_count": len(frame),
            "dry_run": config.dry_run,
            "by_action": dg.MetadataValue.json(counts),
            "preview": md_preview(
                frame, ["person_id", "field", "value", "expected_value", "action"], empty="nothing to delete"
            ),
        },
    )

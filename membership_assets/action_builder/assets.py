"""Action Builder tag hygiene as assets: scan -> mismatches -> CSV report, email, tag cleanup."""

import csv
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, Optional

import dagster as dg
import pandas as pd
from pydantic import Field

from .. import pools
from ..columns import column_names
from ..metadata import dataclass_columns, md_preview, table_schema
from ..notify.resources import Attachment, EmailSender, Recipients, split_addresses
from ..privacy import cipher
from ..run_tags import mark_dry_run
from ..warehouse.audit import previous_attempts, record, run_identity
from ..warehouse.resources import AuditWarehouse
from ..warehouse.schema import ATTEMPT_RUN_ID
from . import campaign_state
from .cleanup import execute_deletions, merge_outcomes
from .journal import DeletionJournal, deliver_journal
from .records import COLUMN_DESCRIPTIONS, Connection, Entity, Tagging, Unit, from_frame, to_frame
from .repair import RepairStep, deletions_left_to_cleanup, repair_plan_section
from .report import (
    CampaignFacts,
    CleanupFacts,
    ScanFacts,
    build_report,
    render_html,
    render_text,
    send_decision,
)
from .resources import ActionBuilderResource
from .rules import (
    MISMATCH_COLUMNS,
    REPORT_COLUMNS,
    REPORT_NAME_COLUMNS,
    REPORT_SCHEMA,
    DeletionOutcome,
    FieldNames,
    PlannedDeletion,
    evaluate,
    mismatch_frame,
    mismatches_from_frame,
    plan_deletions,
    report_records,
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


def per_mode(mode: str, values: dict[str, Any]) -> dict[str, Any]:
    """Scan-dependent numbers under keys of their scan mode ("full_scan_people",
    "incremental_scan_people"), so the UI plots full and incremental scans as separate series
    instead of one saw-tooth."""
    return {f"{mode}_scan_{key}": value for key, value in values.items()}


def _schema(cls: type, *extra: tuple[str, str, str]) -> dict[str, dg.TableSchema]:
    return {"dagster/column_schema": table_schema([*dataclass_columns(cls, COLUMN_DESCRIPTIONS), *extra])}


QUARANTINE_COLUMN = ("quarantine_reason", "string", COLUMN_DESCRIPTIONS["quarantine_reason"])


@dg.multi_asset(
    group_name=GROUP,
    pool=pools.ACTION_BUILDER,
    outs={
        "ab_people": dg.AssetOut(
            description="Entities of the campaign read by the scan (people and units).",
            tags=KIND,
            metadata=_schema(Entity, QUARANTINE_COLUMN),
        ),
        "ab_connections": dg.AssetOut(
            description="Connections of the scanned people.", tags=KIND, metadata=_schema(Connection)
        ),
        "ab_units": dg.AssetOut(
            description="Unit entities the people are connected to.", tags=KIND, metadata=_schema(Unit)
        ),
        "ab_taggings": dg.AssetOut(
            description="Unit/type/status taggings of judged people and their unit connections.",
            tags=KIND,
            metadata=_schema(Tagging),
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

    people = to_frame(snap.entities, Entity)
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
        "names_confirmed_by": "; ".join(snap.name_evidence) or None,  # evidence for each name
        SCAN_STARTED_AT: datetime.fromtimestamp(snap.first_started_at or snap.started_at, tz=UTC).isoformat(),
    }
    context.log.info(
        f"scan done: {persons} people ({summary['judged']} judged) in {snap.seconds:.1f}s with "
        f"{req['requests']} requests ({req['requests'] / max(persons, 1):.2f}/person, "
        f"{req['rate_limited_429']} rate-limited); taggings read {snap.strategy}, "
        f"connections read {snap.connections_strategy}"
    )
    mode = config.mode
    yield dg.Output(
        people,
        "ab_people",
        metadata={
            "mode": mode,
            "since": summary["since"] or "everyone",
            "requests_by_kind": dg.MetadataValue.json(req["by_kind"]),
            **per_mode(
                mode,
                {
                    "rows": len(people),
                    "people": persons,
                    "requests": req["requests"],
                    "requests_per_person": round(req["requests"] / max(persons, 1), 3),
                    "rate_limited_429": req["rate_limited_429"],
                    "seconds": summary["seconds"],
                    "resumed_items": snap.resumed_items,
                },
            ),
        },
    )
    yield dg.Output(
        connections,
        "ab_connections",
        metadata={
            "mode": mode,
            "strategy": snap.connections_strategy,
            **per_mode(mode, {"rows": len(connections)}),
        },
    )
    yield dg.Output(units, "ab_units", metadata={"mode": mode, **per_mode(mode, {"rows": len(units)})})
    yield dg.Output(
        taggings,
        "ab_taggings",
        metadata={
            "mode": mode,
            "strategy": snap.strategy,
            "strategy_costs": dg.MetadataValue.json(snap.strategy_costs),
            **per_mode(mode, {"rows": len(taggings)}),
        },
    )
    numbers = {k: v for k, v in summary.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    yield dg.Output(
        summary,
        "ab_scan",
        metadata={
            **{
                k: v
                for k, v in summary.items()
                if k not in numbers and not isinstance(v, dict) and v is not None
            },
            **per_mode(mode, numbers),
        },
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


PLAN_SCHEMA = {"dagster/column_schema": table_schema(dataclass_columns(PlannedDeletion, COLUMN_DESCRIPTIONS))}


def update_campaign_mismatches(
    instance: dg.DagsterInstance, scan: dict, people: pd.DataFrame, frame: pd.DataFrame
) -> campaign_state.CampaignMismatches:
    """Merge this scan's findings into the campaign-wide state and return it."""
    readable = people[people["quarantine_reason"].isna()]
    found = {r.person_id: (r.unit_name, bool(r.inactive)) for r in frame.itertuples(index=False)}
    campaign_id = str(scan.get("campaign_id") or "")
    state = campaign_state.merge_scan(
        campaign_state.load_mismatches(instance, campaign_id),
        mode=scan["mode"],
        scan_started_at=str(scan[SCAN_STARTED_AT]),
        reread=readable["person_id"],
        found=found,
    )
    campaign_state.save_mismatches(instance, campaign_id, state)
    return state


def _campaign_metadata(state: campaign_state.CampaignMismatches | None) -> dict[str, Any]:
    """The campaign-wide count, on every materialization once a full scan has set it."""
    if state is None or not state.known:
        return {"campaign_mismatches_basis": "unknown until the first full scan"}
    basis = f"full scan of {state.full_scan_started_at[:16]} UTC"
    if state.incremental_scans_since_full:
        basis += f" + {state.incremental_scans_since_full} incremental"
    return {
        "campaign_mismatches": state.total,
        "campaign_active_mismatches": state.active,
        "campaign_mismatches_basis": basis,
    }


# The preview's columns, headed as in the report's CSV (no names: run history keeps metadata).
PREVIEW_HEADINGS = {
    "person_id": "uuid",
    "unit_name": "correct_unit",
    "current_unit_name": "tagged_unit",
    "membership_type": "correct_membership_type",
    "current_membership_type": "tagged_membership_type",
    "reasons": "mismatch_reasons",
    "browser_url": "action_builder_url",
}


@dg.multi_asset(
    group_name=GROUP,
    outs={
        "membership_mismatches": dg.AssetOut(
            description="People whose own unit/type/status tags disagree with their unit connection "
            "(found by this scan; campaign_mismatches counts the whole campaign).",
            metadata={
                "dagster/column_schema": table_schema(
                    (c.name, c.ui_type, c.description) for c in MISMATCH_COLUMNS
                )
            },
        ),
        "planned_tag_deletions": dg.AssetOut(
            description="Outdated taggings the cleanup would delete.", metadata=PLAN_SCHEMA
        ),
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
    ab_scan: dict,
):
    """Compare each person's own tags with what their active unit connection says."""
    readable = ab_people[ab_people["quarantine_reason"].isna()]
    names = action_builder.field_names
    result = evaluate(
        from_frame(Entity, readable),
        from_frame(Connection, ab_connections),
        {u.unit_id: u for u in from_frame(Unit, ab_units)},
        from_frame(Tagging, ab_taggings),
        names,
    )
    plan = plan_deletions(result.mismatches, names)
    frame = mismatch_frame(result.mismatches)
    plan_frame = to_frame(plan, PlannedDeletion)
    for note in result.notes[:50]:
        context.log.warning(note)
    share = len(frame) / max(result.people_evaluated, 1)
    plausible = share <= config.max_mismatch_fraction
    # Implausible findings (usually renamed fields) must not become the campaign's count.
    campaign_id = str(ab_scan.get("campaign_id") or "")
    campaign = (
        update_campaign_mismatches(context.instance, ab_scan, ab_people, frame)
        if plausible
        else campaign_state.load_mismatches(context.instance, campaign_id)
    )
    mode = ab_scan["mode"]
    active = frame[~frame["inactive"]] if len(frame) else frame
    by_reason = frame["reasons"].str.split(", ").explode().value_counts().to_dict() if len(frame) else {}
    # No names: run history keeps metadata for good. Headed as in the CSV, so nobody reads
    # the tagged (outdated) value as the correct one.
    preview = frame.rename(columns=PREVIEW_HEADINGS)
    yield dg.Output(
        frame,
        "membership_mismatches",
        metadata={
            **_campaign_metadata(campaign),
            "mode": mode,
            **per_mode(
                mode,
                {
                    "mismatches": len(frame),
                    "active_mismatches": len(active),
                    "inactive_mismatches": len(frame) - len(active),
                    "people_judged": result.people_evaluated,
                    "without_unit_connection": len(result.without_unit_connection),
                },
            ),
            "by_reason": dg.MetadataValue.json(by_reason),
            "preview": md_preview(preview, list(PREVIEW_HEADINGS.values()), empty="no mismatches"),
        },
    )
    yield dg.Output(
        plan_frame,
        "planned_tag_deletions",
        metadata={
            "mode": mode,
            **per_mode(mode, {"planned_deletions": len(plan_frame)}),
            "by_field": dg.MetadataValue.json(
                plan_frame["field"].value_counts().to_dict() if len(plan_frame) else {}
            ),
        },
    )
    yield dg.AssetCheckResult(
        check_name="mismatch_rate_plausible",
        asset_key="membership_mismatches",
        passed=plausible,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"mismatch_share": round(share, 4), "limit": config.max_mismatch_fraction},
        description=None
        if plausible
        else (
            f"{share:.0%} of judged people mismatch (limit {config.max_mismatch_fraction:.0%}); "
            "report and cleanup blocked. Check field names and recent unit renames."
        ),
    )


def report_csv(mismatches: pd.DataFrame, names: FieldNames = FieldNames()) -> tuple[bytes, int]:
    rows = report_rows(mismatches_from_frame(mismatches), names)
    buf = io.StringIO()
    # CRLF (RFC 4180) also makes the writer quote a value holding a lone carriage return.
    writer = csv.DictWriter(buf, fieldnames=REPORT_COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue().encode(), len(rows)


REPORT_CSV_SCHEMA = table_schema((c.name, "string", c.description) for c in REPORT_SCHEMA)


@dg.asset(
    group_name=GROUP, tags={"dagster/kind/csv": ""}, metadata={"dagster/column_schema": REPORT_CSV_SCHEMA}
)
def mismatch_report(
    context: dg.AssetExecutionContext,
    action_builder: ActionBuilderResource,
    membership_mismatches: pd.DataFrame,
    ab_scan: dict,
) -> dg.Output[str]:
    """CSV of active members' correct and tagged unit/type/status, for the people who maintain the tags."""
    content, rows = report_csv(membership_mismatches, action_builder.field_names)
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
            "mode": ab_scan["mode"],
            **per_mode(ab_scan["mode"], {"report_rows": rows}),
            "path": dg.MetadataValue.path(str(path)),
            "preview": md_preview(preview, shown, empty="no mismatches"),
        },
    )


class ReportEmailConfig(dg.Config):
    """A run launched by hand to look at results need not email the organizers."""

    send: bool = Field(default=True, description="false: write the CSV but do not email it.")
    force: bool = Field(
        default=False,
        description="Email the organizers even if today's report of this campaign already went out "
        "(otherwise at most one a day).",
    )
    recipients: Optional[str] = Field(
        default=None,
        description="Comma-separated recipients instead of REPORT_RECIPIENTS (e.g. yourself, for a test); "
        "such a send does not count as the organizers' report of the day.",
    )


def _cleanup_facts(context: dg.AssetExecutionContext, plan: pd.DataFrame) -> CleanupFacts:
    """What this run's cleanup is set to do: its config (with CleanupConfig's defaults) and plan."""
    raw = context.run.run_config.get("ops", {}).get("outdated_tagging_deletions", {}).get("config", {})
    cleanup = CleanupConfig(**raw)
    return CleanupFacts(dry_run=cleanup.dry_run, planned=len(plan), max_deletions=cleanup.max_deletions)


def _scan_facts(scan: dict) -> ScanFacts:
    return ScanFacts(
        mode=scan["mode"],
        since=scan.get("since"),
        people=int(scan.get("people", 0)),
        judged=int(scan.get("judged", 0)),
        quarantined=int(scan.get("quarantined", 0)),
        notes=scan.get("notes"),
    )


def _campaign_facts(state: campaign_state.CampaignMismatches | None) -> CampaignFacts:
    if state is None or not state.known:
        return CampaignFacts(None, None, {}, None)
    return CampaignFacts(
        state.total,
        state.active,
        state.active_by_unit(),
        state.full_scan_started_at,
        state.incremental_scans_since_full,
    )


@dg.asset(group_name=GROUP, tags={"dagster/kind/email": ""}, pool=pools.ACTION_BUILDER)
def mismatch_report_email(
    context: dg.AssetExecutionContext,
    config: ReportEmailConfig,
    email: EmailSender,
    recipients: Recipients,
    action_builder: ActionBuilderResource,
    mismatch_report: str,
    membership_mismatches: pd.DataFrame,
    ab_scan: dict,
    planned_tag_deletions: pd.DataFrame,
    planned_tag_repairs: pd.DataFrame,
) -> dg.MaterializeResult:
    """Email the organizers what the check found, what the cleanup does or will do and what to
    change in Action Builder (HTML and plain text, the CSV attached); at most once a day per campaign.

    Independent of the cleanup's outcome: a blocked or failing cleanup must not hold back the
    report (its failure alerts the administrators)."""
    to = split_addresses(config.recipients) if config.recipients else recipients.tag_report_list
    campaign_id = str(ab_scan.get("campaign_id") or "")
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    frame = membership_mismatches
    report = build_report(
        day=day,
        scan=_scan_facts(ab_scan),
        rows=report_records(mismatches_from_frame(frame), action_builder.field_names),
        inactive=int(frame["inactive"].sum()) if len(frame) else 0,
        cleanup=_cleanup_facts(context, planned_tag_deletions),
        campaign=_campaign_facts(campaign_state.load_mismatches(context.instance, campaign_id)),
        csv_name=Path(mismatch_report).name,
        run_id=context.run.run_id,
        names=action_builder.field_names,
        extra_sections=[repair_plan_section(from_frame(RepairStep, planned_tag_repairs))],
    )
    meta = {"report_day": day, "subject": report.subject}
    if not config.send:
        mark_dry_run(context)  # the runs list tells a report that went nowhere from a sent one
        context.log.info("report not emailed: the run config says send: false")
        return dg.MaterializeResult(metadata={**meta, "sent": False, "reason": "send: false"})
    if not to:
        context.log.warning("no report recipients configured (REPORT_RECIPIENTS); report not emailed")
        return dg.MaterializeResult(metadata={**meta, "sent": False, "reason": "no recipients"})
    organizers = not config.recipients  # a send to run-config recipients is a test, not the daily report
    why = "run-config recipients"
    if organizers:
        send, why = send_decision(
            campaign_state.load_last_report(context.instance, campaign_id), day=day, force=config.force
        )
        if not send:
            context.log.info(f"report not emailed: {why}; launch with force: true to send it again")
            return dg.MaterializeResult(metadata={**meta, "sent": False, "reason": why})

    def record_send(state: str) -> None:
        """The organizers' report of the day, kept in the instance: across runs and processes."""
        if organizers:
            record = {"day": day, "run_id": context.run.run_id, "state": state}
            campaign_state.save_last_report(context.instance, campaign_id, record)

    record_send("sending")  # intent first: a crash mid-send leaves a trace
    content = Path(mismatch_report).read_bytes()
    try:
        message_id = email.send(
            to,
            report.subject,
            render_text(report),
            (Attachment(Path(mismatch_report).name, content, "text/csv"),),
            html=render_html(report),
        )
    except Exception:
        record_send("failed")
        raise
    record_send("sent")
    context.log.info(f"report emailed to {len(to)} recipients: {message_id}")
    return dg.MaterializeResult(
        metadata={
            **meta,
            "sent": True,
            "reason": why,
            "recipients": len(to),
            "recipients_from_run_config": bool(config.recipients),
            "rows": len(frame[~frame["inactive"]]) if len(frame) else 0,
            "message": message_id,
        }
    )


# The deletions' audit rows: each outcome and the attempt that acted (audit table ab_tagging_deletions).
DELETION_COLUMNS = [*column_names(DeletionOutcome), ATTEMPT_RUN_ID.name]


class CleanupConfig(dg.Config):
    """Deleting taggings is destructive: a dry run unless a run explicitly says otherwise."""

    dry_run: bool = Field(default=True, description="Only record what would be deleted.")
    max_deletions: int = Field(default=500, description="Delete nothing if more than this many are planned.")


DELETION_SCHEMA = table_schema(
    [
        *dataclass_columns(DeletionOutcome, COLUMN_DESCRIPTIONS),
        (ATTEMPT_RUN_ID.name, "string", ATTEMPT_RUN_ID.description),
    ]
)


@dg.asset(
    group_name=GROUP,
    tags={**KIND, "membership/side_effect": "delete"},
    pool=pools.ACTION_BUILDER,
    metadata={"dagster/column_schema": DELETION_SCHEMA},
)
def outdated_tagging_deletions(
    context: dg.AssetExecutionContext,
    config: CleanupConfig,
    action_builder: ActionBuilderResource,
    warehouse: AuditWarehouse,
    planned_tag_deletions: pd.DataFrame,
    planned_tag_repairs: pd.DataFrame,
) -> dg.Output[pd.DataFrame]:
    """Delete the outdated taggings found in this run; one audit row per planned deletion.

    Taggings a live tag repair owns are left to it (it removes them once the right tag is on).
    """
    plan = deletions_left_to_cleanup(
        from_frame(PlannedDeletion, planned_tag_deletions), from_frame(RepairStep, planned_tag_repairs)
    )
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

    if config.dry_run:
        mark_dry_run(context)  # the runs list tells a cleanup that deleted nothing from a live one
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

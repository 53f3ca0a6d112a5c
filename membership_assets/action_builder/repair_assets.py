"""Tag repair as assets: plan -> guarded repair (audited, verified) -> repairs CSV.

The plan sits downstream of ``membership_mismatches``, so the blocking plausibility check stops
repairs exactly as it stops the cleanup. The cleanup (``outdated_tagging_deletions``) reads the
plan and leaves alone every tagging a live repair owns.
"""

import csv
import io
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pandas as pd
from pydantic import Field

from .. import pools
from ..metadata import dataclass_columns, md_preview, table_schema
from ..warehouse.assets import column_schema
from ..warehouse.audit import previous_attempts, record, run_identity
from ..warehouse.resources import AuditWarehouse
from .assets import GROUP, KIND
from .records import Connection, Entity, Tagging, Unit, from_frame, to_frame
from .repair import (
    OUTCOME_COLUMNS,
    REPAIR_REPORT_COLUMNS,
    REPAIR_REPORT_NAME_COLUMNS,
    REPAIR_REPORT_SCHEMA,
    REPAIR_STEP_DESCRIPTIONS,
    RepairOutcome,
    RepairStep,
    execute_repairs,
    merge_repair_outcomes,
    plan_repairs,
    repair_counts,
    repair_report_rows,
    repair_section,
)
from .resources import ActionBuilderResource
from .rules import evaluate
from .scan import tag_catalog

AUDIT_TABLE = "ab_tag_repairs"
AUDIT_COLUMNS = [*OUTCOME_COLUMNS, "attempt_run_id"]


class RepairPlanConfig(dg.Config):
    """Repairs write to Action Builder: a dry run unless a run explicitly says otherwise."""

    dry_run: bool = Field(default=True, description="Only record what would be repaired.")
    max_repairs: int = Field(default=500, description="Repair nobody if more people than this are planned.")


@dg.asset(
    group_name=GROUP,
    tags=KIND,
    pool=pools.ACTION_BUILDER,
    metadata={"dagster/column_schema": table_schema(dataclass_columns(RepairStep, REPAIR_STEP_DESCRIPTIONS))},
)
def planned_tag_repairs(
    context: dg.AssetExecutionContext,
    config: RepairPlanConfig,
    action_builder: ActionBuilderResource,
    ab_people: pd.DataFrame,
    ab_connections: pd.DataFrame,
    ab_units: pd.DataFrame,
    ab_taggings: pd.DataFrame,
    membership_mismatches: pd.DataFrame,  # only for its blocking plausibility check
) -> dg.Output[pd.DataFrame]:
    """Per person: the tags to add and the outdated taggings to remove, or why a human must look.

    Reads the tag catalog afresh (one or two requests): the tags to add must exist now.
    """
    names = action_builder.field_names
    readable = ab_people[ab_people["quarantine_reason"].isna()]
    evaluation = evaluate(
        from_frame(Entity, readable),
        from_frame(Connection, ab_connections),
        {u.unit_id: u for u in from_frame(Unit, ab_units)},
        from_frame(Tagging, ab_taggings),
        names,
    )
    client = action_builder.open_client(log=context.log)
    try:
        catalog = tag_catalog(client.list_tags())
    finally:
        client.api.close()
    steps = plan_repairs(
        evaluation,
        from_frame(Tagging, ab_taggings),
        catalog,
        names,
        live=not config.dry_run,
        max_repairs=config.max_repairs,
    )
    frame = to_frame(steps, RepairStep)
    people = frame.loc[frame["step"] != "hold", "person_id"].nunique() if len(frame) else 0
    holds = frame.loc[frame["step"] == "hold", "reason"].value_counts().to_dict() if len(frame) else {}
    return dg.Output(
        frame,
        metadata={
            "dagster/row_count": len(frame),
            "people_to_repair": int(people),
            "mode": frame["mode"].iloc[0] if len(frame) else ("dry_run" if config.dry_run else "live"),
            "held_by_reason": dg.MetadataValue.json(holds),
            "preview": md_preview(
                frame, ["person_id", "seq", "step", "field", "value", "reason"], empty="nothing to repair"
            ),
        },
    )


class RepairRunConfig(dg.Config):
    verify_budget: int = Field(
        default=2000,
        description="At most this many re-reads to verify repaired people (the rest: unverified).",
    )


@dg.asset(
    group_name=GROUP,
    tags={**KIND, "membership/side_effect": "repair"},
    pool=pools.ACTION_BUILDER,
    metadata={"dagster/column_schema": column_schema(AUDIT_TABLE)},
    check_specs=[
        dg.AssetCheckSpec(
            "repairs_verified",
            asset="tag_repairs",
            description="Every repaired person re-read carries exactly the right values; no repair failed.",
        )
    ],
)
def tag_repairs(
    context: dg.AssetExecutionContext,
    config: RepairRunConfig,
    action_builder: ActionBuilderResource,
    warehouse: AuditWarehouse,
    planned_tag_repairs: pd.DataFrame,
):
    """Add the right tags, then remove the outdated ones; one audit row per step, written ahead."""
    steps = from_frame(RepairStep, planned_tag_repairs)
    run = run_identity(context)
    earlier = previous_attempts(warehouse, AUDIT_TABLE, run)
    earlier_rows = earlier[AUDIT_COLUMNS].to_dict("records") if len(earlier) else []

    def audit(outcomes: list[RepairOutcome]) -> pd.DataFrame:
        """Durably record this logical run's repairs (earlier attempts' outcomes merged in)."""
        rows = [{**o.as_row(), "attempt_run_id": run.attempt_run_id} for o in outcomes]
        if earlier_rows:
            rows = merge_repair_outcomes(earlier_rows, rows)
        frame = pd.DataFrame(rows, columns=AUDIT_COLUMNS)
        record(warehouse, AUDIT_TABLE, frame, run)
        return frame

    live = any(s.mode == "live" and s.step != "hold" for s in steps)
    client = action_builder.open_client(log=context.log) if live else None
    try:
        outcomes = execute_repairs(
            client,
            steps,
            workers=action_builder.workers,
            journal=audit,
            earlier={(r["person_id"], int(r["seq"])): r["action"] for r in earlier_rows},
            verify_budget=config.verify_budget,
        )
        requests = client.stats.snapshot() if client is not None else {"requests": 0, "by_kind": {}}
    finally:
        if client is not None:
            client.api.close()
    frame = audit(outcomes)  # the final audit, before anything can fail the step
    counts = repair_counts(frame.to_dict("records"))
    actions = frame["action"].value_counts().to_dict()
    context.log.info(f"tag repair ({'live' if live else 'not live'}): {counts or 'nothing planned'}")
    if actions.get("blocked_cap"):
        raise dg.Failure(
            f"{counts.get('blocked_cap', 0)} people planned for repair, more than max_repairs; nobody was "
            "repaired. Review planned_tag_repairs, then re-run with a higher cap if they are right.",
            metadata={"by_outcome": dg.MetadataValue.json(counts)},
        )
    if "not_attempted" in actions:  # credentials rejected mid-run: the path is broken
        raise dg.Failure(f"tag repair stopped: {frame.loc[frame['error'].notna(), 'error'].iloc[0]}")
    bad = frame[frame["action"].isin(["still_mismatched", "failed"])]
    repaired_people = int(counts.get("repaired", 0) + counts.get("repaired_unverified", 0))
    yield dg.Output(
        frame,
        metadata={
            "dagster/row_count": len(frame),
            "by_outcome": dg.MetadataValue.json(counts),
            "by_action": dg.MetadataValue.json(actions),
            "requests": requests["requests"],
            "requests_per_repaired_person": round(requests["requests"] / max(repaired_people, 1), 3),
            "requests_by_kind": dg.MetadataValue.json(requests["by_kind"]),
            "preview": md_preview(
                frame, ["person_id", "seq", "step", "field", "value", "action"], empty="nothing to repair"
            ),
        },
    )
    yield dg.AssetCheckResult(
        check_name="repairs_verified",
        passed=bad.empty,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "verified": int((frame["action"] == "verified").sum()),
            "still_mismatched": int((frame["action"] == "still_mismatched").sum()),
            "failed_steps": int((frame["action"] == "failed").sum()),
            "unverified": int((frame["action"] == "unverified").sum()),
            # person ids and field names only: no names or values in run history
            "examples": dg.MetadataValue.md(
                "\n".join(f"- `{r.person_id}` {r.step}: {r.action}" for r in bad.head(20).itertuples())
                or "none"
            ),
        },
        description=None if bad.empty else f"{bad['person_id'].nunique()} people still mismatch or failed",
    )


def repair_csv(rows: list[dict], people: pd.DataFrame) -> tuple[bytes, int]:
    """The repairs CSV (names and links for the organizers) and its row count."""
    who = people.set_index("person_id")[["given_name", "family_name", "browser_url"]]
    lookup = {pid: {k: (None if pd.isna(v) else v) for k, v in r.items()} for pid, r in who.iterrows()}
    report = repair_report_rows(rows, lookup)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=REPAIR_REPORT_COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(report)
    return buf.getvalue().encode(), len(report)


@dg.asset(
    group_name=GROUP,
    tags={"dagster/kind/csv": ""},
    metadata={
        "dagster/column_schema": table_schema((c, "string", text) for c, text in REPAIR_REPORT_SCHEMA.items())
    },
)
def tag_repair_report(
    context: dg.AssetExecutionContext,
    action_builder: ActionBuilderResource,
    ab_people: pd.DataFrame,
    tag_repairs: pd.DataFrame,
) -> dg.Output[dict]:
    """The repairs CSV and the email's repairs section (``repair_section``), for the organizers."""
    rows = tag_repairs.to_dict("records")
    content, n = repair_csv(rows, ab_people)
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    path = Path(action_builder.reports_dir) / context.run.run_id / f"ActionBuilder_Tag_Repairs_{day}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    section = repair_section(rows)
    preview = pd.read_csv(io.BytesIO(content), dtype=str, keep_default_na=False).head(15)
    shown = [c for c in REPAIR_REPORT_COLUMNS if c not in REPAIR_REPORT_NAME_COLUMNS]
    return dg.Output(
        {"path": str(path), "rows": n, "section": section},
        metadata={
            "dagster/row_count": n,
            "path": dg.MetadataValue.path(str(path)),
            "section": dg.MetadataValue.md(f"```\n{section}\n```"),
            "preview": md_preview(preview, shown, empty="nothing to repair"),
        },
    )

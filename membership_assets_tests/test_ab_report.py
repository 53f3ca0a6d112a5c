"""What leaves the pipeline for people: the emailed CSV (formula-safe), previews without names,
and a manual launch that need not email the organizers."""

from __future__ import annotations

import csv
import io

import dagster as dg

from membership_assets.action_builder.rules import csv_cell

from .test_ab_job import outbox_messages, read_report, run_job

TRIGGERS = ['=HYPERLINK("http://x")', "+1+1", "-2+3", "@SUM(A1)", "\tTab", "\rCR"]


def test_csv_cell_escapes_formula_triggers_and_leaves_ordinary_values_alone():
    for value in TRIGGERS:
        assert csv_cell(value) == "'" + value
    for value in ["Ana", "Local 101 Newsroom", "", "O'Brien", "a=b", "Jean-Luc", "https://x/1"]:
        assert csv_cell(value) == value


def test_names_that_look_like_formulas_reach_the_csv_as_text(defs, instance, ab_sim, outbox):
    truth = ab_sim.data.expected_mismatches()
    active = [pid for pid, t in truth.items() if not t.inactive][: len(TRIGGERS)]
    for pid, value in zip(active, TRIGGERS, strict=True):
        ab_sim.data.entities[pid]["given_name"] = value
        ab_sim.data.entities[pid]["family_name"] = value
    result = run_job(defs, instance)
    assert result.success
    rows = {r["uuid"]: r for r in read_report(result)}
    for pid, value in zip(active, TRIGGERS, strict=True):
        assert rows[pid]["first_name"] == "'" + value and rows[pid]["last_name"] == "'" + value
    cells = [v for r in rows.values() for v in r.values()]
    assert not any(v.startswith(("=", "+", "-", "@", "\t", "\r")) for v in cells)
    [msg] = outbox_messages(outbox)
    [attachment] = list(msg.iter_attachments())
    emailed = list(csv.DictReader(io.StringIO(attachment.get_content())))
    assert {r["uuid"]: r["first_name"] for r in emailed}[active[0]] == "'" + TRIGGERS[0]


def _all_metadata_text(result) -> str:
    parts = []
    for event in result.all_events:
        data = event.event_specific_data
        for attr in ("materialization", "asset_check_evaluation_data"):
            holder = getattr(data, attr, None) if data is not None else None
            if holder is None and attr == "asset_check_evaluation_data":
                holder = data if hasattr(data, "check_name") else None
            if holder is not None and getattr(holder, "metadata", None):
                parts.extend(str(v.value) for v in holder.metadata.values())
    return "\n".join(parts)


def test_previews_in_run_history_carry_no_names_but_stay_useful(defs, instance, ab_sim):
    truth = ab_sim.data.expected_mismatches()
    names = {}
    for i, pid in enumerate(truth):
        e = ab_sim.data.entities[pid]
        e["given_name"], e["family_name"] = f"Givenxq{i:03d}", f"Familyxq{i:03d}"
        names[pid] = (e["given_name"], e["family_name"])
    result = run_job(defs, instance)
    assert result.success
    text = _all_metadata_text(result)
    assert "xq" not in text, "a first or last name is kept in run history"
    # Still useful: ids, units, reasons and links are shown.
    some = next(pid for pid, t in truth.items() if not t.inactive)
    assert some in text and "unit_" in text and truth[some].unit_name in text
    assert "actionbuilder.org/entity/view" in text
    # The CSV for organizers keeps the names.
    rows = {r["uuid"]: r for r in read_report(result)}
    assert (rows[some]["first_name"], rows[some]["last_name"]) == names[some]


def test_a_manual_launch_can_skip_the_email(defs, instance, ab_sim, outbox):
    result = run_job(defs, instance, mismatch_report_email={"config": {"send": False}})
    assert result.success
    assert outbox_messages(outbox) == []
    assert read_report(result), "the CSV is still written"
    [mat] = [
        e
        for e in result.get_asset_materialization_events()
        if e.asset_key == dg.AssetKey("mismatch_report_email")
    ]
    assert mat.materialization.metadata["sent"].value is False
    assert instance.get_run_by_id(result.run_id).tags["membership/dry_run"] == "true"  # runs list


def test_a_manual_launch_can_send_the_report_to_someone_else(defs, instance, ab_sim, outbox):
    result = run_job(defs, instance, mismatch_report_email={"config": {"recipients": "me@example.org"}})
    assert result.success
    [msg] = outbox_messages(outbox)
    assert msg["To"] == "me@example.org"


def test_scheduled_runs_still_email_the_organizers(defs, instance, ab_sim, outbox):
    from membership_assets.action_builder.schedules import action_builder_monthly_full

    config = action_builder_monthly_full(dg.build_schedule_context()).run_config
    result = defs.resolve_job_def("action_builder_tag_sync").execute_in_process(
        run_config=config, instance=instance
    )
    assert result.success
    [msg] = outbox_messages(outbox)
    assert msg["To"] == "organizers@example.org, steward@example.org"


def test_the_incremental_window_starts_at_the_last_scan_however_it_was_launched(defs, instance, ab_sim):
    """Launched from the asset graph, every asset shares ``__ASSET_JOB``: another asset's later
    successful run must not move the scan's window past changes it never read."""
    from datetime import datetime, timedelta

    other = dg.asset(name="unrelated_asset")(lambda: 1)
    merged = dg.Definitions.merge(defs, dg.Definitions(assets=[other]))
    graph_job = merged.resolve_implicit_global_asset_job_def()
    scan_keys = [
        dg.AssetKey(k) for k in ("ab_people", "ab_connections", "ab_units", "ab_taggings", "ab_scan")
    ]
    config = {"ops": {"action_builder_campaign": {"config": {"mode": "incremental"}}}}
    first = graph_job.execute_in_process(run_config=config, instance=instance, asset_selection=scan_keys)
    assert first.success
    first_scan = first.output_for_node("action_builder_campaign", "ab_scan")
    assert graph_job.execute_in_process(
        instance=instance, asset_selection=[dg.AssetKey("unrelated_asset")]
    ).success
    second = graph_job.execute_in_process(run_config=config, instance=instance, asset_selection=scan_keys)
    since = datetime.fromisoformat(second.output_for_node("action_builder_campaign", "ab_scan")["since"])
    assert since == datetime.fromisoformat(first_scan["scan_started_at"]) - timedelta(minutes=60)


def test_a_run_whose_email_failed_still_counts_as_the_last_scan(local_resources, instance, ab_sim):
    """The scan succeeded (and read everything up to its start) even if a later step failed."""
    from datetime import datetime, timedelta

    from membership_assets.definitions import build_definitions
    from membership_assets.notify.resources import EmailSender

    class BrokenEmail(EmailSender):
        def send(self, to, subject, body, attachments=()):
            raise RuntimeError("SendGrid is down")

    broken = build_definitions({**local_resources, "email": BrokenEmail()})
    first = run_job(broken, instance, mode="incremental")
    assert not first.success
    first_scan = first.output_for_node("action_builder_campaign", "ab_scan")
    second = run_job(build_definitions(local_resources), instance, mode="incremental")
    since = datetime.fromisoformat(second.output_for_node("action_builder_campaign", "ab_scan")["since"])
    assert since == datetime.fromisoformat(first_scan["scan_started_at"]) - timedelta(minutes=60)

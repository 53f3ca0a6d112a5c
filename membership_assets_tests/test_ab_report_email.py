"""The organizers' report email: what it says (pure rendering), that it is HTML with a plain-text
part and the CSV, that it goes out at most once a day per campaign, and how it looks in Chromium."""

from __future__ import annotations

import csv
import io
import json
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, HTTPServer

import dagster as dg
import pytest

from membership_assets.action_builder.report import (
    CampaignFacts,
    CleanupFacts,
    Link,
    ScanFacts,
    Section,
    Table,
    build_report,
    plural,
    render_html,
    render_text,
    send_decision,
)
from membership_assets.action_builder.rules import REPORT_COLUMNS
from membership_assets.notify.resources import Attachment, FileOutboxEmail, SendGridEmail
from membership_assets.simulators.action_builder_seed import SeedConfig, generate_campaign

from .browser import screenshot
from .test_ab_job import outbox_messages, read_report, run_job

DAY = "2026-12-05"


def _row(pid: str, unit: str, first="Ana", last="Diaz", url=None, **extra) -> dict[str, str]:
    row = dict.fromkeys(REPORT_COLUMNS, "")
    row.update(
        uuid=pid,
        first_name=first,
        last_name=last,
        correct_unit=unit,
        tagged_unit="Local 9",
        what_to_change=f"Bargaining Unit: replace 'Local 9' with '{unit}'",
        mismatch_reasons="unit_outdated",
        action_builder_url=url if url is not None else f"https://x.actionbuilder.org/entity/view/{pid}",
    )
    row.update(extra)
    return row


def _report(rows, *, mode="full", dry_run=True, planned=None, cap=500, campaign=None, **kw):
    return build_report(
        day=DAY,
        scan=ScanFacts(mode, None if mode == "full" else "2026-12-04T05:00:00+00:00", 300, 260, 0),
        rows=rows,
        inactive=kw.pop("inactive", 0),
        cleanup=CleanupFacts(dry_run, len(rows) if planned is None else planned, cap),
        campaign=campaign or CampaignFacts(None, None, {}, None),
        csv_name="ActionBuilder_Sync_Export_2026-12-05.csv",
        run_id="run-1",
        **kw,
    )


# -- pure rendering -------------------------------------------------------------------------------


def test_counts_are_pluralized():
    assert plural(1, "mismatch") == "1 mismatch"
    assert plural(591, "mismatch") == "591 mismatches"
    assert plural(0, "mismatch") == "0 mismatches"
    assert plural(1, "person", "people") == "1 person" and plural(2, "person", "people") == "2 people"
    assert plural(1591, "outdated tag") == "1,591 outdated tags"
    one = _report([_row("a", "Local 1")])
    assert one.subject == f"Action Builder membership tags {DAY}: 1 mismatch to fix"
    assert one.headline == "1 active member needs membership tags fixed in Action Builder."
    assert "1 active member carries" in render_text(one)
    many = _report([_row(str(i), "Local 1") for i in range(591)])
    assert many.subject == f"Action Builder membership tags {DAY}: 591 mismatches to fix"
    assert "591 active members need" in many.headline
    none = _report([])
    assert none.subject.endswith("no mismatches found") and "No membership tags to fix" in none.headline
    assert "What to change in Action Builder" not in render_text(none)


def test_the_report_says_what_the_cleanup_will_do():
    rows = [_row("a", "Local 1")]
    dry = render_text(_report(rows, dry_run=True, planned=3))
    assert "What the cleanup will do" in dry and "dry run: it deletes nothing" in dry
    assert "would delete 3 outdated tags" in dry and "Remove the outdated tag" in dry
    live = render_text(_report(rows, dry_run=False, planned=1))
    assert "What the cleanup does" in live and "deletes the 1 outdated tag found in this run" in live
    assert "Leave outdated tags alone" in live and "Remove the outdated tag" not in live
    blocked = render_text(_report(rows, dry_run=False, planned=591, cap=500))
    assert "591 outdated tags were found, more than the cleanup may delete in one run (500)" in blocked
    assert "Remove the outdated tag" in blocked
    nothing = render_text(_report(rows, dry_run=False, planned=0))
    assert "There are no outdated tags to delete." in nothing
    for text in (dry, live, blocked, nothing):
        assert "never adds tags" in text


def test_steps_explain_the_columns_and_blank_correct_values_only_when_there_are_some():
    plain = render_text(_report([_row("a", "Local 1")]))
    assert "correct_unit" in plain and "tagged_unit" in plain and "action_builder_url" in plain
    assert "blank_correct_value_reason" not in plain
    blank = _row("b", "", blank_correct_value_reason="Bargaining Unit: the connected unit could not be read")
    text = render_text(_report([blank]))
    assert "blank_correct_value_reason says why" in text and "(unit unknown)" in text


def test_worst_units_first_this_scan_or_whole_campaign():
    rows = [_row("a", "Local 1"), _row("b", "Local 2"), _row("c", "Local 2")]
    report = _report(rows)
    [units] = [s for s in report.sections if s.title.startswith("Units with the most")]
    assert units.title == "Units with the most members to fix"  # a full check is the whole campaign
    assert units.table.rows == (("Local 2", 2), ("Local 1", 1))
    unknown = _report(rows, mode="incremental")  # no full check yet: this check's people only
    [units] = [s for s in unknown.sections if s.title.startswith("Units with the most")]
    assert units.title.endswith("(people checked this time)") and units.table.rows[0] == ("Local 2", 2)
    assert "campaign-wide count is not known yet" in render_text(unknown)
    campaign = CampaignFacts(
        591, 560, {"Local 7": 300, "Local 1": 200, "Local 2": 60}, "2026-12-01T03:00:00", 4
    )
    daily = _report(rows[:1], mode="incremental", campaign=campaign)
    [units] = [s for s in daily.sections if s.title.startswith("Units with the most")]
    assert units.title.endswith("(whole campaign)")
    assert units.table.rows[0] == ("Local 7", 300, 0) and units.table.rows[1] == ("Local 1", 200, 1)
    assert daily.subject.endswith("1 mismatch to fix (560 in the campaign)")
    text = render_text(daily)
    assert (
        "560 active members have tags to fix (the full check of 2026-12-01 03:00 UTC and 4 daily checks"
        in text
    )


def test_many_units_and_people_are_cut_with_a_count_of_the_rest():
    rows = [_row(f"p{i}", f"Local {i % 20}") for i in range(40)]
    text = render_text(_report(rows))
    assert "and 5 more units" in text and "and 15 more members in the attached CSV" in text


def test_html_escapes_every_value_and_links_only_web_urls():
    evil = _row("a", "<b>Local</b>", first="<script>alert(1)</script>", url="javascript:alert(1)")
    good = _row("b", "Local 2", first="Bo", url="https://x.actionbuilder.org/entity/view/b")
    page = render_html(_report([evil, good]))
    assert "<script>alert" not in page and "&lt;script&gt;" in page and "&lt;b&gt;Local" in page
    assert 'href="javascript' not in page
    assert '<a href="https://x.actionbuilder.org/entity/view/b">Bo Diaz</a>' in page


def test_extra_sections_render_in_both_parts():
    repairs = Section(
        "Repairs",
        paragraphs=("2 tags were repaired.",),
        table=Table(("Member", "Repair"), ((Link("Ana", "https://x/a"), "added Local 1"),)),
    )
    report = _report([_row("a", "Local 1")], extra_sections=[repairs])
    assert report.sections[-1] is repairs
    assert "Repairs" in render_text(report) and "Ana <https://x/a>" in render_text(report)
    assert "2 tags were repaired." in render_html(report) and "added Local 1" in render_html(report)


def test_once_a_day_unless_forced():
    sent = {"day": DAY, "state": "sent", "run_id": "r1"}
    assert send_decision(None, day=DAY, force=False) == (True, "first_today")
    assert send_decision(sent, day=DAY, force=False)[0] is False
    assert send_decision(sent, day="2026-12-06", force=False)[0] is True
    assert send_decision(sent, day=DAY, force=True) == (True, "forced")
    # A send that failed, or a process that died while sending: the report still goes out.
    assert send_decision({**sent, "state": "failed"}, day=DAY, force=False)[0] is True
    assert send_decision({**sent, "state": "sending"}, day=DAY, force=False)[0] is True


# -- the email as sent ---------------------------------------------------------------------------------


def test_outbox_writes_a_multipart_eml_with_text_html_and_the_csv(tmp_path):
    sender = FileOutboxEmail(directory=str(tmp_path))
    path = sender.send(
        ["a@example.org"],
        "s",
        "plain body",
        (Attachment("r.csv", b"a,b\r\n1,2\r\n"),),
        html="<p>html body</p>",
    )
    [msg] = outbox_messages(tmp_path)
    assert msg.get_content_type() == "multipart/mixed" and path.endswith(".eml")
    assert msg.get_body(("plain",)).get_content().strip() == "plain body"
    assert msg.get_body(("html",)).get_content().strip() == "<p>html body</p>"
    [attachment] = list(msg.iter_attachments())
    assert attachment.get_filename() == "r.csv"


class _SendGridStandIn(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append({"path": self.path, "json": json.loads(body)})
        self.send_response(202)
        self.send_header("X-Message-Id", "sg-123")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_sendgrid_sends_the_text_and_the_html_part():
    server = HTTPServer(("127.0.0.1", 0), _SendGridStandIn)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        sender = SendGridEmail(api_key="SG.test", api_host=f"http://127.0.0.1:{server.server_port}")
        message_id = sender.send(
            ["a@example.org"], "s", "plain body", (Attachment("r.csv", b"a,b\r\n"),), html="<p>html</p>"
        )
    finally:
        server.shutdown()
    assert message_id == "sg-123"
    [request] = _SendGridStandIn.received
    assert request["path"] == "/v3/mail/send"
    assert request["json"]["content"] == [
        {"type": "text/plain", "value": "plain body"},
        {"type": "text/html", "value": "<p>html</p>"},
    ]
    assert request["json"]["attachments"][0]["filename"] == "r.csv"


def _email_meta(result) -> dict:
    [mat] = [
        e.materialization
        for e in result.get_asset_materialization_events()
        if e.asset_key == dg.AssetKey("mismatch_report_email")
    ]
    return {k: v.value for k, v in mat.metadata.items()}


def test_the_report_email_as_organizers_get_it(defs, instance, ab_sim, outbox):
    truth = ab_sim.data.expected_mismatches()
    active = [t for t in truth.values() if not t.inactive]
    result = run_job(defs, instance)
    assert result.success
    [msg] = outbox_messages(outbox)
    assert msg["Subject"].endswith(f": {plural(len(active), 'mismatch')} to fix")
    text = msg.get_body(("plain",)).get_content()
    html_part = msg.get_body(("html",)).get_content()
    assert f"{len(active)} active members need membership tags fixed" in text
    assert f"{len(truth) - len(active)} inactive members also have such tags" in text
    planned = sum(len(t.outdated_tagging_ids) for t in truth.values())
    assert f"would delete {planned} outdated tags" in text
    # Worst units first, in the email and in the CSV.
    per_unit = Counter(t.unit_name for t in active)
    worst = sorted(per_unit.items(), key=lambda kv: (-kv[1], kv[0]))[0]
    lines = text.splitlines()
    table = lines.index("Units with the most members to fix") + 2  # title, underline
    assert lines[table].split() == ["Unit", "Members", "to", "fix"]
    first_row = lines[table + 2]  # after the header's dashes
    assert first_row.startswith(worst[0]) and first_row[len(worst[0]) :].split() == [str(worst[1])]
    assert read_report(result)[0]["correct_unit"] == worst[0]
    assert "What to change in Action Builder" in html_part
    [attachment] = list(msg.iter_attachments())
    assert list(csv.DictReader(io.StringIO(attachment.get_content())))[0].keys() == set(REPORT_COLUMNS)


def test_a_live_cleanup_is_announced_and_a_blocked_one_does_not_hold_back_the_report(
    defs, instance, ab_sim, outbox
):
    planned = sum(len(t.outdated_tagging_ids) for t in ab_sim.data.expected_mismatches().values())
    blocked = run_job(defs, instance, dry_run=False, max_deletions=5)
    assert not blocked.success  # the cleanup fails the run (and alerts the administrators) ...
    assert _email_meta(blocked)["sent"] is True  # ... but the organizers still get their report
    [msg] = outbox_messages(outbox)
    text = msg.get_body(("plain",)).get_content()
    assert f"{planned} outdated tags were found, more than the cleanup may delete in one run (5)" in text

    live = run_job(defs, instance, dry_run=False, mismatch_report_email={"config": {"force": True}})
    assert live.success
    text = outbox_messages(outbox)[-1].get_body(("plain",)).get_content()
    assert f"The automatic cleanup deletes the {planned} outdated tags found in this run" in text
    assert "dry run" not in text and "Leave outdated tags alone" in text


# Five whole runs; the once-a-day rule does not depend on the campaign's size: 60 people, not 300.
@pytest.mark.parametrize(
    "ab_campaign", [generate_campaign(SeedConfig(people=60, seed=11))], ids=["60_people"]
)
def test_at_most_one_report_a_day_across_runs_and_processes(local_resources, ab_sim, outbox, tmp_path):
    """Each run opens the instance anew, as a separate process (or run worker) would."""
    from membership_assets.definitions import build_definitions

    defs = build_definitions(local_resources)
    home = tmp_path / "dagster_home"
    home.mkdir()

    def run(**email_config):
        with dg.DagsterInstance.local_temp(tempdir=str(home)) as inst:
            extra = {"mismatch_report_email": {"config": email_config}} if email_config else {}
            result = run_job(defs, inst, **extra)
            assert result.success
            return _email_meta(result)

    assert run()["sent"] is True
    again = run()
    assert again["sent"] is False and again["reason"].startswith("already_sent_today")
    assert len(outbox_messages(outbox)) == 1
    # A test send to someone else is not the organizers' report and is not held back.
    assert run(recipients="me@example.org")["sent"] is True
    assert run(force=True)["sent"] is True
    assert run()["sent"] is False
    assert [m["To"] for m in outbox_messages(outbox)] == [
        "organizers@example.org, steward@example.org",
        "me@example.org",
        "organizers@example.org, steward@example.org",
    ]


def test_a_failed_send_does_not_count_as_the_days_report(local_resources, instance, ab_sim, outbox):
    from membership_assets.definitions import build_definitions
    from membership_assets.notify.resources import EmailSender

    class BrokenEmail(EmailSender):
        def send(self, to, subject, body, attachments=(), html=None):
            raise RuntimeError("SendGrid is down")

    assert not run_job(build_definitions({**local_resources, "email": BrokenEmail()}), instance).success
    assert run_job(build_definitions(local_resources), instance).success
    assert len(outbox_messages(outbox)) == 1


# -- in a real browser ------------------------------------------------------------------------------


def test_the_report_email_reads_right_in_a_browser(defs, instance, ab_sim, outbox, page):
    truth = ab_sim.data.expected_mismatches()
    active = [t for t in truth.values() if not t.inactive]
    # In a thread of its own: Playwright's sync API keeps an event loop running in this one, which
    # Dagster would try (and fail) to shut down at the end of the run.
    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(run_job, defs, instance).result().success
    [msg] = outbox_messages(outbox)
    page.set_content(msg.get_body(("html",)).get_content())
    screenshot(page, "report_email")

    assert (
        page.locator("h1").inner_text()
        == f"{len(active)} active members need membership tags fixed in Action Builder."
    )
    titles = page.locator("h2").all_inner_texts()
    assert titles[:3] == [
        "What the check found",
        "What the cleanup will do",
        "What to change in Action Builder",
    ]
    steps = page.locator("ol li").all_inner_texts()
    assert steps[0].startswith("Open the attached ActionBuilder_Sync_Export_")
    assert any("correct_unit" in s and "tagged_unit" in s for s in steps)

    units = page.locator("table").first
    assert units.locator("th").all_inner_texts() == ["Unit", "Members to fix"]
    per_unit = Counter(t.unit_name for t in active)
    expected = sorted(per_unit.items(), key=lambda kv: (-kv[1], kv[0]))
    shown = [r.locator("td").all_inner_texts() for r in units.locator("tbody tr").all()]
    assert [(u, int(n)) for u, n in shown] == expected[: len(shown)]

    people = page.locator("table").nth(1)
    first_link = people.locator("a").first
    assert first_link.get_attribute("href").startswith(
        "http"
    ) and "/entity/view/" in first_link.get_attribute("href")
    assert page.get_by_text("Remove the outdated tag").is_visible()

"""The organizers' tag report: what the check found, what the cleanup does or will do, and what to
change in Action Builder, worst units first. Pure functions: facts in, an email (subject, plain
text, HTML) out; the assets only gather the facts and send.

A report is a list of sections, each a title with paragraphs, numbered steps and/or a table, so
another part (e.g. tag repairs) adds its own section without touching the others.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from .rules import FieldNames

PEOPLE_SHOWN = 25  # people listed in the email itself; the CSV has all
UNITS_SHOWN = 15
UNKNOWN_UNIT = "(unit unknown)"


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    """ "1 mismatch", "591 mismatches", "0 mismatches"."""
    if count == 1:
        return f"1 {singular}"
    return f"{count:,} {plural_form or _plural(singular)}"


def _verb(count: int, one: str, many: str) -> str:
    return one if count == 1 else many


def _plural(word: str) -> str:
    if word.endswith(("s", "sh", "ch", "x")):
        return word + "es"
    if word.endswith("y") and word[-2:-1] not in "aeiou":
        return word[:-1] + "ies"
    return word + "s"


# -- the report's structure -------------------------------------------------------------------


@dataclass(frozen=True)
class Link:
    text: str
    url: str


Cell = str | int | Link


@dataclass(frozen=True)
class Table:
    columns: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]
    more: str | None = None  # e.g. "and 12 more units (all in the CSV)"


@dataclass(frozen=True)
class Section:
    title: str
    paragraphs: tuple[str, ...] = ()
    steps: tuple[str, ...] = ()  # a numbered list
    table: Table | None = None


@dataclass(frozen=True)
class Report:
    subject: str
    headline: str
    sections: tuple[Section, ...]
    footer: tuple[str, ...] = ()


# -- facts the assets gather --------------------------------------------------------------------


@dataclass(frozen=True)
class ScanFacts:
    mode: str  # full | incremental
    since: str | None
    people: int
    judged: int
    quarantined: int
    notes: str | None = None


@dataclass(frozen=True)
class CleanupFacts:
    """What this run's cleanup is set to do. The report is sent whatever the cleanup's outcome
    (a blocked or failing cleanup alerts the administrators), so it states intent, not results."""

    dry_run: bool
    planned: int  # outdated taggings found, inactive members' included
    max_deletions: int

    @property
    def blocked(self) -> bool:
        """More planned than one run may delete: the cleanup deletes none."""
        return not self.dry_run and self.planned > self.max_deletions

    @property
    def deletes(self) -> bool:
        return not self.dry_run and not self.blocked and self.planned > 0


@dataclass(frozen=True)
class CampaignFacts:
    """Campaign-wide counts (see campaign_state); None when there has been no full scan yet."""

    total: int | None
    active: int | None
    active_by_unit: Mapping[str, int]
    full_scan_started_at: str | None
    incremental_scans_since_full: int = 0


# -- building ---------------------------------------------------------------------------------


def build_report(
    *,
    day: str,
    scan: ScanFacts,
    rows: Sequence[Mapping[str, str]],
    inactive: int,
    cleanup: CleanupFacts,
    campaign: CampaignFacts,
    csv_name: str,
    run_id: str,
    names: FieldNames = FieldNames(),
    extra_sections: Iterable[Section] = (),
) -> Report:
    """The whole email. ``rows`` are the CSV's rows, unescaped (rules.report_records)."""
    found = len(rows)
    subject = f"Action Builder membership tags {day}: " + (
        f"{plural(found, 'mismatch')} to fix" if found else "no mismatches found"
    )
    if scan.mode != "full" and campaign.active is not None:
        subject += f" ({campaign.active:,} in the campaign)"
    sections = [
        _found_section(scan, found, inactive, campaign, csv_name),
        _cleanup_section(cleanup),
        *([_steps_section(rows, cleanup, csv_name, names)] if found else []),
        *([_units_section(rows, scan, campaign)] if found or campaign.active else []),
        *([_people_section(rows)] if found else []),
        *extra_sections,
    ]
    footer = (
        f"Sent by the membership tag check of {day} (UTC). Organizers get at most one report a "
        "day per campaign.",
        *([f"Note from the scan: {scan.notes}"] if scan.notes else []),
        f"Reference for administrators: run {run_id}.",
    )
    return Report(subject, _headline(found), tuple(sections), footer)


def _headline(found: int) -> str:
    if not found:
        return "No membership tags to fix: every checked member's tags match their unit connection."
    verb = "needs" if found == 1 else "need"
    return f"{plural(found, 'active member')} {verb} membership tags fixed in Action Builder."


def _found_section(
    scan: ScanFacts, found: int, inactive: int, campaign: CampaignFacts, csv_name: str
) -> Section:
    if scan.mode == "full":
        scope = f"This was a full check of the campaign: {plural(scan.people, 'person', 'people')} read"
    else:
        scope = (
            f"This was a daily check of the {plural(scan.people, 'person', 'people')} changed in "
            f"Action Builder since {_when(scan.since)}"
        )
    paragraphs = [
        f"{scope}; {plural(scan.judged, 'member')} with a unit connection "
        f"{_verb(scan.judged, 'was', 'were')} compared with it.",
        (
            f"{plural(found, 'active member')} {_verb(found, 'carries', 'carry')} unit, membership type "
            "or status tags that disagree "
            f"with their unit connection; the attached {csv_name} lists each one."
            if found
            else "No active member carries tags that disagree with their unit connection."
        ),
    ]
    if inactive:
        paragraphs.append(
            f"{plural(inactive, 'inactive member')} also {_verb(inactive, 'has', 'have')} such tags; "
            "they are not listed, and only the "
            "automatic cleanup touches their tags."
        )
    if scan.quarantined:
        paragraphs.append(
            f"{plural(scan.quarantined, 'person', 'people')} could not be read and "
            f"{_verb(scan.quarantined, 'was', 'were')} not checked "
            "(the administrators are told)."
        )
    paragraphs.append(_campaign_sentence(scan, campaign))
    return Section("What the check found", tuple(paragraphs))


def _campaign_sentence(scan: ScanFacts, campaign: CampaignFacts) -> str:
    if scan.mode == "full":
        return "A full check counts the whole campaign: these numbers are the campaign-wide ones."
    if campaign.active is None:
        return (
            "The campaign-wide count is not known yet: it starts with the first full check "
            "(monthly, on the 1st)."
        )
    basis = f"the full check of {_when(campaign.full_scan_started_at)}"
    if campaign.incremental_scans_since_full:
        basis += f" and {plural(campaign.incremental_scans_since_full, 'daily check')} since"
    members = plural(campaign.active, "active member")
    return (
        f"Across the whole campaign, {members} {_verb(campaign.active, 'has', 'have')} tags to fix ({basis})."
    )


def _cleanup_section(cleanup: CleanupFacts) -> Section:
    tags = plural(cleanup.planned, "outdated tag")
    if not cleanup.planned:
        lines = ["There are no outdated tags to delete."]
    elif cleanup.dry_run:
        lines = [
            "The automatic cleanup runs as a dry run: it deletes nothing.",
            f"When deletions are switched on it would delete {tags} (tags that contradict the unit "
            "connection). Until then, remove them by hand.",
        ]
    elif cleanup.blocked:
        lines = [
            f"{tags} were found, more than the cleanup may delete in one run ({cleanup.max_deletions:,}): "
            "it deletes none until an administrator has reviewed them. Remove them by hand, or wait.",
        ]
    else:
        lines = [
            f"The automatic cleanup deletes the {tags} found in this run (tags that contradict the "
            "unit connection). Do not remove them by hand.",
            "If a deletion fails, the administrators are alerted and the next run tries again.",
        ]
    lines.append("The cleanup never adds tags: the correct ones are added by hand, as below.")
    return Section("What the cleanup does" if cleanup.deletes else "What the cleanup will do", tuple(lines))


def _steps_section(
    rows: Sequence[Mapping[str, str]], cleanup: CleanupFacts, csv_name: str, names: FieldNames
) -> Section:
    fields = f"{names.unit}, {names.membership_type} and {names.membership_status}"
    steps = [
        f"Open the attached {csv_name} in a spreadsheet: one row per member, worst units first.",
        "Open the member in Action Builder with the link in the action_builder_url column "
        "(or in the list below).",
        f"Compare the columns: correct_unit, correct_membership_type and correct_membership_status are "
        f"what the member's unit connection says; tagged_unit, tagged_membership_type and "
        f"tagged_membership_status are the {fields} tags the member carries now. The what_to_change "
        "column says the same in words.",
        f"On the member's page, add each missing correct tag: under the field that what_to_change "
        f"names ({names.unit}, {names.membership_type} or {names.membership_status}), choose the value "
        "of the correct_ column.",
        (
            "Remove the outdated tag (the tagged_ value that differs from the correct_ one)."
            if not cleanup.deletes
            else "Leave outdated tags alone: the cleanup deletes them."
        ),
        "If a correct_ value is itself wrong (the member moved to another unit or changed type), fix "
        "the member's unit connection instead: it is what the check trusts, and the tags are checked "
        "against it again in the next run.",
    ]
    if any(r.get("blank_correct_value_reason") for r in rows):
        steps.append(
            "A blank correct_ cell means the unit connection says nothing certain about that field; "
            "blank_correct_value_reason says why. Leave that tag as it is, or fix the connection."
        )
    return Section("What to change in Action Builder", steps=tuple(steps))


def _units_section(rows: Sequence[Mapping[str, str]], scan: ScanFacts, campaign: CampaignFacts) -> Section:
    found: dict[str, int] = {}
    for r in rows:
        found[r["correct_unit"]] = found.get(r["correct_unit"], 0) + 1
    if campaign.active is not None and scan.mode != "full":
        by_unit = dict(campaign.active_by_unit)
        title = "Units with the most members to fix (whole campaign)"
        columns = ("Unit", "Members to fix", "Found in this check")
    else:
        by_unit = found
        title = "Units with the most members to fix" + (
            "" if scan.mode == "full" else " (people checked this time)"
        )
        columns = ("Unit", "Members to fix")
    ranked = sorted(by_unit.items(), key=lambda kv: (-kv[1], kv[0]))
    table_rows = tuple(
        (unit or UNKNOWN_UNIT, count, *([found.get(unit, 0)] if len(columns) == 3 else []))
        for unit, count in ranked[:UNITS_SHOWN]
    )
    rest = len(ranked) - UNITS_SHOWN
    return Section(
        title, table=Table(columns, table_rows, f"and {plural(rest, 'more unit')}" if rest > 0 else None)
    )


def _people_section(rows: Sequence[Mapping[str, str]]) -> Section:
    shown = rows[:PEOPLE_SHOWN]
    table_rows = tuple(
        (
            _person_cell(r),
            r["correct_unit"] or UNKNOWN_UNIT,
            r["what_to_change"] or "see blank_correct_value_reason in the CSV",
        )
        for r in shown
    )
    rest = len(rows) - len(shown)
    more = f"and {plural(rest, 'more member')} in the attached CSV" if rest > 0 else None
    title = "Members to fix" if rest <= 0 else f"The first {len(shown)} members to fix"
    return Section(title, table=Table(("Member", "Unit", "What to change"), table_rows, more))


def _person_cell(row: Mapping[str, str]) -> Cell:
    name = " ".join(p for p in (row.get("first_name"), row.get("last_name")) if p) or "(no name)"
    url = row.get("action_builder_url") or ""
    return Link(name, url) if url else name


def _when(iso: str | None) -> str:
    """An ISO timestamp as "2026-12-05 06:00 UTC"."""
    if not iso:
        return "the last check"
    return iso.replace("T", " ")[:16] + " UTC"


# -- rendering --------------------------------------------------------------------------------


def render_text(report: Report) -> str:
    """The plain-text part: the same content as the HTML, readable in any mail client."""
    out = [report.headline, ""]
    for section in report.sections:
        out += [section.title, "-" * len(section.title)]
        out += [*section.paragraphs]
        out += [f"{i}. {step}" for i, step in enumerate(section.steps, 1)]
        if section.table is not None:
            out += _text_table(section.table)
        out.append("")
    out += [*report.footer]
    return "\n".join(out) + "\n"


def _text_cell(cell: Cell) -> str:
    return f"{cell.text} <{cell.url}>" if isinstance(cell, Link) else str(cell)


def _text_table(table: Table) -> list[str]:
    cells = [list(table.columns), *[[_text_cell(c) for c in row] for row in table.rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(table.columns))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines + ([table.more] if table.more else [])


_STYLE = {
    "body": "font-family:Arial,Helvetica,sans-serif;font-size:15px;color:#1a1a1a;max-width:760px",
    "h1": "font-size:20px;margin:0 0 16px",
    "h2": "font-size:16px;margin:24px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px",
    "table": "border-collapse:collapse;margin:8px 0",
    "th": "text-align:left;border:1px solid #ccc;padding:4px 8px;background:#f2f2f2",
    "td": "border:1px solid #ccc;padding:4px 8px;vertical-align:top",
    "footer": "color:#666;font-size:12px;margin-top:24px",
}


def render_html(report: Report) -> str:
    """The HTML part: inline styles only (mail clients drop style sheets), every value escaped."""
    e = html.escape
    parts = [
        "<!DOCTYPE html>",
        f'<html lang="en"><head><meta charset="utf-8"><title>{e(report.subject)}</title></head>',
        f'<body style="{_STYLE["body"]}">',
        f'<h1 style="{_STYLE["h1"]}">{e(report.headline)}</h1>',
    ]
    for section in report.sections:
        parts.append(f'<h2 style="{_STYLE["h2"]}">{e(section.title)}</h2>')
        parts += [f"<p>{e(p)}</p>" for p in section.paragraphs]
        if section.steps:
            parts.append("<ol>" + "".join(f"<li>{e(s)}</li>" for s in section.steps) + "</ol>")
        if section.table is not None:
            parts.append(_html_table(section.table))
    parts.append(
        f'<div style="{_STYLE["footer"]}">' + "".join(f"<p>{e(f)}</p>" for f in report.footer) + "</div>"
    )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _html_cell(cell: Cell) -> str:
    if isinstance(cell, Link):
        # Only web links become links: a URL from the API must never run script in a mail client.
        if cell.url.lower().startswith(("https://", "http://")):
            return f'<a href="{html.escape(cell.url, quote=True)}">{html.escape(cell.text)}</a>'
        return html.escape(cell.text)
    return html.escape(str(cell))


def _html_table(table: Table) -> str:
    head = "".join(f'<th style="{_STYLE["th"]}">{html.escape(c)}</th>' for c in table.columns)
    body = "".join(
        "<tr>" + "".join(f'<td style="{_STYLE["td"]}">{_html_cell(c)}</td>' for c in row) + "</tr>"
        for row in table.rows
    )
    more = f"<p>{html.escape(table.more)}</p>" if table.more else ""
    return (
        f'<table style="{_STYLE["table"]}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{more}'
    )


# -- once a day -----------------------------------------------------------------------------------


def send_decision(last: Mapping | None, *, day: str, force: bool) -> tuple[bool, str]:
    """Whether the organizers get today's report, and why: at most one a day per campaign.

    ``last`` is the campaign's last report record ({day, state: sending|sent, run_id}). A record
    left ``sending`` (the process died while sending) does not count: a possible duplicate is
    better than a lost report.
    """
    if force:
        return True, "forced"
    if last and last.get("day") == day and last.get("state") == "sent":
        return False, f"already_sent_today (run {last.get('run_id')})"
    return True, "first_today"

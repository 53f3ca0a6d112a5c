"""The repair plan, the merge of attempts and the repairs report: pure functions, no Dagster."""

from __future__ import annotations

from dataclasses import replace

from membership_assets.action_builder.records import Connection, Entity, Tagging, Unit
from membership_assets.action_builder.repair import (
    HOLD_REASONS,
    deletions_left_to_cleanup,
    merge_repair_outcomes,
    person_outcomes,
    plan_repairs,
    repair_plan_section,
    repair_report_rows,
    repair_section,
)
from membership_assets.action_builder.rules import evaluate, plan_deletions

U, T, S = "Bargaining Unit", "Membership Type", "Membership Status"
CATALOG = [
    {"tag_id": "t-ua", "section": "Membership", "field": U, "name": "Local A"},
    {"tag_id": "t-ub", "section": "Membership", "field": U, "name": "Local B"},
    {"tag_id": "t-full", "section": "Membership", "field": T, "name": "Full"},
    {"tag_id": "t-prob", "section": "Membership", "field": T, "name": "Probationary"},
    {"tag_id": "t-act", "section": "Membership", "field": S, "name": "Active"},
]
UNITS = {"ua": Unit("ua", "Local A"), "ub": Unit("ub", "Local B"), "uc": Unit("uc", "Local C")}


class Campaign:
    """A few people built by hand: connections, connection taggings, own taggings."""

    def __init__(self):
        self.people, self.conns, self.taggings = [], [], []
        self._n = 0

    def _id(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}{self._n}"

    def person(self, pid: str, units: list[tuple[str, bool, dict]], own: dict[str, list[str]]):
        self.people.append(Entity(pid, "Person", "Ana", "Baker", None, None))
        for pos, (unit, inactive, conn_tags) in enumerate(units):
            cid = self._id("c")
            self.conns.append(Connection(cid, pid, unit, "People + Units", inactive, pos))
            for fname, values in conn_tags.items():
                for v in values if isinstance(values, list) else [values]:
                    self.taggings.append(
                        Tagging(self._id("g"), None, "connection", cid, "Membership", fname, v)
                    )
        ids = {}
        for fname, values in own.items():
            for v in values:
                tag = next((c["tag_id"] for c in CATALOG if c["field"] == fname and c["name"] == v), None)
                tgid = self._id("g")
                ids[(fname, v)] = tgid
                self.taggings.append(Tagging(tgid, tag, "person", pid, "Membership", fname, v))
        return ids

    def plan(self, catalog=CATALOG, **kw):
        ev = evaluate(self.people, self.conns, UNITS, self.taggings)
        return ev, plan_repairs(ev, self.taggings, catalog, **kw)


def steps_of(plan, pid):
    return [(s.seq, s.step, s.field, s.value, s.tagging_id, s.reason) for s in plan if s.person_id == pid]


def test_each_person_gets_adds_first_then_removals_or_a_hold_with_its_reason():
    c = Campaign()
    moved = c.person("moved", [("ub", True, {}), ("ua", False, {T: "Full"})], {U: ["Local B"], T: ["Full"]})
    c.person("missing", [("ua", False, {T: "Full"})], {U: ["Local A"]})
    dup = c.person("dup", [("ua", False, {})], {U: ["Local A", "Local B"]})
    changed = c.person(
        "changed", [("ua", False, {T: "Full", S: "Active"})], {U: ["Local A"], T: ["Probationary"]}
    )
    c.person("two", [("ua", False, {}), ("ub", False, {})], {U: ["Local A", "Local B"]})
    c.person("unknown_unit", [("zz", False, {T: "Full"})], {U: ["Local A"], T: ["Probationary"]})
    c.person("ambiguous", [("ua", False, {T: ["Full", "Probationary"]})], {U: ["Local B"]})
    c.person("no_tag", [("uc", False, {})], {U: ["Local A"]})
    c.person("former", [("ua", True, {S: "Active"})], {U: ["Local B"]})
    ev, plan = c.plan()

    assert steps_of(plan, "moved") == [
        (1, "add", U, "Local A", None, None),
        (2, "remove", U, "Local B", moved[(U, "Local B")], None),
    ]
    assert steps_of(plan, "missing") == [(1, "add", T, "Full", None, None)]
    assert steps_of(plan, "dup") == [(1, "remove", U, "Local B", dup[(U, "Local B")], None)]
    assert steps_of(plan, "changed") == [
        (1, "add", T, "Full", None, None),
        (2, "add", S, "Active", None, None),
        (3, "remove", T, "Probationary", changed[(T, "Probationary")], None),
    ]
    add = next(s for s in plan if s.person_id == "moved" and s.step == "add")
    assert (add.section, add.tag_id, add.mode) == ("Membership", "t-ua", "dry_run")
    holds = {s.person_id: s.reason for s in plan if s.step == "hold"}
    assert holds == {
        "two": "two_active_units",
        "unknown_unit": "unit_unknown",
        "ambiguous": "truth_ambiguous",
        "no_tag": "no_catalog_tag",
        "former": "former_member",
    }
    assert set(holds.values()) <= set(HOLD_REASONS)


def test_a_value_in_two_catalog_sections_or_an_unknown_tag_id_is_left_for_a_human():
    c = Campaign()
    c.person("p", [("ua", False, {})], {U: ["Local B"]})
    twice = [*CATALOG, {"tag_id": "t-ua2", "section": "Other", "field": U, "name": "Local A"}]
    _, plan = c.plan(catalog=twice)
    assert [(s.step, s.reason) for s in plan] == [("hold", "several_catalog_tags")]

    c = Campaign()
    c.person("q", [("ua", False, {})], {U: ["Local B"]})
    c.taggings = [t if t.item_type != "person" else replace(t, tag_id=None) for t in c.taggings]
    _, plan = c.plan()
    assert [(s.step, s.reason) for s in plan] == [("hold", "tag_id_unknown")]


def test_dry_run_by_default_and_a_live_plan_over_the_cap_is_blocked_whole():
    c = Campaign()
    for i in range(3):
        c.person(f"p{i}", [("ua", False, {})], {U: ["Local B"]})
    assert {s.mode for s in c.plan()[1]} == {"dry_run"}
    assert {s.mode for s in c.plan(live=True, max_repairs=3)[1]} == {"live"}
    assert {s.mode for s in c.plan(live=True, max_repairs=2)[1]} == {"blocked_cap"}


def test_the_report_says_what_repair_will_do_and_who_needs_a_human():
    c = Campaign()
    for i in range(2):
        c.person(f"p{i}", [("ua", False, {})], {U: ["Local B"]})
    c.person("two", [("ua", False, {}), ("ub", False, {})], {U: ["Local C"]})
    c.person("former", [("ua", True, {S: "Active"})], {U: ["Local B"]})

    def text(**kw) -> str:
        section = repair_plan_section(c.plan(**kw)[1])
        assert section.title == "Automatic tag repair"
        return " ".join([*section.paragraphs, *(str(cell) for row in section.table.rows for cell in row)])

    assert "Automatic repair is off: 2 people could be repaired" in text()
    assert "ACTION_BUILDER_APPLY_REPAIRS=true" in text()
    assert "2 people get the right tags added and then the outdated ones removed" in text(live=True)
    assert "nobody is repaired until an administrator" in text(live=True, max_repairs=1)
    # Held for a human, with the reason; former members are the cleanup's, not a human's.
    held = text()
    assert "1 person cannot be repaired automatically" in held
    assert HOLD_REASONS["two_active_units"] in held and HOLD_REASONS["former_member"] not in held
    assert "Ana" not in held and "Baker" not in held  # no names in the email's summary
    assert "Nobody needs a tag added." in render_text_of(repair_plan_section([]))


def render_text_of(section) -> str:
    return " ".join(section.paragraphs)


def test_the_cleanup_leaves_a_live_repairs_taggings_alone_and_keeps_the_rest():
    c = Campaign()
    c.person("moved", [("ua", False, {})], {U: ["Local B"]})
    c.person("no_tag", [("uc", False, {})], {U: ["Local A"]})
    c.person("former", [("ua", True, {S: "Active"})], {U: ["Local B"]})
    ev, dry = c.plan()
    deletions = plan_deletions(ev.mismatches)
    assert deletions_left_to_cleanup(deletions, dry) == deletions
    for kw in ({"max_repairs": 10}, {"max_repairs": 0}):  # live, and live but blocked by the cap
        _, live = c.plan(live=True, **kw)
        left = deletions_left_to_cleanup(deletions, live)
        assert {d.person_id for d in left} == {"no_tag", "former"}
        owned = {s.tagging_id for s in live if s.step == "remove"}
        assert owned and not owned & {d.tagging_id for d in left}  # never deleted twice


def row(pid, seq, step, action, attempt="a1", **kw):
    return {
        "person_id": pid,
        "seq": seq,
        "step": step,
        "action": action,
        "attempt_run_id": attempt,
        "error": None,
        **kw,
    }


def test_merge_keeps_an_earlier_attempts_work_and_settles_what_it_was_sending():
    earlier = [
        row("p1", 1, "add", "added"),
        row("p1", 2, "remove", "removed"),
        row("p2", 1, "add", "sending"),
        row("p2", 2, "remove", "sending"),
        row("p3", 1, "add", "pending"),
        row("p4", 1, "add", "failed"),
    ]
    latest = [
        row("p1", 1, "add", "added", "a2"),  # carried over
        row("p1", 2, "remove", "already_gone", "a2"),
        row("p2", 1, "add", "already_present", "a2"),  # the crashed POST went through
        row("p2", 2, "remove", "removed", "a2"),  # the crashed attempt never sent this DELETE
        row("p3", 1, "add", "added", "a2"),
        row("p4", 1, "add", "added", "a2"),
    ]
    merged = {
        (r["person_id"], r["seq"]): (r["action"], r["attempt_run_id"])
        for r in merge_repair_outcomes(earlier, latest)
    }
    assert merged == {
        ("p1", 1): ("added", "a1"),
        ("p1", 2): ("removed", "a1"),
        ("p2", 1): ("added", "a1"),
        ("p2", 2): ("removed", "a2"),
        ("p3", 1): ("added", "a2"),
        ("p4", 1): ("added", "a2"),
    }
    # An intent row of a re-execution that crashed too never hides what was sent before.
    again = merge_repair_outcomes(earlier, [row("p2", 1, "add", "pending", "a2")])
    assert [r["action"] for r in again if r["person_id"] == "p2"] == ["sending", "sending"]


def test_outcomes_report_and_section_say_what_was_repaired_and_what_needs_a_human():
    rows = [
        row("ok", 1, "add", "added", field=U, value="Local A", reason=None),
        row("ok", 2, "remove", "removed", field=U, value="=HYPERLINK(1)", reason=None),
        row("ok", 1000, "verify", "verified", field=None, value=None, reason=None),
        row("gone", 1, "add", "person_gone", field=T, value="Full", reason=None),
        row("human", 0, "hold", "needs_human", field=None, value=None, reason="two_active_units"),
        row("left", 0, "hold", "cleanup_only", field=None, value=None, reason="former_member"),
        row("bad", 1, "add", "added", field=T, value="Full", reason=None),
        row(
            "bad",
            1000,
            "verify",
            "still_mismatched",
            field=None,
            value=None,
            reason=None,
            error="still wrong: x",
        ),
    ]
    assert {p: o for p, (o, _) in person_outcomes(rows).items()} == {
        "ok": "repaired",
        "gone": "person_gone",
        "human": "needs_human",
        "left": "cleanup_only",
        "bad": "still_mismatched",
    }
    report = {
        r["uuid"]: r for r in repair_report_rows(rows, {"ok": {"given_name": "@Ana", "family_name": "B"}})
    }
    assert report["ok"]["added"] == "Bargaining Unit = Local A"
    assert report["ok"]["removed"] == "Bargaining Unit = =HYPERLINK(1)"
    assert report["ok"]["first_name"] == "'@Ana"  # formula triggers escaped
    assert report["human"]["why"] == HOLD_REASONS["two_active_units"]
    section = repair_section(rows)
    assert "1  repaired and verified" in section and "need a human" in section
    assert HOLD_REASONS["two_active_units"] in section and "Ana" not in section

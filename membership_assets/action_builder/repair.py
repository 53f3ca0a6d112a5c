"""Repair membership tags: add the values the active unit connection says, then remove the
outdated taggings, so a person is never left without a unit or type tag.

Pure planning (``plan_repairs``) plus its guarded execution (``execute_repairs``), verification
and the repairs report. Requests used, all documented (shared/reference/action-builder-api.md):
the Person Signup Helper ``POST /campaigns/{c}/people`` with ``add_tags`` (it silently ignores a
tag the catalog does not have, so only a read of the person's taggings proves an add),
``GET /people/{id}/taggings``, and ``DELETE /tags/{tag}/taggings/{tagging}``. ``remove_tags`` is
UNCERTAIN and never sent.

Per person, in this order: add (one POST for all missing values), read (the adds are there and
the outdated taggings still are), delete each outdated tagging, and after every person is done,
read again to verify. A removal happens only once the right value is proven present.
"""

from __future__ import annotations

import threading
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields, replace
from datetime import UTC, datetime
from typing import Any

from ..connectors.errors import ApiError, AuthError, NotFoundError
from .client import ActionBuilderClient
from .records import RecordError, Tagging, tagging_from_api
from .report import Section, Table, plural
from .rules import Evaluation, FieldNames, Mismatch, csv_cell

# Why a person is not repaired automatically (shown to organizers, stored in the audit).
HOLD_REASONS = {
    "two_active_units": "active in two units: either unit tag may be right",
    "unit_unknown": "the unit of the active connection could not be read",
    "truth_ambiguous": "the active connection carries several values for one field",
    "no_catalog_tag": "the right value has no tag in the campaign's catalog",
    "several_catalog_tags": "the right value matches several tags in the catalog",
    "tag_id_unknown": "an outdated tagging's tag is unknown, so it cannot be removed",
    "former_member": "no active unit connection (former member): not re-tagged, the cleanup "
    "removes outdated tags as before",
}
CLEANUP_ONLY = frozenset({"former_member"})  # not a human's job: the deletions handle them

STEPS = ("add", "remove", "hold", "verify")
MODES = ("live", "dry_run", "blocked_cap")
INTENT_ACTIONS = ("pending", "sending")
SUCCESS = frozenset({"added", "already_present", "removed", "already_gone"})
# Settled for good: a re-execution carries these over instead of asking Action Builder again.
FINAL = SUCCESS | {"person_gone", "tag_vanished", "kept"}
ACTIONS = (
    *INTENT_ACTIONS,
    *sorted(SUCCESS),
    "tag_vanished",  # the signup helper answered 2xx, yet the tag is not on the person
    "kept",  # an outdated tagging not removed because the right value could not be added
    "person_gone",  # 404: the person is no longer in the campaign
    "failed",
    "not_attempted",
    "dry_run",
    "blocked_cap",
    "needs_human",
    "cleanup_only",
    "verified",
    "still_mismatched",
    "unverified",
)
VERIFY_SEQ = 1000  # the verification row comes after every step of the person
AUDIT_BATCH_PEOPLE = 8  # people repaired per durable audit write (~32 requests, ~8 s at 4 req/s)


@dataclass(frozen=True)
class RepairStep:
    """One step of a person's repair, in order (``seq``): adds, then removals; or a hold."""

    person_id: str
    seq: int
    step: str  # add | remove | hold
    field: str | None
    value: str | None  # add: the value added; remove: the outdated value
    expected_value: str | None  # the value the person must end up with for this field
    section: str | None
    tag_id: str | None
    tagging_id: str | None  # remove: the outdated tagging
    reason: str | None  # hold: a HOLD_REASONS key
    mode: str  # live | dry_run | blocked_cap


def _clean(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    return value.strip() or None


def catalog_matches(
    catalog: Iterable[Mapping[str, Any]], field_name: str, value: str
) -> list[Mapping[str, Any]]:
    return [c for c in catalog if c.get("field") == field_name and _clean(c.get("name")) == value]


def _step(
    step: str, field: str | None, value: str | None, expected: str | None, **ids: Any
) -> dict[str, Any]:
    """A RepairStep's fields, short of person, order and mode."""
    return dict(step=step, field=field, value=value, expected_value=expected, reason=None) | {
        k: ids.get(k) for k in ("section", "tag_id", "tagging_id")
    }


def _person_plan(
    m: Mismatch, own: list[Tagging], catalog: list[Mapping[str, Any]], names: FieldNames
) -> tuple[list[dict[str, Any]], str | None]:
    """Steps (without mode) for one mismatched person, or the reason a human must look."""
    if m.inactive:
        return [], "former_member"
    if m.undetermined:
        return [], "unit_unknown" if names.unit in m.undetermined else "truth_ambiguous"
    if any(not t.tag_id for t in m.outdated_taggings):
        return [], "tag_id_unknown"
    expected = {
        names.unit: m.unit_name,
        names.membership_type: m.membership_type,
        names.membership_status: m.membership_status,
    }
    steps: list[dict[str, Any]] = []
    for fname in names.tag_fields:
        want = _clean(expected[fname])
        if want is None or any(t.field == fname and _clean(t.value) == want for t in own):
            continue
        found = catalog_matches(catalog, fname, want)
        if len(found) != 1:
            return [], "no_catalog_tag" if not found else "several_catalog_tags"
        steps.append(_step("add", fname, want, want, section=found[0]["section"], tag_id=found[0]["tag_id"]))
    for t in m.outdated_taggings:
        want = _clean(expected.get(t.field or ""))
        steps.append(
            _step(
                "remove", t.field, t.value, want, section=t.section, tag_id=t.tag_id, tagging_id=t.tagging_id
            )
        )
    return steps, None


def plan_repairs(
    evaluation: Evaluation,
    taggings: Iterable[Tagging],
    catalog: Iterable[Mapping[str, Any]],
    names: FieldNames = FieldNames(),
    *,
    live: bool = False,
    max_repairs: int = 500,
) -> list[RepairStep]:
    """Every mismatched person's repair steps, or a hold with its reason; people active in two
    units are held as well. ``catalog`` rows carry tag_id, section, field and name.

    Live plans over ``max_repairs`` people are ``blocked_cap`` as a whole (a circuit breaker:
    an admin decides), like the deletions' cap.
    """
    catalog = list(catalog)
    own: dict[str, list[Tagging]] = defaultdict(list)
    for t in taggings:
        if t.item_type == "person":
            own[t.item_id].append(t)
    planned: dict[str, list[dict[str, Any]]] = {}
    holds: dict[str, str] = {pid: "two_active_units" for pid in evaluation.several_active_units}
    for m in evaluation.mismatches:
        steps, reason = _person_plan(m, own.get(m.person_id, []), catalog, names)
        if reason is not None:
            holds[m.person_id] = reason
        elif steps:
            planned[m.person_id] = steps
    mode = "dry_run" if not live else ("blocked_cap" if len(planned) > max_repairs else "live")
    out = [
        RepairStep(person_id=pid, seq=i, mode=mode, **s)
        for pid in sorted(planned)
        for i, s in enumerate(sorted(planned[pid], key=lambda s: s["step"] != "add"), start=1)
    ]
    empty = dict.fromkeys(("field", "value", "expected_value", "section", "tag_id", "tagging_id"))
    out.extend(
        RepairStep(person_id=pid, seq=0, step="hold", reason=r, mode=mode, **empty)
        for pid, r in sorted(holds.items())
    )
    return out


def deletions_left_to_cleanup(deletions: Iterable[Any], repair_steps: Iterable[RepairStep]) -> list[Any]:
    """The planned deletions the cleanup still does: not those a live (or cap-blocked) repair
    owns, so no tagging is ever deleted twice and a repairable person never loses a tag
    before the right one is added. A dry-run repair leaves the cleanup as it was."""
    owned = {s.tagging_id for s in repair_steps if s.step == "remove" and s.mode != "dry_run"}
    return [d for d in deletions if d.tagging_id not in owned]


# -- execution ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RepairOutcome:
    person_id: str
    seq: int
    step: str
    field: str | None
    value: str | None
    expected_value: str | None
    tag_id: str | None
    tagging_id: str | None
    reason: str | None
    action: str
    error: str | None
    acted_at: str

    def as_row(self) -> dict[str, Any]:
        return asdict(self)


OUTCOME_COLUMNS = [f.name for f in fields(RepairOutcome)]
Journal = Callable[[list[RepairOutcome]], None]


def _outcome(s: RepairStep, action: str, error: str | None = None) -> RepairOutcome:
    return RepairOutcome(
        person_id=s.person_id,
        seq=s.seq,
        step=s.step,
        field=s.field,
        value=s.value,
        expected_value=s.expected_value,
        tag_id=s.tag_id,
        tagging_id=s.tagging_id,
        reason=s.reason,
        action=action,
        error=error,
        acted_at=datetime.now(UTC).isoformat(),
    )


def _read(client: ActionBuilderClient, person_id: str) -> list[Tagging]:
    raws = client.list_person_taggings(person_id)
    return [tagging_from_api(r, item_type="person", item_id=person_id) for r in raws]


def _carries(own: list[Tagging], field_name: str | None, value: str | None) -> bool:
    return any(t.field == field_name and _clean(t.value) == value for t in own)


def repair_person(
    client: ActionBuilderClient, steps: list[RepairStep], resume: bool
) -> tuple[dict[int, tuple], list[Tagging] | None]:
    """Add, read, remove for one person: ``{seq: (action, error)}``, and the person's taggings
    as last read when no DELETE followed that read (then it is the final state, and
    verification needs no second read). AuthError propagates.

    ``resume``: an earlier attempt may have sent requests for this person, so read first and
    send only what is still missing (no second POST when its tags are already there).
    """
    adds = [s for s in steps if s.step == "add"]
    removes = [s for s in steps if s.step == "remove"]
    pid = steps[0].person_id
    out: dict[int, tuple] = {}
    own: list[Tagging] | None = None
    deleted = False
    try:
        own = _read(client, pid) if resume or not adds else []
        posted = bool(adds) and not all(_carries(own, a.field, a.value) for a in adds)
        if posted:
            tags = [
                {"action_builder:section": a.section, "action_builder:field": a.field, "name": a.value}
                for a in adds
            ]
            client.add_person_tags(pid, tags)
            own = _read(client, pid)
        for a in adds:
            if _carries(own, a.field, a.value):
                out[a.seq] = ("added" if posted else "already_present", None)
            else:
                out[a.seq] = (
                    "tag_vanished",
                    f"{a.field!r} = {a.value!r} not on the person after the signup helper",
                )
        held = {t.tagging_id for t in own}
        for r in removes:
            if not all(out[a.seq][0] in SUCCESS for a in adds) or not _carries(
                own, r.field, r.expected_value
            ):
                out[r.seq] = ("kept", f"not removed: {r.field!r} = {r.expected_value!r} is not on the person")
            elif r.tagging_id not in held:
                out[r.seq] = ("already_gone", None)
            else:
                deleted = True
                out[r.seq] = (
                    "removed"
                    if client.delete_tagging(r.tag_id or "", r.tagging_id or "") == "deleted"
                    else "already_gone",
                    None,
                )
    except AuthError:
        raise
    except NotFoundError:
        out.update({s.seq: ("person_gone", "404: not in the campaign") for s in steps if s.seq not in out})
    except (ApiError, RecordError) as exc:
        out.update({s.seq: ("failed", str(exc)[:500]) for s in steps if s.seq not in out})
    return out, (None if deleted or len(out) < len(steps) else own)


def judge(own: list[Tagging], expected: Mapping[str, str]) -> tuple[str, str | None]:
    """Verified when each repaired field carries exactly the expected value."""
    wrong = sorted(f for f, v in expected.items() if {_clean(t.value) for t in own if t.field == f} != {v})
    return ("still_mismatched", f"still wrong: {', '.join(wrong)}") if wrong else ("verified", None)


def verify_person(client: ActionBuilderClient, person_id: str, expected: Mapping[str, str]) -> tuple:
    """Re-read one repaired person: each repaired field carries exactly the expected value."""
    try:
        own = _read(client, person_id)
    except AuthError:
        raise
    except NotFoundError:
        return "person_gone", "404: not in the campaign"
    except (ApiError, RecordError) as exc:
        return "unverified", str(exc)[:500]
    return judge(own, expected)


def execute_repairs(
    client: ActionBuilderClient | None,
    steps: list[RepairStep],
    *,
    workers: int = 8,
    journal: Journal | None = None,
    earlier: Mapping[tuple[str, int], str] | None = None,
    verify_budget: int = 2000,
    batch: int = AUDIT_BATCH_PEOPLE,
) -> list[RepairOutcome]:
    """Carry out (or only record) the plan; one outcome per step plus a verification per person.

    ``journal`` must make the rows durable before returning: first every live step ``pending``,
    then before each batch of people is started their steps ``sending`` (with the outcomes known
    so far), and at the end every outcome. ``earlier``
    maps (person_id, seq) to an earlier attempt's action: settled people are carried over
    without a request, others with any earlier progress are read before anything is sent.
    """
    earlier = earlier or {}
    record = journal or (lambda _rows: None)
    state: dict[tuple[str, int], RepairOutcome] = {}
    by_person: dict[str, list[RepairStep]] = defaultdict(list)
    for s in steps:
        if s.step == "hold":
            state[(s.person_id, s.seq)] = _outcome(
                s, "cleanup_only" if s.reason in CLEANUP_ONLY else "needs_human"
            )
        elif s.mode != "live":
            state[(s.person_id, s.seq)] = _outcome(s, s.mode)
        else:
            by_person[s.person_id].append(s)
    if by_person and client is None:
        raise ValueError("live repairs need an Action Builder client")
    settled = {p for p, ss in by_person.items() if all(earlier.get((p, s.seq)) in FINAL for s in ss)}
    for pid in settled:
        state.update({(pid, s.seq): _outcome(s, earlier[(pid, s.seq)]) for s in by_person[pid]})
    todo = sorted(set(by_person) - settled)
    for pid in todo:
        state.update({(pid, s.seq): _outcome(s, "pending") for s in by_person[pid]})
    if todo:
        record(list(state.values()))
    stop: dict[str, str | None] = {"auth": None}
    lock = threading.Lock()  # worker threads write outcomes while the journal takes snapshots
    final: dict[str, list[Tagging]] = {}  # people whose last read is their state after repair

    def run(pid: str) -> None:
        ss = by_person[pid]
        if stop["auth"] is not None:
            with lock:
                state.update({(pid, s.seq): _outcome(s, "not_attempted", stop["auth"]) for s in ss})
            return
        resume = any(earlier.get((pid, s.seq)) not in (None, "pending") for s in ss)
        try:
            result, last_read = repair_person(client, ss, resume)  # type: ignore[arg-type]
        except AuthError as exc:
            stop["auth"] = str(exc)
            result, last_read = {s.seq: ("failed", str(exc)) for s in ss}, None
        with lock:
            if last_read is not None:
                final[pid] = last_read
            state.update({(pid, s.seq): _outcome(s, *result[s.seq]) for s in ss})

    def snapshot() -> list[RepairOutcome]:
        with lock:
            return list(state.values())

    with ThreadPoolExecutor(max(workers, 1), thread_name_prefix="ab-repair") as pool:
        # Two batches in flight: the next batch's "sending" is made durable while the current
        # one runs, so the rate budget never idles on a batch's stragglers or an audit write.
        in_flight: deque[list[Future]] = deque()
        for start in range(0, len(todo), max(batch, 1)):
            chunk = todo[start : start + max(batch, 1)]
            if len(in_flight) >= 2:
                for future in in_flight.popleft():
                    future.result()
            if stop["auth"] is None:
                with lock:
                    state.update({(p, s.seq): _outcome(s, "sending") for p in chunk for s in by_person[p]})
            record(snapshot())  # this batch's intent (and earlier batches' outcomes) before it runs
            in_flight.append([pool.submit(run, p) for p in chunk])
        for future in (f for futures in in_flight for f in futures):
            future.result()
        if todo:
            record(snapshot())
        _verify_all(client, by_person, state, pool, verify_budget, stop, final)
    return sorted(state.values(), key=lambda o: (o.person_id, o.seq))


def _verify_row(step: RepairStep, action: str, error: str | None) -> RepairOutcome:
    empty = dict.fromkeys(("field", "value", "expected_value", "tag_id", "tagging_id", "reason"))
    return _outcome(replace(step, seq=VERIFY_SEQ, step="verify", **empty), action, error)


def _verify_all(client, by_person, state, pool, budget: int, stop, final) -> None:
    """Judge every repaired person's state after repair: from their last read when nothing was
    sent after it, else re-read, up to ``budget`` reads (the rest are ``unverified``)."""
    repaired = sorted(
        p for p, ss in by_person.items() if all(state[(p, s.seq)].action in SUCCESS for s in ss)
    )
    expected = {p: {s.field: s.expected_value for s in by_person[p] if s.field} for p in repaired}
    for pid in (p for p in repaired if p in final):
        state[(pid, VERIFY_SEQ)] = _verify_row(by_person[pid][0], *judge(final[pid], expected[pid]))
    repaired = [p for p in repaired if p not in final]
    checked = repaired[: max(budget, 0)] if stop["auth"] is None else []

    results = pool.map(lambda p: verify_person(client, p, expected[p]), checked)
    for pid, (action, error) in zip(checked, results, strict=True):
        state[(pid, VERIFY_SEQ)] = _verify_row(by_person[pid][0], action, error)
    for pid in repaired[len(checked) :]:
        state[(pid, VERIFY_SEQ)] = _verify_row(
            by_person[pid][0],
            "unverified",
            "over the verification budget" if stop["auth"] is None else stop["auth"],
        )


def merge_repair_outcomes(
    earlier: list[dict[str, Any]], latest: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """One audit row per step for a logical run across its attempts (re-executions).

    The latest attempt wins, except: a step an earlier attempt completed stays that attempt's
    (a re-execution finding it done, or carrying it over, does not take it); and a step an
    earlier attempt was ``sending`` when it crashed is that attempt's when the re-execution
    finds it done (the tag already present, the tagging already gone).
    """
    rows = {(r["person_id"], int(r["seq"])): r for r in earlier}
    for row in latest:
        key = (row["person_id"], int(row["seq"]))
        before = rows.get(key)
        was = before["action"] if before is not None else None
        now = row["action"]
        if was in FINAL and (now == was or (was in SUCCESS and now in SUCCESS | set(INTENT_ACTIONS))):
            continue
        if was == "sending" and now in INTENT_ACTIONS:
            continue
        if was == "sending" and now in ("already_present", "already_gone"):
            done = "added" if now == "already_present" else "removed"
            rows[key] = {**before, "action": done, "error": None}
            continue
        rows[key] = row
    return sorted(rows.values(), key=lambda r: (r["person_id"], int(r["seq"])))


# -- report ---------------------------------------------------------------------------------------

# The repairs CSV for the organizers: column -> what it holds.
REPAIR_REPORT_SCHEMA = {
    "uuid": "The person's Action Builder id.",
    "outcome": "What happened to the person's tags (repaired, would be repaired, needs a human, ...).",
    "added": "Tags added (field: value), in order.",
    "removed": "Outdated tags removed (field: value), after the right ones were on.",
    "why": "For a person left to a human: why the repair could not be done automatically.",
    "first_name": "Personal data: for finding the person in Action Builder.",
    "last_name": "Personal data: for finding the person in Action Builder.",
    "action_builder_url": "The person's page in Action Builder.",
}
REPAIR_REPORT_COLUMNS = list(REPAIR_REPORT_SCHEMA)
# The repair plan (planned_tag_repairs): RepairStep's fields.
REPAIR_STEP_DESCRIPTIONS = {
    "person_id": "The person's Action Builder id.",
    "seq": "Order of the step within the person's repair (adds first, then removals).",
    "step": "add | remove | hold",
    "field": "The tag field (unit, membership type or status).",
    "value": "add: the value added; remove: the outdated value.",
    "expected_value": "The value the person must end up with for this field.",
    "section": "The tag's catalog section.",
    "tag_id": "The catalog tag added or whose tagging is removed.",
    "tagging_id": "remove: the outdated tagging.",
    "reason": "hold: why a human must look (a HOLD_REASONS key).",
    "mode": "live | dry_run | blocked_cap (over the run's cap: nobody repaired).",
}
REPAIR_REPORT_NAME_COLUMNS = ("first_name", "last_name")
# A person's outcome, from their rows: the first rule that matches.
OUTCOME_TEXT = {
    "repaired": "repaired and verified",
    "repaired_unverified": "repaired, not re-read (verification budget)",
    "still_mismatched": "repaired, but the re-read still disagrees",
    "would_repair": "would be repaired (dry run)",
    "blocked_cap": "not repaired: more people than the per-run cap",
    "needs_human": "needs a human",
    "cleanup_only": "left to the cleanup",
    "person_gone": "not repaired: no longer in the campaign",
    "tag_vanished": "not repaired: the right tag vanished from the catalog",
    "failed": "not repaired: Action Builder did not answer",
    "in_progress": "not settled (the run stopped)",
}


def person_outcomes(rows: Iterable[Mapping[str, Any]]) -> dict[str, tuple[str, str]]:
    """``{person_id: (outcome, why)}``, outcome a key of OUTCOME_TEXT."""
    by_person: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for r in rows:
        by_person[r["person_id"]].append(r)
    out = {}
    for pid, rs in by_person.items():
        actions = {r["action"] for r in rs}
        hold = next((r for r in rs if r["step"] == "hold"), None)
        verify = next((r["action"] for r in rs if r["step"] == "verify"), None)
        if hold is not None:
            kind = "cleanup_only" if hold["action"] == "cleanup_only" else "needs_human"
            out[pid] = (kind, HOLD_REASONS.get(hold["reason"], str(hold["reason"])))
        elif "dry_run" in actions:
            out[pid] = ("would_repair", "")
        elif "blocked_cap" in actions:
            out[pid] = ("blocked_cap", "")
        elif "person_gone" in actions:
            out[pid] = ("person_gone", "")
        elif "tag_vanished" in actions:
            out[pid] = ("tag_vanished", "")
        elif actions & {"failed", "not_attempted"}:
            out[pid] = (
                "failed",
                next(r["error"] for r in rs if r["action"] in ("failed", "not_attempted")) or "",
            )
        elif actions & set(INTENT_ACTIONS):
            out[pid] = ("in_progress", "")
        elif verify == "verified":
            out[pid] = ("repaired", "")
        elif verify == "still_mismatched":
            out[pid] = ("still_mismatched", next(r["error"] for r in rs if r["step"] == "verify") or "")
        else:
            out[pid] = ("repaired_unverified", "")
    return out


def repair_report_rows(
    rows: list[Mapping[str, Any]], people: Mapping[str, Mapping[str, Any]] | None = None
) -> list[dict[str, str]]:
    """The repairs CSV: one row per person the repair looked at; cells escaped like the report's.

    ``people`` maps person_id to given_name, family_name and browser_url (for the organizers).
    """
    people = people or {}
    outcomes = person_outcomes(rows)
    steps: dict[str, dict[str, list[str]]] = defaultdict(lambda: {"add": [], "remove": []})
    for r in rows:
        if r["step"] in ("add", "remove"):
            steps[r["person_id"]][r["step"]].append(f"{r['field']} = {r['value']}")
    out = []
    for pid, (outcome, why) in outcomes.items():
        who = people.get(pid, {})
        out.append(
            {
                "uuid": pid,
                "outcome": OUTCOME_TEXT[outcome],
                "added": "; ".join(steps[pid]["add"]),
                "removed": "; ".join(steps[pid]["remove"]),
                "why": why,
                "first_name": who.get("given_name") or "",
                "last_name": who.get("family_name") or "",
                "action_builder_url": who.get("browser_url") or "",
            }
        )
    out.sort(key=lambda r: (r["outcome"], r["last_name"], r["first_name"], r["uuid"]))
    return [{k: csv_cell(v) for k, v in r.items()} for r in out]


def repair_counts(rows: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    return dict(sorted(Counter(o for o, _ in person_outcomes(rows).values()).items()))


def repair_section(rows: list[Mapping[str, Any]]) -> str:
    """The report email's repairs section (plain text, no personal data): what was repaired,
    what needs a human and why. The CSV has the people."""
    outcomes = person_outcomes(rows)
    counts = Counter(o for o, _ in outcomes.values())
    if not outcomes:
        return "Tag repair: nothing to repair."
    lines = ["Tag repair:"]
    for key, text in OUTCOME_TEXT.items():
        if counts.get(key) and key != "needs_human":
            lines.append(f"  {counts[key]:5d}  {text}")
    human = Counter(why for o, why in outcomes.values() if o == "needs_human")
    if human:
        lines.append(f"  {sum(human.values()):5d}  need a human:")
        lines.extend(f"         {n:5d}  {why}" for why, n in human.most_common())
    lines.append("The attached repairs CSV lists each person with what was added and removed.")
    return "\n".join(lines)


def repair_plan_section(steps: Sequence[RepairStep]) -> Section:
    """The report email's word on automatic repair, from the plan (sent before repairs run, like
    the cleanup's): who is or would be repaired, and who needs a human and why. No names."""
    planned = {s.person_id: s.mode for s in steps if s.step != "hold"}
    held = Counter(
        HOLD_REASONS.get(s.reason or "", s.reason or "")
        for s in steps
        if s.step == "hold" and s.reason not in CLEANUP_ONLY
    )
    modes = Counter(planned.values())
    n = len(planned)
    if not n and not held:
        return Section("Automatic tag repair", ("Nobody needs a tag added.",))
    if modes.get("live"):
        lead = (
            f"{plural(n, 'person', 'people')} get the right tags added and then the outdated ones "
            "removed by this run (added first, so nobody is left without a tag). The repairs CSV "
            "of this run lists each of them."
        )
    elif modes.get("blocked_cap"):
        lead = (
            f"{plural(n, 'person', 'people')} are planned for automatic repair, more than this run "
            "may repair: nobody is repaired until an administrator reviews the plan and raises the "
            "cap. Until then, fix them by hand as described above."
        )
    else:
        lead = (
            f"Automatic repair is off: {plural(n, 'person', 'people')} could be repaired "
            "automatically once an administrator sets ACTION_BUILDER_APPLY_REPAIRS=true. Until "
            "then, fix them by hand as described above."
        )
    table = None
    if held:
        table = Table(
            ("Why a person needs a human", "People"), tuple((why, k) for why, k in held.most_common())
        )
    paragraphs = (lead,) + (
        (f"{plural(sum(held.values()), 'person', 'people')} cannot be repaired automatically:",)
        if held
        else ()
    )
    return Section("Automatic tag repair", paragraphs, table=table)

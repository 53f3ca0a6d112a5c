"""Benchmark: a full Action Builder campaign scan against the simulator at the real rate limit.

Runs the pipeline's own scan code (client, limiter, checkpoint, scanner) over real HTTP against
the simulator, which enforces the rate limit with 429 + Retry-After and answers each request
after a fixed latency, then checks the result against the simulator's ground truth. Prints
requests, requests per person, wall time, the floor (requests / rate limit) and efficiency
(floor / wall), and how far the request count is from the minimum the API makes possible.

    python -m benchmarks.ab_scan                      # 3,000 people at 4 req/s (~4 minutes)
    python -m benchmarks.ab_scan --people 14000       # the reference campaign's size (~16 minutes)
    python -m benchmarks.ab_scan --quick              # every read strategy at 200 req/s, no latency
    python -m benchmarks.ab_scan --resume             # crash halfway, resume from the checkpoint
    python -m benchmarks.ab_scan --people 300 --limiter strict   # sliding 1 s window, 10 s block
    python -m benchmarks.ab_scan --people 300 --limiter shared   # another client spends 1 req/s
    python -m benchmarks.ab_scan --people 300 --limiter strict_shared --repeat 3
                                          # strict window, Retry-After 2, another client at 1 req/s

The floor is the successful requests divided by the rate available to the scan (the limit, less
what another client spends); targets: plain limiter >= 99% of the floor, strict window within
1.25x, shared budget within 1.5x, strict window shared with another client within 1.25x, and no
scan aborted. The machine's load average is recorded with each run: on a busy machine threads wake
late and the ratios drift, so prefer short runs repeated (``--repeat``).

``--save NAME`` writes the numbers to benchmarks/results/NAME.json and .md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from membership_assets.action_builder.checkpoint import ScanCheckpoint
from membership_assets.action_builder.client import PER_PAGE_MAX, ActionBuilderClient
from membership_assets.action_builder.rules import FieldNames, evaluate
from membership_assets.action_builder.scan import SAMPLE_SIZE, CampaignScanner, sample_order
from membership_assets.simulators.action_builder import (
    ActionBuilderSimulator,
    SharedBudget,
    SlidingWindowLimiter,
    make_limiter,
)
from membership_assets.simulators.action_builder_seed import CampaignData, SeedConfig, generate_campaign

RESULTS = Path(__file__).parent / "results"
REFERENCE_HOURS_14K = 8.0  # SGShuman/actionbuilder_updater README: "~14K entries ... ~8 hours"
LIMITERS = ("plain", "strict", "shared", "strict_shared")
# Wall time may be at most this multiple of the floor (plain: efficiency >= 99%).
TARGET_OF_FLOOR = {"plain": 1 / 0.99, "strict": 1.25, "shared": 1.5, "strict_shared": 1.25}
OTHER_CLIENT_RATE = 1.0  # what the "shared" limiters' other client spends
STRICT_SHARED_BLOCK = 2.0  # seconds the shared strict window blocks after an excess (Retry-After)


def server_limiter(kind: str, rate: float) -> Any:
    """The simulator's limiter for ``kind``; ``strict_shared`` is a strict sliding window
    answering Retry-After 2, of which another client spends ``OTHER_CLIENT_RATE``."""
    if kind == "plain":
        return None
    if kind == "strict_shared":
        window = SlidingWindowLimiter(limit=max(1, int(rate)), window=1.0, penalty=STRICT_SHARED_BLOCK)
        return SharedBudget(window, other_rate=OTHER_CLIENT_RATE)
    return make_limiter(kind, rate)


def pages(items: int) -> int:
    """Requests to list ``items`` things: an empty listing still costs one."""
    return max(1, math.ceil(items / PER_PAGE_MAX))


# -- what the API makes possible ------------------------------------------------------------------


@dataclass
class Workload:
    """Request counts derived from the simulator's data, independent of the pipeline's code."""

    people: int
    units: int
    judged: int
    people_pages: int
    tag_catalog_pages: int
    unit_connection_pages: int
    person_connection_pages: int
    ordering_requests: int
    tag_tagging_pages: int
    person_tagging_requests: int
    reference_requests: int
    catalog_check_requests: int = 2  # connection types + entity types (one page each)
    sample_check_requests: int = 0  # per-person reads checking the per-unit listings

    @property
    def per_unit_connection_requests(self) -> int:
        return self.unit_connection_pages + self.ordering_requests + self.sample_check_requests

    @property
    def connection_requests(self) -> int:
        return min(self.per_unit_connection_requests, self.person_connection_pages)

    @property
    def tagging_requests(self) -> int:
        return min(self.tag_tagging_pages, self.person_tagging_requests)

    @property
    def minimum(self) -> int:
        return (
            self.people_pages
            + self.tag_catalog_pages
            + self.catalog_check_requests
            + self.connection_requests
            + self.tagging_requests
        )


def workload(data: CampaignData, names: FieldNames = FieldNames()) -> Workload:
    """The fewest requests that read everything the rules need, and what the reference script makes.

    Every listing is 25 per page. Connections come either per person or per unit (a unit's
    listing holds all its members' connections); a person with several inactive unit
    connections needs their own listing too, since only it orders them. Membership taggings come
    either per judged person (own taggings + source connection's) or per membership tag.
    """
    entities = data.entities
    kind = {eid: e["entity_type"].strip().lower() for eid, e in entities.items()}
    people = [e for e in data.entity_order if kind[e] == "person"]
    units = [e for e in data.entity_order if kind[e] == names.unit_entity_type.lower()]
    conns_of: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for c in data.connections.values():  # insertion order = the simulator's listing order
        conns_of[c["a"]].append(c)
        conns_of[c["b"]].append(c)
    taggings_of: dict[tuple[str, str], int] = defaultdict(int)
    taggings_of_tag: dict[str, int] = defaultdict(int)
    for t in data.taggings.values():
        taggings_of[(t["item_type"], t["item_id"])] += 1
        taggings_of_tag[t["tag_id"]] += 1
    membership_tags = [tid for tid, t in data.tags.items() if t["field"] in names.tag_fields]

    judged = ordering = person_taggings = reference = 0
    ordered: set[str] = set()
    for pid in people:
        conns = conns_of[pid]
        unit_conns = [c for c in conns if c["type"] == names.connection_type]
        active = [c for c in unit_conns if not c["inactive"]]
        # Reference script: person, connections, unit entity, connection taggings, person taggings.
        reference += 1 + pages(len(conns)) + pages(taggings_of[("person", pid)])
        if unit_conns:
            reference += (1 if active else 0) + pages(taggings_of[("connection", unit_conns[0]["id"])])
        if not unit_conns or len(active) > 1:
            continue  # not judged: no truth, or two units' truths
        judged += 1
        if len(unit_conns) > 1 and not active:
            ordering += pages(len(conns))
            ordered.add(pid)
        source = (active or unit_conns)[0]
        person_taggings += pages(taggings_of[("person", pid)]) + pages(
            taggings_of[("connection", source["id"])]
        )
    # Per-unit listings are checked against a fixed sample of people read one by one.
    sample = sorted(people, key=sample_order)[:SAMPLE_SIZE]
    sample_check = sum(pages(len(conns_of[p])) for p in sample if p not in ordered)
    return Workload(
        sample_check_requests=sample_check,
        people=len(people),
        units=len(units),
        judged=judged,
        people_pages=pages(len(entities)),
        tag_catalog_pages=pages(len(data.tags)),
        unit_connection_pages=sum(pages(len(conns_of[u])) for u in units),
        person_connection_pages=sum(pages(len(conns_of[p])) for p in people),
        ordering_requests=ordering,
        tag_tagging_pages=sum(pages(taggings_of_tag[t]) for t in membership_tags),
        person_tagging_requests=person_taggings,
        reference_requests=reference + pages(len(entities)),
    )


# -- one measured scan ----------------------------------------------------------------------------


@dataclass
class Measurement:
    label: str
    people: int
    rate_limit: float
    latency: float
    workers: int
    strategy: str
    connections_strategy: str
    requests: int
    rate_limited_429: int
    wall_seconds: float
    mismatches: int
    exact: bool
    minimum_requests: int
    by_kind: dict[str, int] = field(default_factory=dict)
    resumed_items: int = 0
    limiter: str = "plain"
    aborted: str | None = None
    load_average: float | None = None  # 1-minute load average when the run ended

    @property
    def requests_per_person(self) -> float:
        return self.requests / self.people

    @property
    def available_rate(self) -> float:
        shared = self.limiter in ("shared", "strict_shared")
        return self.rate_limit - (OTHER_CLIENT_RATE if shared else 0.0)

    @property
    def floor_seconds(self) -> float:
        return (self.requests - self.rate_limited_429) / self.available_rate

    @property
    def of_floor(self) -> float:
        return self.wall_seconds / self.floor_seconds

    @property
    def meets_target(self) -> bool:
        return self.aborted is None and self.exact and self.of_floor <= TARGET_OF_FLOOR[self.limiter]

    @property
    def efficiency(self) -> float:
        return self.floor_seconds / self.wall_seconds

    @property
    def over_minimum(self) -> int:
        return self.requests - self.minimum_requests

    def row(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "requests_per_person": round(self.requests_per_person, 3),
            "floor_seconds": round(self.floor_seconds, 1),
            "efficiency": round(self.efficiency, 3),
            "wall_of_floor": round(self.of_floor, 3),
            "target_wall_of_floor": round(TARGET_OF_FLOOR[self.limiter], 3),
            "meets_target": self.meets_target,
            "over_minimum": self.over_minimum,
        }


def measure(
    data: CampaignData,
    work: Workload,
    *,
    label: str,
    rate: float,
    latency: float,
    workers: int,
    strategy: str = "auto",
    connections: str = "auto",
    checkpoint: ScanCheckpoint | None = None,
    crash_after: int | None = None,
    limiter: str = "plain",
) -> Measurement:
    """Scan the whole campaign once; ``crash_after`` N requests raises like a killed worker."""
    aborted = None
    limit = server_limiter(limiter, rate)
    with ActionBuilderSimulator(data, rate_limit=rate, latency=latency, limiter=limit) as sim:
        client = ActionBuilderClient.connect(
            api_token=sim.token,
            base_url=sim.base_url,
            campaign_id=data.campaign_id,
            rate_limit=rate,
            pool_size=max(workers, 4),
        )
        if crash_after is not None:
            _crash_after(client, crash_after)
        scanner = CampaignScanner(client, workers=workers, checkpoint=checkpoint, progress_every=60)
        started = time.monotonic()
        snap = None
        try:
            snap = scanner.scan(strategy=strategy, connections=connections)
        except SimulatedCrash:
            raise
        except Exception as exc:  # an aborted scan is a result to report, not a crash here
            aborted = f"{type(exc).__name__}: {exc}"
        wall = time.monotonic() - started
        stats = client.stats.snapshot()
    mismatches, exact = 0, False
    if snap is not None:
        result = evaluate(snap.people, snap.connections, snap.units, snap.taggings)
        truth = data.expected_mismatches()
        found = {m.person_id: sorted(t.tagging_id for t in m.outdated_taggings) for m in result.mismatches}
        exact = found == {pid: row.outdated_tagging_ids for pid, row in truth.items()}
        mismatches = len(result.mismatches)
    return Measurement(
        label=label,
        people=work.people,
        rate_limit=rate,
        latency=latency,
        workers=workers,
        strategy=snap.strategy if snap else "-",
        connections_strategy=snap.connections_strategy if snap else "-",
        requests=stats["requests"],
        rate_limited_429=stats["rate_limited_429"],
        wall_seconds=round(wall, 2),
        mismatches=mismatches,
        exact=exact,
        minimum_requests=work.minimum,
        by_kind=stats["by_kind"],
        resumed_items=snap.resumed_items if snap else 0,
        limiter=limiter,
        aborted=aborted,
        load_average=load_average(),
    )


def load_average() -> float | None:
    """The machine's 1-minute load average (None where the OS does not tell)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


class SimulatedCrash(Exception):
    """Stands in for a worker killed mid-scan."""


def _crash_after(client: ActionBuilderClient, n: int) -> None:
    fetch_page = client.fetch_page
    sent = iter(range(n))

    def fetch_or_crash(*args: Any, **kwargs: Any):
        if next(sent, None) is None:
            raise SimulatedCrash(f"crashed after {n} pages")
        return fetch_page(*args, **kwargs)

    client.fetch_page = fetch_or_crash  # type: ignore[method-assign]


# -- reports --------------------------------------------------------------------------------------


def describe(work: Workload) -> str:
    return "\n".join(
        [
            f"campaign: {work.people} people, {work.units} units, {work.judged} judged",
            "minimum requests the API allows for this workload:",
            f"  people listing          {work.people_pages:6d}  (units come with it: no unit fetches)",
            f"  tag catalog             {work.tag_catalog_pages:6d}",
            f"  catalog check           {work.catalog_check_requests:6d}  (connection and entity types)",
            f"  unit connections        {work.connection_requests:6d}  "
            f"(per unit {work.unit_connection_pages} + {work.ordering_requests} ordering + "
            f"{work.sample_check_requests} sample check; "
            f"per person {work.person_connection_pages})",
            f"  membership taggings     {work.tagging_requests:6d}  "
            f"(per tag {work.tag_tagging_pages}; per person {work.person_tagging_requests})",
            f"  total                   {work.minimum:6d}  = {work.minimum / work.people:.3f} per person",
            f"reference script (SGShuman/actionbuilder_updater): {work.reference_requests} requests "
            f"= {work.reference_requests / work.people:.2f} per person, sequential",
        ]
    )


def table(rows: list[Measurement]) -> str:
    head = (
        "| run | limiter | req/s (available) | read taggings / connections | requests | req/person | "
        "minimum | 429s | wall s | floor s | wall / floor (target) | efficiency | exact | load |"
    )
    lines = [head, "|" + "---|" * 14]
    for m in rows:
        verdict = "ok" if m.meets_target else ("ABORTED" if m.aborted else "MISSED")
        lines.append(
            f"| {m.label} | {m.limiter} | {m.rate_limit:g} ({m.available_rate:g}) | "
            f"{m.strategy} / {m.connections_strategy} | {m.requests} | "
            f"{m.requests_per_person:.3f} | {m.minimum_requests} (+{m.over_minimum}) | "
            f"{m.rate_limited_429} | {m.wall_seconds:.1f} | {m.floor_seconds:.1f} | "
            f"{m.of_floor:.3f}x (<= {TARGET_OF_FLOOR[m.limiter]:.3g}x, {verdict}) | "
            f"{100 * m.efficiency:.1f}% | {'yes' if m.exact else 'NO'} | {m.load_average} |"
        )
    return "\n".join(lines)


def projection(m: Measurement, work: Workload, people: int = 14_000, rate: float = 4.0) -> str:
    requests = m.requests_per_person * people
    floor = requests / rate
    wall = floor / m.efficiency
    ref_requests = work.reference_requests / work.people * people
    return (
        f"projection for {people:,} people at {rate:g} req/s: {requests:,.0f} requests, "
        f"floor {floor / 60:.1f} min, expected wall {wall / 60:.1f} min at {100 * m.efficiency:.1f}% "
        f"of the floor. Reference script: {ref_requests:,.0f} requests (floor "
        f"{ref_requests / rate / 3600:.1f} h at {rate:g} req/s; its README reports ~{REFERENCE_HOURS_14K:g} h)."
    )


def save(name: str, payload: dict[str, Any], markdown: str) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown + "\n")
    print(f"saved benchmarks/results/{name}.json and .md")


# -- entry point ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--people", type=int, default=3000)
    ap.add_argument("--units", type=int, default=0, help="default: one per 100 people, at least 30")
    ap.add_argument("--rate", type=float, default=4.0, help="requests/second (Action Builder: 4)")
    ap.add_argument(
        "--latency",
        type=float,
        help="seconds the simulator takes per answer (default 0.3; 0 with --quick, where it would "
        "cap throughput at workers/latency instead of the rate limit)",
    )
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--quick", action="store_true", help="every strategy at --quick-rate")
    ap.add_argument("--quick-rate", type=float, default=200.0)
    ap.add_argument("--resume", action="store_true", help="crash halfway, then resume")
    ap.add_argument(
        "--limiter",
        choices=LIMITERS,
        default="plain",
        help="server limiter: token bucket, strict sliding window (10 s block), or shared with "
        "another client spending 1 req/s",
    )
    ap.add_argument("--repeat", type=int, default=1, help="measure the scan this many times")
    ap.add_argument("--save", metavar="NAME", help="write benchmarks/results/NAME.json and .md")
    args = ap.parse_args(argv)
    if args.latency is None:
        args.latency = 0.0 if args.quick else 0.3

    units = args.units or max(30, args.people // 100)
    t0 = time.monotonic()
    data = generate_campaign(SeedConfig(people=args.people, units=units))
    work = workload(data)
    print(f"seeded in {time.monotonic() - t0:.1f}s")
    print(describe(work))

    run = partial(measure, data, work, latency=args.latency, workers=args.workers)
    rows: list[Measurement] = []
    summary = ""
    if args.quick:
        combos = [(t, c) for t in ("per_person", "per_tag") for c in ("per_person", "per_unit")]
        for strategy, connections in [*combos, ("auto", "auto")]:
            label = f"{strategy} / {connections}"
            rows.append(run(label=label, rate=args.quick_rate, strategy=strategy, connections=connections))
            print(table(rows[-1:]).splitlines()[-1], flush=True)
    elif args.resume:
        with tempfile.TemporaryDirectory() as tmp:
            cp = ScanCheckpoint(Path(tmp) / "cp.sqlite", "bench")
            crash_at = work.minimum // 2
            try:
                run(label="crash", rate=args.rate, checkpoint=cp, crash_after=crash_at)
            except SimulatedCrash as exc:
                print(f"first attempt: {exc}; {cp.count()} results checkpointed")
            cp.close()
            cp = ScanCheckpoint(Path(tmp) / "cp.sqlite", "bench")
            resumed = run(label="resumed", rate=args.rate, checkpoint=cp)
            cp.close()
        rows.append(resumed)
        summary = (
            f"resumed run: {resumed.requests} requests after the crash ({crash_at} before it; "
            f"{resumed.resumed_items} results reused), {crash_at + resumed.requests} in all vs "
            f"{work.minimum} minimum; mismatches exact: {resumed.exact}"
        )
    else:
        for i in range(args.repeat):
            label = "auto / auto" + (f" #{i + 1}" if args.repeat > 1 else "")
            rows.append(run(label=label, rate=args.rate, limiter=args.limiter))
            print(table(rows[-1:]).splitlines()[-1], flush=True)

    print()
    print(table(rows))
    best = min(rows, key=lambda m: m.requests)
    # Efficiency only means something where the rate limit is the brake, as in production.
    if args.resume:
        projected = summary
    elif best.rate_limit <= 4 and best.limiter == "plain":
        projected = projection(best, work)
    else:
        projected = "(projection: run at the real 4 req/s)"
    print()
    print(projected)
    if args.save:
        payload = {
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": "python -m benchmarks.ab_scan " + " ".join(argv if argv is not None else sys.argv[1:]),
            "machine": f"{platform.system()} {platform.machine()}, Python {platform.python_version()}",
            "workload": {**asdict(work), "minimum": work.minimum},
            "runs": [m.row() for m in rows],
            "projection_14k": projected,
        }
        markdown = "\n\n".join(
            [
                f"`{payload['command']}`",
                "```\n" + describe(work) + "\n```",
                table(rows),
                projected,
            ]
        )
        save(args.save, payload, markdown)
    ok = all(m.exact for m in rows) and (args.quick or args.resume or all(m.meets_target for m in rows))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

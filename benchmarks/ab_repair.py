"""Benchmark: repairing the demo campaign's membership tags at the real rate limit.

Scans the campaign (fast, not measured), plans the repairs, then runs the pipeline's own repair
code (client, limiter, write-ahead audit to DuckDB, verification) over real HTTP against the
simulator, which enforces the rate limit with 429 + Retry-After and answers each request after a
fixed latency. Checks the campaign afterwards against the simulator's ground truth and prints
requests per repaired person, wall time, the floor (requests / rate limit) and the machine's load.

    python -m benchmarks.ab_repair                  # demo campaign: 3,000 people at 4 req/s
    python -m benchmarks.ab_repair --quick          # 200 req/s, no latency (a smoke run)

Requests per repaired person, by design: one signup-helper POST when a value is missing, one read
(proves the adds: the helper ignores unknown tags without an error), one DELETE per outdated
tagging, and one read to verify when a DELETE followed the first read. ``--save NAME`` writes
benchmarks/results/NAME.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from benchmarks.ab_scan import pages
from membership_assets.action_builder.client import ActionBuilderClient
from membership_assets.action_builder.repair import SUCCESS, RepairStep, execute_repairs, plan_repairs
from membership_assets.action_builder.rules import FieldNames, evaluate
from membership_assets.action_builder.scan import CampaignScanner
from membership_assets.simulators.action_builder import ActionBuilderSimulator
from membership_assets.simulators.action_builder_seed import CampaignData, SeedConfig, generate_campaign
from membership_assets.warehouse.audit import RunIdentity, record
from membership_assets.warehouse.resources import DuckDBWarehouse

RESULTS = Path(__file__).parent / "results"
TARGET_OF_FLOOR = 1.10  # wall time within 10% of the floor (per-person steps are sequential)


def minimum_requests(plan: list[RepairStep], data: CampaignData) -> int:
    """Requests the design needs for the planned people (see the module docstring); a read of a
    person with more than 25 taggings takes more than one page."""
    held = Counter(t["item_id"] for t in data.taggings.values() if t["item_type"] == "person")
    by_person: dict[str, list[RepairStep]] = defaultdict(list)
    for s in plan:
        if s.step in ("add", "remove"):
            by_person[s.person_id].append(s)
    total = 0
    for pid, steps in by_person.items():
        adds = sum(s.step == "add" for s in steps)
        removes = len(steps) - adds
        total += (1 if adds else 0) + pages(held[pid] + adds) + removes
        total += pages(held[pid] + adds - removes) if removes else 0
    return total


def matches_truth(data: CampaignData, repaired: set[str], names: FieldNames = FieldNames()) -> bool:
    """Every repaired person now carries exactly the values the ground truth says."""
    for pid in repaired:
        t = data.truth[pid]
        have: dict[str, set[str]] = defaultdict(set)
        for tg in data.taggings.values():
            if (tg["item_type"], tg["item_id"]) == ("person", pid):
                tag = data.tags[tg["tag_id"]]
                have[tag["field"]].add(tag["name"])
        want = {names.unit: t["unit_name"], names.membership_type: t["membership_type"]}
        want[names.membership_status] = t["membership_status"]
        if any(have[f] != {v} for f, v in want.items() if v) or set(t["outdated_tagging_ids"]) & set(
            data.taggings
        ):
            return False
    return True


@dataclass
class Measurement:
    people: int
    rate_limit: float
    latency: float
    workers: int
    planned_people: int
    held_people: int
    repaired_people: int
    verified_people: int
    requests: int
    rate_limited_429: int
    minimum_requests: int
    wall_seconds: float
    exact: bool
    by_kind: dict
    load_before: tuple
    load_after: tuple

    @property
    def floor_seconds(self) -> float:
        return (self.requests - self.rate_limited_429) / self.rate_limit

    def row(self) -> dict:
        return {
            **asdict(self),
            "requests_per_repaired_person": round(self.requests / max(self.repaired_people, 1), 3),
            "minimum_per_repaired_person": round(self.minimum_requests / max(self.repaired_people, 1), 3),
            "floor_seconds": round(self.floor_seconds, 1),
            "wall_of_floor": round(self.wall_seconds / self.floor_seconds, 3),
            "meets_target": self.exact and self.wall_seconds / self.floor_seconds <= TARGET_OF_FLOOR,
        }


def measure(data: CampaignData, *, rate: float, latency: float, workers: int) -> Measurement:
    with ActionBuilderSimulator(data, rate_limit=None) as sim, tempfile.TemporaryDirectory() as tmp:
        fast = ActionBuilderClient.connect(
            api_token=sim.token, base_url=sim.base_url, campaign_id=data.campaign_id, rate_limit=2000
        )
        snap = CampaignScanner(fast, workers=8).scan()
        evaluation = evaluate(snap.people, snap.connections, snap.units, snap.taggings)
        plan = plan_repairs(evaluation, snap.taggings, snap.tags, live=True, max_repairs=100_000)
        # From here on the real limit and latency, as production would see them.
        sim.server.set_rate_limit(rate)
        sim.server.latency = latency
        client = ActionBuilderClient.connect(
            api_token=sim.token,
            base_url=sim.base_url,
            campaign_id=data.campaign_id,
            rate_limit=rate,
            pool_size=max(workers, 4),
        )
        warehouse = DuckDBWarehouse(path=str(Path(tmp) / "audit.duckdb"))
        run = RunIdentity("bench", "bench", datetime.now(UTC))

        def journal(outcomes) -> None:  # the durable write-ahead audit, as the asset does it
            record(warehouse, "ab_tag_repairs", pd.DataFrame([o.as_row() for o in outcomes]), run)

        load_before = os.getloadavg()
        started = time.monotonic()
        outcomes = execute_repairs(client, plan, workers=workers, journal=journal)
        wall = time.monotonic() - started
        load_after = os.getloadavg()
        stats = client.stats.snapshot()
    by_person: dict[str, set[str]] = defaultdict(set)
    for o in outcomes:
        if o.step in ("add", "remove"):
            by_person[o.person_id].add(o.action)
    repaired = {p for p, actions in by_person.items() if actions <= SUCCESS}
    return Measurement(
        people=len(data.person_ids()),
        rate_limit=rate,
        latency=latency,
        workers=workers,
        planned_people=len(by_person),
        held_people=len({s.person_id for s in plan if s.step == "hold"}),
        repaired_people=len(repaired),
        verified_people=sum(o.step == "verify" and o.action == "verified" for o in outcomes),
        requests=stats["requests"],
        rate_limited_429=stats["rate_limited_429"],
        minimum_requests=minimum_requests(plan, data),
        wall_seconds=round(wall, 2),
        exact=matches_truth(data, repaired) and len(repaired) == len(by_person),
        by_kind=stats["by_kind"],
        load_before=tuple(round(x, 2) for x in load_before),
        load_after=tuple(round(x, 2) for x in load_after),
    )


def table(m: Measurement) -> str:
    r = m.row()
    return "\n".join(
        [
            "| people | req/s | planned / held | repaired (verified) | requests | req / repaired person "
            "(design minimum) | 429s | wall s | floor s | wall / floor (target) | exact | load avg 1/5/15 min before -> after |",
            "|" + "---|" * 12,
            f"| {m.people} | {m.rate_limit:g} | {m.planned_people} / {m.held_people} | {m.repaired_people} "
            f"({m.verified_people}) | {m.requests} | {r['requests_per_repaired_person']:.3f} "
            f"({r['minimum_per_repaired_person']:.3f}) | {m.rate_limited_429} | {m.wall_seconds:.1f} | "
            f"{r['floor_seconds']:.1f} | {r['wall_of_floor']:.3f}x (<= {TARGET_OF_FLOOR:g}x, "
            f"{'ok' if r['meets_target'] else 'MISSED'}) | {'yes' if m.exact else 'NO'} | "
            f"{'/'.join(map(str, m.load_before))} -> {'/'.join(map(str, m.load_after))} |",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--people", type=int, default=3000)
    ap.add_argument("--rate", type=float, default=4.0, help="requests/second (Action Builder: 4)")
    ap.add_argument("--latency", type=float, help="seconds per answer (default 0.3; 0 with --quick)")
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--quick", action="store_true", help="200 req/s and no latency")
    ap.add_argument("--save", metavar="NAME", help="write benchmarks/results/NAME.json and .md")
    args = ap.parse_args(argv)
    rate = 200.0 if args.quick else args.rate
    latency = args.latency if args.latency is not None else (0.0 if args.quick else 0.3)
    data = generate_campaign(SeedConfig(people=args.people, units=max(30, args.people // 100)))
    m = measure(data, rate=rate, latency=latency, workers=args.workers)
    print(table(m))
    print(f"requests by kind: {json.dumps(m.by_kind, sort_keys=True)}")
    print(f"machine: {os.cpu_count()} cores, load average before {m.load_before}, after {m.load_after}")
    if args.save:
        command = "python -m benchmarks.ab_repair " + " ".join(argv if argv is not None else sys.argv[1:])
        payload = {
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": command,
            "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}",
            "run": m.row(),
        }
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"{args.save}.json").write_text(json.dumps(payload, indent=2) + "\n")
        (RESULTS / f"{args.save}.md").write_text(
            f"`{command}`\n\n{table(m)}\n\nrequests by kind: `{json.dumps(m.by_kind, sort_keys=True)}`; "
            f"machine: {payload['machine']} (shared with other developers; load averages in the table)\n"
        )
        print(f"saved benchmarks/results/{args.save}.json and .md")
    return 0 if m.exact and (args.quick or m.row()["meets_target"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())

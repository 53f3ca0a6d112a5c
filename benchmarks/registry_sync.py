"""Benchmark: registry -> eligibility sync at 10K, 100K and 1M members, on SQLite and Postgres.

Runs the pipeline's own functions (validate_members, compute_delta, MembersStore.apply: staging
table loaded with COPY on Postgres / executemany on SQLite, one statement per change kind, one
transaction) for an initial load and then a sync with 1% churn (0.5% leave, 0.3% join, 0.2%
change email). Each size runs in a fresh process so peak memory (max RSS) is its own.

    python -m benchmarks.registry_sync                              # both backends, 10K/100K/1M
    python -m benchmarks.registry_sync --sizes 10000 --backends sqlite

Postgres: $MEMBERS_BENCH_DB_URL, else the project's throwaway server (scripts/postgres.sh start,
which installs the Debian package if needed). ``--save NAME`` writes benchmarks/results/NAME.*.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"


def members(n: int, seed: int = 11) -> list[dict[str, Any]]:
    """``n`` distinct members with valid kennitalas, as the Django API would list them."""
    from membership_assets.simulators.django_registry import make_kennitala

    rng = random.Random(seed)
    seen: set[str] = set()
    rows = []
    while len(rows) < n:
        kt = make_kennitala(rng)
        if kt in seen:
            continue
        seen.add(kt)
        i = len(rows)
        rows.append(
            {
                "kennitala": kt,
                "name": f"Member {i}",
                "email": f"member{i}@example.is",
                "status": "active" if i % 20 else "unpaid",
            }
        )
    return rows


def churn(rows: list[dict[str, Any]], seed: int = 12) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """A month of membership life: 0.5% leave, 0.3% join, 0.2% change their email."""
    from membership_assets.simulators.django_registry import make_kennitala

    rng = random.Random(seed)
    n = len(rows)
    leave = set(rng.sample(range(n), n // 200))
    change = set(rng.sample(sorted(set(range(n)) - leave), n // 500))
    out = []
    for i, row in enumerate(rows):
        if i in leave:
            continue
        out.append({**row, "email": f"new.{row['email']}"} if i in change else row)
    taken = {r["kennitala"] for r in rows}
    joined = 0
    while joined < 3 * n // 1000:
        kt = make_kennitala(rng)
        if kt not in taken:
            taken.add(kt)
            out.append(
                {
                    "kennitala": kt,
                    "name": f"Joiner {joined}",
                    "email": f"j{joined}@example.is",
                    "status": "active",
                }
            )
            joined += 1
    return out, {"added": joined, "removed": len(leave), "changed": len(change)}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def one(backend: str, n: int, url: str) -> dict[str, Any]:
    """Initial load + 1% churn sync of ``n`` members; runs in its own process."""
    import pandas as pd

    from membership_assets.registry.delta import compute_delta, counts
    from membership_assets.registry.store import MembersStore, SyncLogEntry
    from membership_assets.registry.validation import validate_members

    baseline = peak_rss_mb()
    store = MembersStore.from_url(url)
    store.drop_schema()
    store.ensure_schema()
    initial = members(n)
    upstream, expected = churn(initial)
    result: dict[str, Any] = {"backend": backend, "members": n, "baseline_rss_mb": round(baseline)}
    base: str | None = None
    for phase, rows in (("initial", initial), ("churn_1pct", upstream)):
        timings: dict[str, float] = {}
        t = time.perf_counter()
        validated = validate_members(rows)
        valid = pd.DataFrame(
            [vars(m) for m in validated.members], columns=["kennitala", "name", "email", "status"]
        )
        timings["validate"] = time.perf_counter() - t
        t = time.perf_counter()
        current = store.current_members()
        timings["read_current"] = time.perf_counter() - t
        t = time.perf_counter()
        delta = compute_delta(valid, current, validated.protected)
        timings["delta"] = time.perf_counter() - t
        entry = SyncLogEntry(
            id=str(uuid.uuid4()), source="manual", status="success", members_fetched=len(rows)
        )
        t = time.perf_counter()
        store.apply(delta, entry, base_sync_id=base)
        timings["apply"] = time.perf_counter() - t
        base = entry.id
        found = counts(delta)
        if phase == "churn_1pct":
            got = {"added": found["added"], "removed": found["removed"], "changed": found["changed"]}
            assert got == expected, (got, expected)
        assert store.active_count() == sum(1 for r in rows if r["status"] in ("active", "unpaid"))
        result[phase] = {
            "rows": len(rows),
            "delta": {k: v for k, v in found.items() if v},
            **{f"{k}_s": round(v, 2) for k, v in timings.items()},
            "delta_plus_apply_s": round(timings["delta"] + timings["apply"], 2),
            "total_s": round(sum(timings.values()), 2),
        }
    result["peak_rss_mb"] = round(peak_rss_mb())
    store.drop_schema()
    store.engine.dispose()
    return result


def postgres_url() -> str | None:
    url = os.getenv("MEMBERS_BENCH_DB_URL") or os.getenv("MEMBERS_TEST_DB_URL")
    if url:
        return url
    started = subprocess.run(
        ["bash", str(ROOT / "scripts/postgres.sh"), "start"], capture_output=True, text=True
    )
    if started.returncode != 0:
        print(started.stderr, file=sys.stderr)
        return None
    return started.stdout.strip().split("=", 1)[1]


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| backend | members | phase | delta | validate s | read s | delta s | apply s | delta+apply s | peak RSS MB |",
        "|" + "---|" * 10,
    ]
    for r in rows:
        for phase in ("initial", "churn_1pct"):
            p = r[phase]
            kinds = ", ".join(f"{k} {v:,}" for k, v in p["delta"].items())
            lines.append(
                f"| {r['backend']} | {r['members']:,} | {phase} | {kinds} | {p['validate_s']} | "
                f"{p['read_current_s']} | {p['delta_s']} | {p['apply_s']} | {p['delta_plus_apply_s']} | "
                f"{r['peak_rss_mb']} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--backends", nargs="+", default=["sqlite", "postgres"], choices=["sqlite", "postgres"])
    ap.add_argument("--save", metavar="NAME")
    ap.add_argument("--one", nargs=2, metavar=("BACKEND", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        backend, n = args.one
        print(json.dumps(one(backend, int(n), os.environ["BENCH_DB_URL"])))
        return 0

    urls: dict[str, str] = {}
    tmp = tempfile.TemporaryDirectory()
    if "sqlite" in args.backends:
        urls["sqlite"] = f"sqlite:///{tmp.name}/members.db"
    if "postgres" in args.backends:
        url = postgres_url()
        if url is None:
            print("postgres: unavailable, skipped", file=sys.stderr)
        else:
            urls["postgres"] = url
    rows = []
    for backend, url in urls.items():
        for n in args.sizes:
            proc = subprocess.run(
                [sys.executable, "-m", "benchmarks.registry_sync", "--one", backend, str(n)],
                cwd=ROOT,
                env={**os.environ, "BENCH_DB_URL": url},  # not on the command line: it may hold a password
                capture_output=True,
                text=True,
            )
            if proc.returncode != 0:
                print(proc.stderr, file=sys.stderr)
                return 1
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(table(rows[-1:]).split("\n", 2)[2], flush=True)
    tmp.cleanup()
    print()
    print(table(rows))
    if args.save:
        RESULTS.mkdir(exist_ok=True)
        command = "python -m benchmarks.registry_sync " + " ".join(argv if argv is not None else sys.argv[1:])
        machine = f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
        payload = {
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": command,
            "machine": machine,
            "runs": rows,
        }
        (RESULTS / f"{args.save}.json").write_text(json.dumps(payload, indent=2) + "\n")
        (RESULTS / f"{args.save}.md").write_text(f"`{command}` ({machine})\n\n{table(rows)}\n")
        print(f"saved benchmarks/results/{args.save}.json and .md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

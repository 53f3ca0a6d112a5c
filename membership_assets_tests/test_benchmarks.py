"""The benchmark scripts keep working, and the scan reads at the API's minimum (no timing here)."""

from __future__ import annotations

import json

import pytest

from benchmarks import ab_scan, registry_sync
from membership_assets.simulators.action_builder_seed import SeedConfig, generate_campaign


def test_full_scan_uses_exactly_the_minimum_requests_the_api_allows():
    data = generate_campaign(SeedConfig(people=400, units=12, seed=3))
    work = ab_scan.workload(data)
    assert work.minimum < work.reference_requests / 8
    m = ab_scan.measure(data, work, label="t", rate=2000, latency=0.0, workers=8)
    assert m.exact
    assert (m.strategy, m.connections_strategy) == ("per_tag", "per_unit")
    assert m.requests == work.minimum and m.rate_limited_429 == 0


@pytest.mark.parametrize("crash_fraction", [0.05, 0.3, 0.45, 0.6, 0.95])  # every phase of the scan
def test_a_crashed_scan_resumes_without_refetching(tmp_path, crash_fraction):
    from membership_assets.action_builder.checkpoint import ScanCheckpoint

    data = generate_campaign(SeedConfig(people=300, units=10, seed=4))
    work = ab_scan.workload(data)
    cp = ScanCheckpoint(tmp_path / "cp.sqlite", "k", flush_every=1)
    crash_at = int(work.minimum * crash_fraction)
    try:
        ab_scan.measure(
            data, work, label="c", rate=2000, latency=0.0, workers=4, checkpoint=cp, crash_after=crash_at
        )
    except ab_scan.SimulatedCrash:
        pass
    else:
        raise AssertionError("the scan should have crashed")
    resumed = ab_scan.measure(data, work, label="r", rate=2000, latency=0.0, workers=4, checkpoint=cp)
    assert resumed.exact and resumed.resumed_items >= crash_at
    # Nothing fetched before the crash is fetched again.
    assert crash_at + resumed.requests == work.minimum


def test_registry_benchmark_runs_end_to_end(tmp_path, capsys):
    result = registry_sync.one("sqlite", 2000, f"sqlite:///{tmp_path}/m.db")
    assert result["initial"]["delta"] == {"added": 2000}
    assert result["churn_1pct"]["delta"] == {"added": 6, "changed": 4, "removed": 10}
    json.dumps(result)


@pytest.mark.parametrize("limiter", ["strict", "shared", "strict_shared"])
def test_the_limiter_variants_run_through_the_benchmark(limiter):
    data = generate_campaign(SeedConfig(people=200, units=8, seed=6))
    work = ab_scan.workload(data)
    m = ab_scan.measure(data, work, label="v", rate=2000, latency=0.0, workers=4, limiter=limiter)
    assert m.exact and m.aborted is None and m.limiter == limiter
    assert m.available_rate == (1999 if "shared" in limiter else 2000)
    assert m.row()["meets_target"] in (True, False) and m.load_average is not None

"""A scan killed with SIGKILL resumes at (almost) the minimum cost, and counts every attempt."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks import ab_scan
from membership_assets.action_builder.checkpoint import ScanCheckpoint
from membership_assets.action_builder.client import ActionBuilderClient
from membership_assets.action_builder.scan import CampaignScanner
from membership_assets.connectors.errors import ServerError
from membership_assets.simulators.action_builder import ActionBuilderSimulator
from membership_assets.simulators.action_builder_seed import SeedConfig, generate_campaign

ROOT = Path(__file__).resolve().parents[1]
WORKERS = 4

SCAN = """
import json, sys
from membership_assets.action_builder.checkpoint import ScanCheckpoint
from membership_assets.action_builder.client import ActionBuilderClient
from membership_assets.action_builder.scan import CampaignScanner
cfg = json.loads(sys.argv[1])
client = ActionBuilderClient.connect(api_token=cfg["token"], base_url=cfg["base_url"],
    campaign_id=cfg["campaign_id"], rate_limit=cfg["rate"])
cp = ScanCheckpoint(cfg["path"], "scan")
CampaignScanner(client, workers=cfg["workers"], checkpoint=cp).scan()
"""


def client_for(sim: ActionBuilderSimulator, rate: float) -> ActionBuilderClient:
    return ActionBuilderClient.connect(
        api_token=sim.token, base_url=sim.base_url, campaign_id=sim.data.campaign_id, rate_limit=rate
    )


def test_a_killed_scan_resumes_within_one_percent_of_the_minimum_and_counts_both_attempts(tmp_path):
    data = generate_campaign(SeedConfig(people=3000, seed=8))
    minimum = ab_scan.workload(data).minimum
    path = tmp_path / "cp.sqlite"
    rate = 300.0
    with ActionBuilderSimulator(data, rate_limit=None, latency=0.005) as sim:
        cfg = {
            "token": sim.token,
            "base_url": sim.base_url,
            "campaign_id": data.campaign_id,
            "rate": rate,
            "path": str(path),
            "workers": WORKERS,
        }
        proc = subprocess.Popen(
            [sys.executable, "-c", SCAN, json.dumps(cfg)],
            cwd=ROOT,
            env=os.environ.copy(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        deadline = time.monotonic() + 120
        while sim.requests.total < minimum // 2:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline
            time.sleep(0.005)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        time.sleep(0.2)
        before = sim.requests.total

        cp = ScanCheckpoint(path, "scan")
        client = client_for(sim, rate)
        snap = CampaignScanner(client, workers=WORKERS, checkpoint=cp).scan()
        cp.close()
        total = sim.requests.total
    # Every answer the killed attempt had was checkpointed: at most the ones in flight are lost.
    assert total <= minimum * 1.01, (before, total, minimum)
    # The logical scan's request count covers every request of both attempts: each is counted
    # (durably) as it is sent, so only requests killed before they reached the server, at most
    # one per worker, can be counted without the server having answered them.
    assert snap.attempt_requests["requests"] == total - before
    assert total <= snap.requests["requests"] <= total + WORKERS


def test_requests_answered_without_anything_to_save_still_count_for_the_resumed_scan(tmp_path):
    """A killed attempt's 5xx/429 answers (retried, never saved as data) are in the logical scan's
    request count: the count is made durable as each request is sent, not with the next save."""
    data = generate_campaign(SeedConfig(people=40, seed=3))
    path = tmp_path / "cp.sqlite"
    with ActionBuilderSimulator(data, rate_limit=None) as sim:
        sim.faults.add(path_pattern="/people", status=503, times=None)
        client = ActionBuilderClient.connect(
            api_token=sim.token,
            base_url=sim.base_url,
            campaign_id=data.campaign_id,
            rate_limit=1000,
            max_attempts=4,
            sleep=lambda s: None,
        )
        killed = ScanCheckpoint(path, "scan")  # never closed or flushed: as if SIGKILLed
        with pytest.raises(ServerError):
            CampaignScanner(client, workers=2, checkpoint=killed).scan()
        answered = sim.requests.total
        sim.faults.clear()
        cp = ScanCheckpoint(path, "scan")
        snap = CampaignScanner(client_for(sim, 1000), workers=2, checkpoint=cp).scan()
        cp.close()
        total = sim.requests.total
    assert answered >= 4  # every attempt of the first request was answered 503
    assert snap.requests["requests"] == total
    assert snap.requests["requests"] - snap.attempt_requests["requests"] == answered

"""A scan killed with SIGKILL resumes at (almost) the minimum cost, and counts every attempt."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import ab_scan
from membership_assets.action_builder.checkpoint import ScanCheckpoint
from membership_assets.action_builder.client import ActionBuilderClient
from membership_assets.action_builder.scan import CampaignScanner
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
    # The logical scan's request count covers both attempts (the killed one up to its last save).
    assert snap.attempt_requests["requests"] == total - before
    assert total - WORKERS <= snap.requests["requests"] <= total

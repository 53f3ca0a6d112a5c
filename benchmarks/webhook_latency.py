"""Benchmark: seconds from a member saved in Django to that member eligible in member_eligibility.

Starts the local stack the way production runs it, each piece in its own process:

* the Django stand-in (``DjangoRegistrySimulator``; when it accepts ``webhook_url`` it sends the
  signed webhook itself from its model signals, otherwise this script sends the contract's
  signed POST right after each save, and says so in the output),
* the receiver: ``python -m membership_assets sync-api``,
* ``dagster-daemon run`` on a fresh ``DAGSTER_HOME`` holding the project's ``dagster.yaml``
  (the ``registry_change_events`` sensor runs by default; runs go through the run queue and
  execute in their own processes, as in production),

loads the registry with an initial sync requested through ``POST /api/sync/trigger``, then saves
``--changes`` new members one after another and measures, for each, the time until
``member_eligibility`` says the member may vote. ``--burst N`` afterwards saves N members within
a minute and counts the syncs the sensor starts for them.

    python -m benchmarks.webhook_latency                    # 20 changes (~10 min on 2 cores)
    python -m benchmarks.webhook_latency --changes 5 --burst 500 --save webhook_latency
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
SECRET = "benchmark-webhook-secret"
API_KEY = "benchmark-sync-api-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, every: float = 0.2) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(every)
    raise TimeoutError(f"{what} did not happen within {timeout:.0f}s")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


class Stack:
    """The processes of the local stack, stopped (by their own process ids) on exit."""

    def __init__(self, workdir: Path, members: int):
        self.workdir = workdir
        self.members = members
        self.procs: list[subprocess.Popen] = []
        self.receiver_url = ""
        self.db_url = f"sqlite:///{workdir / 'members.sqlite'}"
        self.sim: Any = None
        self.sender = ""

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "MEMBERSHIP_ENV": "local",
            "MEMBERSHIP_STATE_DIR": str(self.workdir / "state"),
            "MEMBERS_DB_URL": self.db_url,
            "DJANGO_API_URL": self.sim.base_url,
            "DAGSTER_HOME": str(self.workdir / "dagster_home"),
            "REGISTRY_WEBHOOK_SECRET_PASSWORD": SECRET,
            "SYNC_API_KEY_PASSWORD": API_KEY,
        }

    def start(self) -> Stack:
        from membership_assets.settings import SIMULATED_DJANGO_TOKEN
        from membership_assets.simulators.django_registry import DjangoRegistrySimulator, generate_registry

        port = free_port()
        self.receiver_url = f"http://127.0.0.1:{port}"
        kwargs: dict[str, Any] = {"token": SIMULATED_DJANGO_TOKEN}
        if "webhook_url" in inspect.signature(DjangoRegistrySimulator).parameters:
            kwargs["webhook_url"] = f"{self.receiver_url}/api/webhooks/registry"
            os.environ["REGISTRY_WEBHOOK_SECRET_PASSWORD"] = SECRET  # the stand-in signs with it
            self.sender = "django stand-in (model signals)"
        else:
            self.sender = "this script (signed POST after each save; stand-in has no webhook_url)"
        self.sim = DjangoRegistrySimulator(generate_registry(self.members, invalid=False), **kwargs).start()
        home = self.workdir / "dagster_home"
        home.mkdir(parents=True)
        shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
        env = self.env()
        logs = self.workdir / "logs"
        logs.mkdir()
        self._spawn(
            [sys.executable, "-m", "membership_assets", "sync-api", "--port", str(port)],
            env,
            logs / "sync_api.log",
        )
        self._spawn(
            [
                str(Path(sys.executable).parent / "dagster-daemon"),
                "run",
                "-m",
                "membership_assets.definitions",
            ],
            env,
            logs / "daemon.log",
        )
        wait_for(self._receiver_up, 60, "sync-api start")
        return self

    def _spawn(self, cmd: list[str], env: dict[str, str], log: Path) -> None:
        out = log.open("w")
        self.procs.append(
            subprocess.Popen(
                cmd, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        )

    def _receiver_up(self) -> bool:
        try:
            return requests.get(
                f"{self.receiver_url}/api/sync/status", headers={"X-Api-Key": API_KEY}, timeout=2
            ).ok
        except requests.RequestException:
            return False

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        if self.sim is not None:
            self.sim.stop()

    # -- what Django and an admin do ----------------------------------------------------------

    def notify(self, member_id: int) -> None:
        """The contract's webhook, when the stand-in does not send it itself."""
        if self.sender.startswith("django"):
            return
        from membership_assets.registry.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign

        body = json.dumps(
            {
                "event_id": str(uuid.uuid4()),
                "event": "member.saved",
                "member_id": member_id,
                "occurred_at": datetime.now(UTC).isoformat(),
            }
        ).encode()
        ts = int(time.time())
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: str(ts),
            SIGNATURE_HEADER: sign(SECRET, ts, body),
        }
        requests.post(
            f"{self.receiver_url}/api/webhooks/registry", data=body, headers=headers, timeout=10
        ).raise_for_status()

    def trigger(self) -> None:
        requests.post(
            f"{self.receiver_url}/api/sync/trigger", headers={"X-Api-Key": API_KEY}, timeout=10
        ).raise_for_status()

    def syncs(self) -> list[dict[str, Any]]:
        resp = requests.get(
            f"{self.receiver_url}/api/sync/logs?limit=200", headers={"X-Api-Key": API_KEY}, timeout=10
        )
        resp.raise_for_status()
        return resp.json()["syncs"]


def new_member(rng: random.Random, taken: set[str]) -> dict[str, Any]:
    from membership_assets.simulators.django_registry import make_kennitala

    while True:
        kt = make_kennitala(rng)
        if kt not in taken:
            taken.add(kt)
            return {
                "kennitala": kt,
                "name": "Benchmark Member",
                "email": f"b{len(taken)}@example.is",
                "status": "active",
            }


def run(args: argparse.Namespace) -> dict[str, Any]:
    from membership_assets.registry.store import MembersStore

    rng = random.Random(7)
    with ExitStack() as stack:
        workdir = Path(tempfile.mkdtemp(prefix="webhook_latency_"))
        stack.callback(shutil.rmtree, workdir, True)
        s = Stack(workdir, args.members).start()
        stack.callback(s.stop)
        store = MembersStore.from_url(s.db_url)
        print(f"stack up: receiver {s.receiver_url}, registry {s.sim.base_url}; webhook sender: {s.sender}")

        started = time.monotonic()
        s.trigger()
        wait_for(lambda: any(x["status"] in ("success", "partial") for x in s.syncs()), 600, "initial sync")
        print(
            f"initial sync of {args.members} members done in {time.monotonic() - started:.1f}s (cold start included)"
        )

        taken = {str(m["kennitala"]).replace("-", "") for m in s.sim.data.members}
        latencies: list[float] = []
        for i in range(args.changes):
            row = new_member(rng, taken)
            t0 = time.monotonic()
            s.sim.add(row)
            s.notify(member_id=100_000 + i)
            wait_for(lambda r=row: store.is_eligible(r["kennitala"]), 600, "eligibility", 0.1)
            latencies.append(time.monotonic() - t0)
            print(f"change {i + 1:2d}/{args.changes}: eligible after {latencies[-1]:.1f}s")
            time.sleep(args.pause)

        result: dict[str, Any] = {
            "members": args.members,
            "changes": args.changes,
            "sender": s.sender,
            "latencies_s": [round(x, 2) for x in latencies],
            "p50_s": round(statistics.median(latencies), 1),
            "p95_s": round(percentile(latencies, 0.95), 1),
            "max_s": round(max(latencies), 1),
            "sources": sorted({x["source"] for x in s.syncs()}),
        }
        if args.burst:
            before = len(s.syncs())
            rows = [new_member(rng, taken) for _ in range(args.burst)]
            t0 = time.monotonic()
            for j, row in enumerate(rows):
                s.sim.add(row)
                s.notify(member_id=200_000 + j)
                time.sleep(max(0.0, t0 + (j + 1) * 60 / args.burst - time.monotonic()))
            wait_for(
                lambda: all(store.is_eligible(r["kennitala"]) for r in rows[-5:]), 600, "burst applied", 1
            )
            time.sleep(20)  # any sync still to come would have started by now
            result["burst"] = {"saves": args.burst, "seconds": 60, "syncs": len(s.syncs()) - before}
            print(f"burst: {args.burst} saves in 60s -> {result['burst']['syncs']} syncs")
        store.engine.dispose()
    return result


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"# Webhook latency ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores)",
        "",
        f"Registry of {result['members']} members; webhook sent by {result['sender']}.",
        "",
        "| changes | p50 | p95 | max |",
        "|---|---|---|---|",
        f"| {result['changes']} | {result['p50_s']} s | {result['p95_s']} s | {result['max_s']} s |",
        "",
        f"Latencies (s): {', '.join(str(x) for x in result['latencies_s'])}",
        f"Sync log sources seen: {', '.join(result['sources'])}",
    ]
    if "burst" in result:
        b = result["burst"]
        lines.append(f"Burst: {b['saves']} saves in {b['seconds']} s started {b['syncs']} syncs.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.webhook_latency")
    parser.add_argument("--members", type=int, default=2273)
    parser.add_argument("--changes", type=int, default=20)
    parser.add_argument("--pause", type=float, default=2.0, help="seconds between changes")
    parser.add_argument("--burst", type=int, default=0, help="then save this many members within a minute")
    parser.add_argument("--save", help="write benchmarks/results/NAME.md and .json")
    args = parser.parse_args(argv)
    result = run(args)
    text = markdown(result)
    print(text)
    if args.save:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"{args.save}.md").write_text(text)
        (RESULTS / f"{args.save}.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: signed webhooks per second through `sync-api`, and a signed webhook's latency while
hundreds of idle connections are held open.

Starts ``python -m membership_assets sync-api`` production-configured (random 43-character
secrets, a migrated members database: SQLite in a temporary directory, or ``--db-url``) as its
own process, then

1. **throughput**: ``--clients`` threads, each on its own keep-alive connection, send signed
   webhooks (each a new event, recorded in the database) for ``--seconds``; accepted per second
   and latency percentiles;
2. **latency**: ``--requests`` signed webhooks one after another, first with no other
   connection, then while ``--idle`` connections are held open (half connected and silent, half
   stuck in the middle of their headers); p50/p99/max of each.

The client runs on the same machine (and cores) as the receiver, so the throughput is a floor.
The per-client rate limit is raised for phase 1 (one client address sends everything). The
machine's load average is recorded: other work on it changes the numbers.

    python -m benchmarks.webhook_receiver                          # ~1 min
    python -m benchmarks.webhook_receiver --save webhook_receiver  # + benchmarks/results/*.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import requests

from membership_assets.registry.store import MembersStore
from membership_assets_tests.sync_api_process import (
    SyncApiProcess,
    event_body,
    production_env,
    webhook_headers,
)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
HOOK = "/api/webhooks/registry"


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    at = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {
        "n": len(ordered),
        "p50_ms": round(at(0.50) * 1000, 2),
        "p90_ms": round(at(0.90) * 1000, 2),
        "p99_ms": round(at(0.99) * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2),
        "mean_ms": round(statistics.fmean(ordered) * 1000, 2),
    }


def throughput(base: str, clients: int, seconds: float) -> dict:
    """Signed webhooks accepted per second by ``clients`` keep-alive connections."""
    stop = time.perf_counter() + seconds
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()

    def client() -> None:
        session = requests.Session()
        mine, codes = [], {}
        while time.perf_counter() < stop:
            body = event_body()
            started = time.perf_counter()
            code = session.post(base + HOOK, data=body, headers=webhook_headers(body), timeout=30).status_code
            mine.append(time.perf_counter() - started)
            codes[code] = codes.get(code, 0) + 1
        with lock:
            latencies.extend(mine)
            for code, n in codes.items():
                statuses[code] = statuses.get(code, 0) + n

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    return {
        "clients": clients,
        "seconds": round(wall, 2),
        "accepted": statuses.get(202, 0),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "accepted_per_second": round(statuses.get(202, 0) / wall, 1),
        "latency": percentiles(latencies),
    }


def sequential(base: str, count: int) -> tuple[dict, dict[str, int]]:
    session = requests.Session()
    latencies, statuses = [], {}
    for _ in range(count):
        body = event_body()
        started = time.perf_counter()
        code = session.post(base + HOOK, data=body, headers=webhook_headers(body), timeout=30).status_code
        latencies.append(time.perf_counter() - started)
        statuses[str(code)] = statuses.get(str(code), 0) + 1
    return percentiles(latencies), statuses


def hold_idle(port: int, count: int) -> list[socket.socket]:
    """Half silent connections, half stuck in the middle of their headers."""
    socks = []
    for i in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        if i % 2:
            s.sendall(b"POST /api/webhooks/registry HTTP/1.1\r\nHost: bench\r\nX-Membership-")
        socks.append(s)
    return socks


def still_open(socks: list[socket.socket]) -> int:
    alive = 0
    for s in socks:
        s.settimeout(0)
        try:
            alive += s.recv(1, socket.MSG_PEEK) != b""
        except BlockingIOError:
            alive += 1
        except OSError:
            pass
    return alive


def run(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        db_url = args.db_url or f"sqlite:///{Path(tmp) / 'members.sqlite'}"
        store = MembersStore.from_url(db_url)
        if args.db_url:
            store.drop_schema()
        store.ensure_schema()
        store.engine.dispose()
        env = production_env(db_url, SYNC_API_RATE_LIMIT="100000", SYNC_API_RATE_BURST="1000000")
        load_before = os.getloadavg()
        with SyncApiProcess(env) as server:
            sequential(server.base, 20)  # warm-up
            phase1 = throughput(server.base, args.clients, args.seconds)
            quiet, quiet_codes = sequential(server.base, args.requests)
            idle = hold_idle(server.port, args.idle)
            try:
                held_at_start = still_open(idle)
                started = time.perf_counter()
                loaded, loaded_codes = sequential(server.base, args.requests)
                measured_for = time.perf_counter() - started
                held_at_end = still_open(idle)
            finally:
                for s in idle:
                    s.close()
        load_after = os.getloadavg()
    return {
        "benchmark": "webhook_receiver",
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": _commit(),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in load_after],
            "note": "shared machine: other developers' tests ran at the same time; the client runs on the same cores",
        },
        "database": "postgres" if args.db_url else "sqlite (temporary file, WAL)",
        "throughput": phase1,
        "latency_no_idle_connections": {**quiet, "statuses": quiet_codes},
        "latency_with_idle_connections": {
            **loaded,
            "statuses": loaded_codes,
            "idle_connections": args.idle,
            "idle_open_at_start": held_at_start,
            "idle_open_at_end": held_at_end,
            "measured_seconds": round(measured_for, 2),
        },
    }


def _commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--requests", type=int, default=300, help="sequential webhooks per latency phase")
    parser.add_argument("--idle", type=int, default=500, help="connections held open in the latency phase")
    parser.add_argument("--db-url", help="members database (default: a temporary SQLite file)")
    parser.add_argument("--save", help="write benchmarks/results/<name>.json")
    args = parser.parse_args(argv)
    result = run(args)
    text = json.dumps(result, indent=2)
    print(text)
    if args.save:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"{args.save}.json").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""How fast the admin page answers on a large roll: sign-in, status, history, a sync's changes.

A members database (``--url``, e.g. the test Postgres) gets ``--members`` members in one sync,
then ``--churn`` of them removed and reinstated (so history counts run over large change sets),
and the sync service is served over real sockets; each page is fetched ``--repeat`` times.

    .venv/bin/python -m benchmarks.admin_page --url postgresql+psycopg://postgres@127.0.0.1:54329/t_x
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import datetime, timedelta, timezone

from membership_assets.registry.store import MembersStore
from membership_assets_tests.admin_site import _apply, admin_settings, members, serve, sign_in


def measure(url: str, n_members: int, churn: int, repeat: int) -> dict[str, float]:
    store = MembersStore.from_url(url)
    store.drop_schema()
    store.ensure_schema()
    everyone = members(n_members)
    now = datetime.now(timezone.utc)
    started = time.perf_counter()
    _apply(store, everyone, "bench-1", now - timedelta(hours=2), "scheduled")
    _apply(store, everyone.iloc[churn:], "bench-2", now - timedelta(hours=1), "webhook")
    _apply(store, everyone, "bench-3", now, "admin:anna")
    out = {"seed_s": time.perf_counter() - started}
    with serve(url, admin_settings()) as base:
        t = time.perf_counter()
        http = sign_in(base)
        out["sign_in_ms"] = (time.perf_counter() - t) * 1000
        for name, path in [
            ("status", "/admin/"),
            ("history", "/admin/history"),
            ("changes", "/admin/syncs/bench-1"),
            ("api_logs", "/api/sync/logs"),
        ]:
            times = []
            for _ in range(repeat):
                t = time.perf_counter()
                resp = http.get(f"{base}{path}", headers={"X-Api-Key": "test-api-key"}, timeout=60)
                times.append((time.perf_counter() - t) * 1000)
                assert resp.status_code == 200, (path, resp.status_code)
            out[f"{name}_ms_median"] = statistics.median(times)
    store.drop_schema()
    store.engine.dispose()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", help="members database (default: a temporary SQLite file)")
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument("--churn", type=int, default=2_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    url = args.url or f"sqlite:///{tempfile.mkdtemp()}/members.sqlite"
    result = measure(url, args.members, args.churn, args.repeat)
    print(f"{args.members} members, {args.churn} removed and reinstated, {url.split(':')[0]}")
    for k, v in result.items():
        print(f"  {k}: {v:.1f}")


if __name__ == "__main__":
    main()

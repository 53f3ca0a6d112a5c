"""The members database on SQLite and on a real Postgres: apply, log, rollback, concurrency."""

from __future__ import annotations

import random
import threading
import time

import pandas as pd
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from membership_assets.registry.delta import apply_in_memory, compute_delta
from membership_assets.registry.store import RollbackError, StaleDeltaError, SyncLogEntry
from membership_assets.simulators.django_registry import make_kennitala

COLS = ["kennitala", "name", "email", "status"]


def people(n: int, seed: int = 0, status: str = "active") -> pd.DataFrame:
    rng = random.Random(seed)
    kts = sorted({make_kennitala(rng) for _ in range(n * 2)})[:n]
    return pd.DataFrame(
        [
            {"kennitala": k, "name": f"Person {i}", "email": f"p{i}@example.is", "status": status}
            for i, k in enumerate(kts)
        ],
        columns=COLS,
    )


def sync(store, upstream: pd.DataFrame, sync_id: str, **kw):
    base = store.last_applied_sync()
    delta = compute_delta(upstream, store.current_members())
    entry = SyncLogEntry(id=sync_id, source="manual", status="success", members_fetched=len(upstream), **kw)
    store.apply(delta, entry, base_sync_id=base["id"] if base else None)
    return delta


def table(store) -> dict:
    return {r.kennitala: (r.name, r.email, r.status) for r in store.current_members().itertuples(index=False)}


def test_first_sync_adds_everyone_and_logs_it(store):
    upstream = people(50)
    sync(store, upstream, "s1")
    assert len(store.current_members()) == 50
    log = store.log_entry("s1")
    assert (log["status"], log["members_added"], log["members_removed"], log["members_updated"]) == (
        "success",
        50,
        0,
        0,
    )
    assert store.is_eligible(upstream["kennitala"][0])
    with store.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT DISTINCT sync_id FROM members")).scalars().all()
    assert rows == ["s1"]


def test_soft_delete_keeps_the_row_and_removes_eligibility(store):
    upstream = people(30)
    sync(store, upstream, "s1")
    gone = upstream["kennitala"][3]
    sync(store, upstream[upstream["kennitala"] != gone], "s2")
    with store.engine.connect() as conn:
        status, sid = conn.execute(
            sa.text("SELECT status, sync_id FROM members WHERE kennitala = :k"), {"k": gone}
        ).one()
    assert (status, sid) == ("removed", "s2")
    assert not store.is_eligible(gone)
    assert gone not in set(store.eligibility()["kennitala"])


def test_suspended_members_are_listed_but_not_eligible(store):
    upstream = people(3)
    upstream.loc[1, "status"] = "suspended"
    sync(store, upstream, "s1")
    view = store.eligibility().set_index("kennitala")
    assert len(view) == 3 and not bool(view.loc[upstream["kennitala"][1], "eligible"])
    assert store.eligibility_counts() == (3, 2)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10_000))
def test_sql_apply_matches_the_reference_semantics(store, seed):
    rng = random.Random(seed)
    pool = people(60, seed=7)
    store.drop_schema()
    store.ensure_schema()
    state = pool.sample(rng.randint(0, 40), random_state=seed)
    sync(store, state, "s1")
    after = pool.sample(rng.randint(0, 60), random_state=seed + 1).copy()
    after["status"] = [rng.choice(["active", "suspended"]) for _ in range(len(after))]
    after["email"] = [rng.choice([e, None, "new@x.is"]) for e in after["email"]]
    before = store.current_members()
    delta = compute_delta(after, before)
    store.apply(delta, SyncLogEntry(id="s2", source="manual", status="success"), base_sync_id="s1")
    expected = apply_in_memory(before, delta)
    assert table(store) == {
        r.kennitala: (r.name, r.email, r.status) for r in expected.itertuples(index=False)
    }


def test_duplicate_upstream_keys_are_refused():
    twice = pd.concat([people(3), people(3).iloc[:1]])
    with pytest.raises(ValueError, match="more than once"):
        compute_delta(twice, people(0))


def test_a_stale_delta_is_refused(store):
    sync(store, people(10), "s1")
    delta = compute_delta(people(12), store.current_members())
    sync(store, people(11), "s2")  # someone else synced meanwhile
    with pytest.raises(StaleDeltaError):
        store.apply(delta, SyncLogEntry(id="s3", source="manual", status="success"), base_sync_id="s1")
    assert store.log_entry("s3") is None and len(store.current_members()) == 11


def test_rollback_restores_the_previous_membership(store):
    first = people(40, seed=1)
    sync(store, first, "s1")
    before = table(store)
    second = pd.concat([first.iloc[5:], people(5, seed=99)])
    second.loc[second.index[0], "email"] = "changed@example.is"
    sync(store, second, "s2")
    assert table(store) != before
    entry = store.rollback("s2", SyncLogEntry(id="r1", source="rollback", status="success"))
    restored = table(store)
    # Rows added by s2 stay as soft-deleted records; everything else is exactly as before.
    assert {k: v for k, v in restored.items() if k in before} == before
    assert all(v[2] == "removed" for k, v in restored.items() if k not in before)
    assert entry.rolled_back_sync_id == "s2"
    assert store.log_entry("r1")["source"] == "rollback"


def test_only_the_latest_sync_can_be_rolled_back(store):
    sync(store, people(10), "s1")
    sync(store, people(12), "s2")
    with pytest.raises(RollbackError, match="not the latest"):
        store.rollback("s1", SyncLogEntry(id="r1", source="rollback", status="success"))
    with pytest.raises(RollbackError, match="never applied"):
        store.rollback("nope", SyncLogEntry(id="r2", source="rollback", status="success"))


def test_failures_are_logged_once_per_sync(store):
    for _ in range(2):
        store.record_failure(
            SyncLogEntry(id="f1", source="scheduled", status="failed", errors={"error": "x"})
        )
    log = store.sync_log_since(pd.Timestamp("2000-01-01", tz="UTC"))
    assert log["id"].tolist() == ["f1"] and log["status"].tolist() == ["failed"]


def signature(conn) -> tuple:
    return tuple(
        conn.execute(
            sa.text(
                "SELECT COUNT(*), SUM(CASE WHEN eligible THEN 1 ELSE 0 END), "
                "COALESCE(SUM(LENGTH(COALESCE(email, ''))), 0) FROM member_eligibility"
            )
        ).one()
    )


def test_readers_see_the_old_or_the_new_membership_never_a_mix(store):
    everyone = people(3400, seed=3)
    before_people, joiners = everyone.iloc[:3000], everyone.iloc[3000:]
    sync(store, before_people, "s1")
    after = before_people.iloc[600:].copy()  # 20% leave
    after.loc[after.index[:600], "email"] = "moved@example.is"  # 600 change
    after = pd.concat([after, joiners])  # 400 join
    with store.engine.connect() as conn:
        old = signature(conn)

    slow_thread: dict[str, threading.Thread] = {}

    def slow_down(conn, cursor, statement, parameters, context, executemany):
        if threading.current_thread() is slow_thread.get("t"):
            time.sleep(0.03)  # stretch the transaction so readers land inside it

    sa.event.listen(store.engine, "before_cursor_execute", slow_down)
    seen: list[tuple] = []
    stop = threading.Event()

    def reader():
        with store.engine.connect() as conn:
            while not stop.is_set():
                seen.append(signature(conn))
                conn.rollback()  # a fresh snapshot for every read

    readers = [threading.Thread(target=reader) for _ in range(2)]
    for r in readers:
        r.start()
    writer = threading.Thread(target=sync, args=(store, after, "s2"))
    slow_thread["t"] = writer
    writer.start()
    writer.join()
    time.sleep(0.1)
    stop.set()
    for r in readers:
        r.join()
    sa.event.remove(store.engine, "before_cursor_execute", slow_down)

    with store.engine.connect() as conn:
        new = signature(conn)
    assert old != new
    assert set(seen) <= {old, new}, f"a reader saw a half-applied sync: {set(seen) - {old, new}}"
    assert old in seen and new in seen and len(seen) > 10

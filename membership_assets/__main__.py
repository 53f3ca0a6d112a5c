"""Command line: ``python -m membership_assets demo | simulators``.

``demo`` runs the main jobs once on the embedded default (simulators, DuckDB, SQLite, outbox) and
prints where everything went. ``simulators`` serves the simulated APIs for ``dagster dev``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from pathlib import Path


def _dagster_home() -> Path:
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(Path(".dagster_home").resolve())))
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    project_config = Path(__file__).resolve().parent.parent / "dagster.yaml"
    if not config.exists() and project_config.exists():
        config.write_text(project_config.read_text())
    return home


def demo(args: argparse.Namespace) -> int:
    os.environ.setdefault("MEMBERSHIP_ENV", "local")
    if os.environ["MEMBERSHIP_ENV"] != "local":
        print("demo runs on the embedded default only (MEMBERSHIP_ENV=local)", file=sys.stderr)
        return 2
    _dagster_home()
    import dagster as dg

    from .environment import state_dir
    from .simulators.local import LocalSimulators

    quiet = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}
    with LocalSimulators(advance_registry=True) as sims, dg.DagsterInstance.get() as instance:
        from .definitions import defs

        if sims.reused:
            print(f"using the running simulators: {', '.join(sims.reused)}")
        registry = defs.resolve_job_def("registry_sync").execute_in_process(
            run_config=quiet, instance=instance, tags={"membership/source": "manual"}, raise_on_error=False
        )
        ab_config = {
            **quiet,
            "ops": {
                "action_builder_campaign": {"config": {"mode": args.mode}},
                "outdated_tagging_deletions": {"config": {"dry_run": not args.apply_deletions}},
            },
        }
        tags = defs.resolve_job_def("action_builder_tag_sync").execute_in_process(
            run_config=ab_config,
            instance=instance,
            tags={"membership/source": "manual"},
            raise_on_error=False,
        )
        print(_registry_summary(registry, sims.registry_churn))
        print(_ab_summary(tags))
        print(_history_summary())
        ok = registry.success and tags.success
    print(f"\nstate directory: {state_dir()}")
    print(f"Dagster runs:    {os.environ['DAGSTER_HOME']} (browse with `dagster dev`)")
    return 0 if ok else 1


def _registry_summary(result, churn) -> str:
    lines = ["", "== Registry -> voting eligibility " + ("(succeeded)" if result.success else "(FAILED)")]
    if churn:
        lines.append(
            f"upstream since last demo run: {churn['joined']} joined, {churn['left']} left, {churn['changed']} changed email"
        )
    try:
        raw = result.output_for_node("django_members")
        rejects = result.output_for_node("registry_validation", "member_rejects")
        sync = result.output_for_node("membership_sync")
        log = sync["log"]
        lines.append(
            f"registry listed: {len(raw)} rows, {len(rejects)} quarantined ({', '.join(sorted(set(rejects['reasons'])))})"
        )
        lines.append(
            f"sync {sync['sync_id']}: {log['status']}, +{log['members_added']} added, "
            f"-{log['members_removed']} removed, ~{log['members_updated']} changed"
        )
        from .environment import local_resources

        store = local_resources()["members_db"].store()
        listed, eligible = store.eligibility_counts()
        lines.append(f"member_eligibility: {eligible} eligible, {listed} listed ({store.engine.url})")
    except Exception as exc:  # a failed step leaves some outputs missing; say so, don't crash
        lines.append(f"(incomplete: {exc})")
    return "\n".join(lines)


def _ab_summary(result) -> str:
    lines = ["", "== Action Builder tag hygiene " + ("(succeeded)" if result.success else "(FAILED)")]
    try:
        scan = result.output_for_node("action_builder_campaign", "ab_scan")
        lines.append(
            f"scanned {scan['people']} people ({scan['mode']}), {scan['judged']} judged, "
            f"{scan['requests']} requests ({scan['requests'] / max(scan['people'], 1):.2f}/person), "
            f"{scan['rate_limited_429']} rate-limited, {scan['seconds']:.1f}s, "
            f"read {scan['strategy']} / {scan['connections_strategy']}"
        )
        mismatches = result.output_for_node("membership_mismatches", "membership_mismatches")
        lines.append(
            f"mismatches:      {len(mismatches)} ({int((~mismatches['inactive']).sum())} active members)"
        )
        lines.append(f"report CSV:      {result.output_for_node('mismatch_report')}")
        for event in result.get_asset_materialization_events():
            if event.asset_key == dg_key("mismatch_report_email"):
                meta = event.materialization.metadata
                if "message" in meta:
                    lines.append(f"email (outbox):  {meta['message'].value}")
        deletions = result.output_for_node("outdated_tagging_deletions")
        counts = deletions["action"].value_counts().to_dict() if len(deletions) else {}
        lines.append(f"tag cleanup:     {counts or 'nothing to delete'}")
    except Exception as exc:  # a failed step leaves some outputs missing; say so, don't crash
        lines.append(f"(incomplete: {exc})")
    return "\n".join(lines)


def _month_window() -> dict[str, str]:
    from datetime import datetime, timedelta, timezone

    now = datetime.now(timezone.utc)
    start = now - timedelta(days=31)
    return {
        "start": start.strftime("%Y-%m-%d %H:%M:%S"),
        "end": (now + timedelta(minutes=1)).strftime("%Y-%m-%d %H:%M:%S"),
    }


def _history_summary() -> str:
    from .environment import local_resources
    from .warehouse.queries import run_analyst_query

    warehouse = local_resources()["warehouse"]
    lines = ["", f"== Audit history ({warehouse.path})"]
    try:
        lost = run_analyst_query(warehouse, "lost_eligibility", **_month_window())
        syncs = run_analyst_query(warehouse, "sync_history", **_month_window())
        units = run_analyst_query(warehouse, "mismatches_by_unit")
        lines.append(f"syncs in the last 31 days: {len(syncs)}; members who lost eligibility: {len(lost)}")
        if len(units):
            latest = units[units["run_started_at"] == units["run_started_at"].max()]
            top = latest.sort_values("mismatches", ascending=False).head(3)
            lines.append(
                f"full scans recorded: {units['run_started_at'].nunique()}; most mismatches in the latest: "
                + ", ".join(f"{r.unit_name} ({r.mismatches})" for r in top.itertuples())
            )
        lines.append(
            "ask more: python -m membership_assets query lost_eligibility | mismatches_by_unit | ..."
        )
    except Exception as exc:
        lines.append(f"(history unavailable: {exc})")
    return "\n".join(lines)


def query(args: argparse.Namespace) -> int:
    """Run one of the shipped analyst queries against this environment's warehouse."""
    from .environment import resources_for
    from .warehouse.queries import run_analyst_query

    params = _month_window()
    if args.start:
        params["start"] = args.start
    if args.end:
        params["end"] = args.end
    frame = run_analyst_query(resources_for()["warehouse"], args.name, **params)
    print(frame.to_markdown(index=False) if len(frame) else "(no rows)")
    return 0


def analyst_views(args: argparse.Namespace) -> int:
    """Create or refresh the analysts' views (no kennitala, name or email; member_key instead)."""
    from .environment import resources_for

    for name in resources_for()["warehouse"].publish_analyst_views():
        print(name)
    return 0


def dg_key(name: str):
    import dagster as dg

    return dg.AssetKey(name)


def simulators(args: argparse.Namespace) -> int:
    from .simulators.local import LocalSimulators

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with LocalSimulators() as sims:
        if sims.action_builder:
            print(f"Action Builder simulator: {sims.action_builder.base_url}")
        if sims.django:
            print(f"Django registry simulator: {sims.django.base_url}/api/members/eligible")
        print("serving; Ctrl-C to stop (state is saved on exit)")
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m membership_assets")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="run the main jobs once on the embedded default")
    p.add_argument("--mode", choices=["full", "incremental"], default="full")
    p.add_argument(
        "--apply-deletions", action="store_true", help="really delete outdated taggings in the simulator"
    )
    p.set_defaults(func=demo)
    p = sub.add_parser("simulators", help="serve the simulated APIs for `dagster dev`")
    p.set_defaults(func=simulators)
    from .warehouse.queries import query_names

    p = sub.add_parser("query", help="run an analyst query against the audit warehouse")
    p.add_argument("name", choices=query_names())
    p.add_argument("--start", help="'YYYY-MM-DD HH:MM:SS' UTC (default: 31 days ago)")
    p.add_argument("--end", help="'YYYY-MM-DD HH:MM:SS' UTC, exclusive (default: now)")
    p.set_defaults(func=query)
    p = sub.add_parser("analyst-views", help="publish the audit views without direct identifiers")
    p.set_defaults(func=analyst_views)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

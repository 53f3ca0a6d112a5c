"""Tell the admins when any membership job fails (aborted sync, blocked cleanup, dead API)."""

import dagster as dg

from ..privacy import scrub
from ..registry.recovery import UNLOGGED_TAG
from ..run_tags import alerts_admins
from .resources import EmailSender, Recipients


def failure_message(
    job_name: str, run_id: str, error: str | None, outcome: str | None = None
) -> tuple[str, str]:
    subject = f"[membership_assets] {job_name} failed"
    body = (
        f"Run {run_id} of {job_name} failed.\n\n"
        f"{error or 'No error message was recorded.'}\n\n"
        f"{outcome or GENERIC_OUTCOME}\n\n"
        "Open the run in Dagster for the full log.\n"
    )
    return subject, body


GENERIC_OUTCOME = (
    "Member syncs commit in one transaction and tag cleanup records every action in the audit "
    "warehouse before it acts."
)
NOTHING_APPLIED = (
    "Nothing was applied: a member sync commits its changes and its sync log row in one "
    "transaction, and this run's did not commit."
)
UNLOGGED_NOTE = (
    " The members database was unreachable, so the sync log has no row for this failure yet: it "
    "is kept with this run and the next registry_sync run writes it."
)
HISTORY_STEPS_PREFIX = "audit__"
CATCH_UP_STEP = "audit__history_catch_up"  # delivers earlier syncs' history, not this one's


def run_outcome(instance: dg.DagsterInstance, run: dg.DagsterRun) -> str | None:
    """What a failed registry run did apply, and which history it still owes the warehouse
    (recorded in the members DB with the sync; the next registry_sync delivers it)."""
    if run.job_name != "registry_sync":
        return None
    applied = []
    for record in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION):
        m = record.asset_materialization
        if m is not None and m.asset_key == dg.AssetKey("membership_sync"):
            md = {k: v.value for k, v in m.metadata.items()}
            applied.append(
                f"Applied: sync {md.get('sync_id')} ({md.get('status')}): {md.get('added')} added or "
                f"reinstated, {md.get('removed')} removed, {md.get('updated')} changed. Members' "
                "eligibility reflects it."
            )
    if not applied:
        fresh = instance.get_run_by_id(run.run_id) or run
        unlogged = UNLOGGED_NOTE if UNLOGGED_TAG in fresh.tags else ""
        return NOTHING_APPLIED + unlogged
    missing = sorted(
        {
            r.step_key.removeprefix(HISTORY_STEPS_PREFIX)
            for kind in (dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.STEP_SKIPPED)
            for r in instance.all_logs(run.run_id, of_type=kind)
            if r.step_key and r.step_key.startswith(HISTORY_STEPS_PREFIX) and r.step_key != CATCH_UP_STEP
        }
    )
    if missing:
        applied.append(
            f"History pending in the audit warehouse ({', '.join(missing)}): it is recorded in the "
            "members database with the sync, and the next registry_sync run delivers it (step "
            "history_catch_up); nothing to do unless the warehouse stays unreachable."
        )
    return "\n".join(applied)


def failed_check_problems(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    """What each failed asset check of the run found (freshness: what is stale, since when)."""
    problems = []
    for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION):
        evaluation = record.dagster_event.event_specific_data if record.dagster_event else None
        if evaluation is not None and not evaluation.passed and "problem" in evaluation.metadata:
            problems.append(f"{evaluation.check_name}: {evaluation.metadata['problem'].value}")
    return problems


@dg.run_failure_sensor(
    name="email_admins_on_failure",
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Emails the admins (ADMIN_EMAILS) when any job in this code location fails; a "
    "dry run's failure only if it was launched with the tag membership/alert_admins=true.",
)
def email_admins_on_failure(context: dg.RunFailureSensorContext, email: EmailSender, recipients: Recipients):
    to = recipients.admin_list
    if not to:
        return dg.SkipReason("no admin recipients configured (ADMIN_EMAILS)")
    run = context.dagster_run
    if not alerts_admins(run):  # a dry run, unless launched with membership/alert_admins=true
        return dg.SkipReason(f"run {run.run_id} is a dry run; no alert asked for")
    details = [context.failure_event.message] if context.failure_event else []
    for record in context.instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE):
        event = record.dagster_event
        error = event.step_failure_data.error if event and event.step_failure_data else None
        while error is not None and error.cause is not None:  # unwrap Dagster's step wrapper
            error = error.cause
        if error is not None:
            details.append(f"{event.step_key}: {error.message.strip()}")
    # Alert emails leave the organisation's systems: no kennitala, email or row values in them.
    details.extend(failed_check_problems(context.instance, run.run_id))
    outcome = run_outcome(context.instance, run)
    subject, body = failure_message(run.job_name, run.run_id, scrub("\n".join(details)) or None, outcome)
    email.send(to, subject, body)
    return None

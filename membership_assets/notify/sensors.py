"""Tell the admins when any membership job fails (aborted sync, blocked cleanup, dead API)."""

import dagster as dg

from ..privacy import scrub
from ..run_tags import alerts_admins
from .resources import EmailSender, Recipients


def failure_message(job_name: str, run_id: str, error: str | None) -> tuple[str, str]:
    subject = f"[membership_assets] {job_name} failed"
    body = (
        f"Run {run_id} of {job_name} failed.\n\n"
        f"{error or 'No error message was recorded.'}\n\n"
        "Nothing was half-applied: member syncs commit in one transaction and tag cleanup records "
        "every action in the audit warehouse. Open the run in Dagster for the full log.\n"
    )
    return subject, body


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
    subject, body = failure_message(run.job_name, run.run_id, scrub("\n".join(details)) or None)
    email.send(to, subject, body)
    return None

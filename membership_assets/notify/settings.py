"""Email settings: SendGrid in production, an .eml outbox under the state dir locally."""

from __future__ import annotations

from typing import Any

from pydantic import SecretStr

from ..config import Settings, setting
from ..settings import is_production, state_dir
from .resources import FileOutboxEmail, Recipients, SendGridEmail


class EmailSettings(Settings):
    GROUP = "Email"

    sendgrid_api_key: SecretStr | None = setting(
        "SENDGRID_API_KEY_PASSWORD",
        kind="secret",
        shown_default="local: .eml outbox instead",
        meaning="SendGrid key for the report and alert email",
        production=True,
    )
    from_address: str = setting(
        "EMAIL_FROM",
        "membership-sync@example.org",
        local="membership-sync@localhost",
        kind="address",
        meaning="sender of every email",
        production=True,
    )
    report_recipients: str = setting(
        "REPORT_RECIPIENTS",
        "",
        local="organizers@example.org",
        kind="comma-separated addresses",
        shown_default="local: `organizers@example.org`",
        meaning="recipients of the organizers' tag report",
        production=True,
    )
    admin_emails: str = setting(
        "ADMIN_EMAILS",
        "",
        local="admins@example.org",
        kind="comma-separated addresses",
        shown_default="local: `admins@example.org`",
        meaning="recipients of failure and staleness alerts",
        production=True,
    )

    def resources(self, env: str | None = None) -> dict[str, Any]:
        if is_production(env):
            email: Any = SendGridEmail(
                api_key=self.launch_var("sendgrid_api_key"), from_address=self.from_address
            )
        else:
            email = FileOutboxEmail(directory=str(state_dir() / "outbox"), from_address=self.from_address)
        return {
            "email": email,
            "recipients": Recipients(tag_report=self.report_recipients, admins=self.admin_emails),
        }

"""Email for reports and alerts: SendGrid in production, an .eml outbox on the embedded default."""

from __future__ import annotations

import base64
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

import dagster as dg
from pydantic import Field
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter


@dataclass(frozen=True)
class Attachment:
    filename: str
    content: bytes
    mimetype: str = "text/csv"


def split_addresses(value: str | None) -> list[str]:
    """Comma/semicolon/whitespace separated addresses, as the reference's RECIPIENT_EMAILS."""
    return [a for a in re.split(r"[,;\s]+", value or "") if a]


class Recipients(dg.ConfigurableResource):
    """Who receives what: the tag-hygiene report and operational alerts."""

    tag_report: str = Field(default="", description="Comma-separated recipients of the mismatch CSV.")
    admins: str = Field(default="", description="Comma-separated recipients of failure alerts.")

    @property
    def tag_report_list(self) -> list[str]:
        return split_addresses(self.tag_report)

    @property
    def admin_list(self) -> list[str]:
        return split_addresses(self.admins)


class EmailSender(dg.ConfigurableResource):
    """Interface: send one message, return an id (SendGrid message id or outbox file path).

    ``body`` is the plain-text part; ``html``, when given, the same content as HTML (the mail
    client shows one of the two).
    """

    from_address: str = "membership-sync@localhost"

    def send(
        self,
        to: list[str],
        subject: str,
        body: str,
        attachments: tuple[Attachment, ...] = (),
        html: str | None = None,
    ) -> str:
        raise NotImplementedError


class FileOutboxEmail(EmailSender):
    """Writes each message as a standard .eml file: real MIME, readable by any mail client."""

    directory: str = Field(default=".local/outbox")

    def send(
        self,
        to: list[str],
        subject: str,
        body: str,
        attachments: tuple[Attachment, ...] = (),
        html: str | None = None,
    ) -> str:
        if not to:
            raise ValueError("no recipients")
        msg = EmailMessage()
        msg["From"] = self.from_address
        msg["To"] = ", ".join(to)
        msg["Subject"] = subject
        msg["Date"] = datetime.now(UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")
        msg["Message-ID"] = make_msgid(domain="membership-assets.local")
        msg.set_content(body)
        if html is not None:
            msg.add_alternative(html, subtype="html")  # multipart/alternative: text, then HTML
        for a in attachments:
            maintype, subtype = a.mimetype.split("/", 1)
            msg.add_attachment(a.content, maintype=maintype, subtype=subtype, filename=a.filename)
        outdir = Path(self.directory)
        outdir.mkdir(parents=True, exist_ok=True)
        slug = re.sub(r"[^a-z0-9]+", "-", subject.lower()).strip("-")[:60]
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        path = outdir / f"{stamp}_{slug}.eml"
        write_atomically(path, bytes(msg))
        return str(path)


def write_atomically(path: Path, data: bytes) -> None:
    """``path`` holds all of ``data`` or does not exist: a full disk or a crash leaves no
    truncated file for a reader (or a mail pickup) to take for a message."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # not *.eml: no reader picks it up
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _is_transient(exc: BaseException) -> bool:
    status = getattr(exc, "status_code", None) or getattr(exc, "code", None)
    return isinstance(status, int) and (status == 429 or status >= 500)


class SendGridEmail(EmailSender):
    """SendGrid v3 mail send; retries 429/5xx, fails fast on auth or validation errors."""

    api_key: str = Field(description="SendGrid API key (SENDGRID_API_KEY_PASSWORD).")
    api_host: str = Field(default="https://api.sendgrid.com", description="SendGrid API base URL.")
    max_attempts: int = 3

    def send(
        self,
        to: list[str],
        subject: str,
        body: str,
        attachments: tuple[Attachment, ...] = (),
        html: str | None = None,
    ) -> str:
        from sendgrid import SendGridAPIClient
        from sendgrid.helpers.mail import (
            Attachment as SgAttachment,
        )
        from sendgrid.helpers.mail import (
            Disposition,
            FileContent,
            FileName,
            FileType,
            Mail,
        )

        if not to:
            raise ValueError("no recipients")
        mail = Mail(
            from_email=self.from_address,
            to_emails=to,
            subject=subject,
            plain_text_content=body,
            html_content=html,
        )
        for a in attachments:
            mail.add_attachment(
                SgAttachment(
                    FileContent(base64.b64encode(a.content).decode()),
                    FileName(a.filename),
                    FileType(a.mimetype),
                    Disposition("attachment"),
                )
            )
        client = SendGridAPIClient(self.api_key, host=self.api_host)
        retrying = Retrying(
            stop=stop_after_attempt(self.max_attempts),
            wait=wait_exponential_jitter(initial=1, max=30),
            retry=retry_if_exception(_is_transient),
            reraise=True,
        )
        response = retrying(client.send, mail)
        headers = getattr(response, "headers", {}) or {}
        return str(headers.get("X-Message-Id", f"sendgrid:{response.status_code}"))

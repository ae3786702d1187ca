"""The alert sink and incident bookkeeping.

``AlertSink`` delivers a message to every configured channel: always the log; a Slack-compatible
incoming webhook (``ALERT_SLACK_WEBHOOK_URL``, JSON ``{"text": ...}``) when set; e-mail over SMTP
when ``ALERT_SMTP_HOST`` (and ``ALERT_SMTP_PORT``, ``ALERT_SMTP_FROM``, ``ALERT_SMTP_TO``,
optional ``ALERT_SMTP_USER`` + ``ALERT_SMTP_PASSWORD``) are set.

``Incidents`` keeps one row per incident key in the ops store (``alert_incidents``) so that a
condition that stays bad is announced once, not on every sensor tick, and a single "resolved"
message goes out when it clears. Claiming an incident is a conditional write (insert-or-ignore,
then ``update ... where status = 'resolved'``), so two evaluators never both announce it. If every
remote channel fails the claim is undone, so the next evaluation tries again (nothing is lost).

The webhook URL and the SMTP password are secrets: they are never logged or put in messages.
"""

from __future__ import annotations

import logging
import os
import smtplib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage

import httpx
import sqlalchemy as sa

from recovery_pipeline.opsstore.models import alert_incidents
from recovery_pipeline.opsstore.store import try_insert, utcnow

log = logging.getLogger("recovery_pipeline.alerts")

SEVERITIES = ("INFO", "WARN", "ERROR")


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    sender: str
    recipients: tuple[str, ...]
    user: str | None = None
    password_env: str = "ALERT_SMTP_PASSWORD"  # the password is read when sending, never stored
    starttls: bool = False


@dataclass
class AlertSink:
    """Where alerts go. Build it with :meth:`from_env`; ``send`` returns the channels that took it."""

    slack_webhook_url: str | None = None
    smtp: SmtpConfig | None = None
    source: str = "recovery_pipeline"
    timeout_s: float = 5.0
    transport: httpx.BaseTransport | None = None  # tests may inject one
    logger: logging.Logger = field(default=log)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AlertSink:
        env = os.environ if env is None else env
        smtp = None
        if env.get("ALERT_SMTP_HOST"):
            recipients = tuple(r.strip() for r in env.get("ALERT_SMTP_TO", "").split(",") if r.strip())
            smtp = SmtpConfig(
                host=env["ALERT_SMTP_HOST"],
                port=int(env.get("ALERT_SMTP_PORT") or 25),
                sender=env.get("ALERT_SMTP_FROM") or "recovery-pipeline@localhost",
                recipients=recipients,
                user=env.get("ALERT_SMTP_USER") or None,
                starttls=(env.get("ALERT_SMTP_STARTTLS", "").lower() in ("1", "true", "yes")),
            )
        return cls(slack_webhook_url=env.get("ALERT_SLACK_WEBHOOK_URL") or None, smtp=smtp)

    @property
    def remote_channels(self) -> list[str]:
        out = []
        if self.slack_webhook_url:
            out.append("slack")
        if self.smtp and self.smtp.recipients:
            out.append("smtp")
        return out

    def send(self, text: str, severity: str = "ERROR") -> list[str]:
        """Deliver ``text``; returns the channels that accepted it (``log`` always does)."""
        level = logging.ERROR if severity == "ERROR" else logging.WARNING
        self.logger.log(level, "[alert] %s", text)
        delivered = ["log"]
        if self.slack_webhook_url:
            try:
                with httpx.Client(timeout=self.timeout_s, transport=self.transport) as client:
                    resp = client.post(self.slack_webhook_url, json={"text": text})
                resp.raise_for_status()
                delivered.append("slack")
            except httpx.HTTPError as exc:  # the URL is a secret: name only the failure kind
                self.logger.warning("alert to the Slack webhook failed: %s", type(exc).__name__)
        if self.smtp and self.smtp.recipients:
            try:
                self._send_mail(text, severity)
                delivered.append("smtp")
            except (OSError, smtplib.SMTPException) as exc:
                self.logger.warning("alert e-mail failed: %s", type(exc).__name__)
        return delivered

    def _send_mail(self, text: str, severity: str) -> None:
        assert self.smtp is not None
        msg = EmailMessage()
        msg["Subject"] = f"[{severity}] {self.source}: {text.splitlines()[0][:120]}"
        msg["From"] = self.smtp.sender
        msg["To"] = ", ".join(self.smtp.recipients)
        msg.set_content(text)
        with smtplib.SMTP(self.smtp.host, self.smtp.port, timeout=self.timeout_s) as smtp:
            if self.smtp.starttls:
                smtp.starttls()
            password = os.environ.get(self.smtp.password_env)
            if self.smtp.user and password:
                smtp.login(self.smtp.user, password)
            smtp.send_message(msg)


def format_alert(severity: str, key: str, message: str, *, resolved: bool = False) -> str:
    if resolved:
        return f":white_check_mark: RESOLVED `{key}`: {message}"
    icon = ":red_circle:" if severity == "ERROR" else ":warning:"
    return f"{icon} {severity} `{key}`: {message}"


@dataclass
class Incidents:
    """Incident bookkeeping over ``alert_incidents``: one alert per incident, one resolution."""

    engine: sa.Engine
    sink: AlertSink

    def fire(self, key: str, severity: str, message: str, now: datetime | None = None) -> bool:
        """Record that ``key`` is bad. Sends an alert only when the incident is new (or re-opened).

        Returns True when an alert went out on this call.
        """
        if severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, got {severity!r}")
        now = now or utcnow()
        t = alert_incidents
        with self.engine.begin() as conn:
            inserted = try_insert(
                conn, t, incident_key=key, status="firing", severity=severity, message=message,
                first_fired_at=now, last_seen_at=now, resolved_at=None)
            previous = None
            if not inserted:
                previous = conn.execute(sa.select(t).where(t.c.incident_key == key)).mappings().one()
                reopened = conn.execute(
                    sa.update(t).where(t.c.incident_key == key, t.c.status == "resolved").values(
                        status="firing", severity=severity, message=message, first_fired_at=now,
                        last_seen_at=now, resolved_at=None)).rowcount
                if not reopened:
                    conn.execute(sa.update(t).where(t.c.incident_key == key).values(last_seen_at=now))
                    return False
        delivered = self.sink.send(format_alert(severity, key, message), severity)
        if self.sink.remote_channels and not set(self.sink.remote_channels) & set(delivered):
            self._undo_claim(key, previous)
            return False
        return True

    def resolve(self, key: str, message: str = "condition cleared", now: datetime | None = None) -> bool:
        """Mark ``key`` resolved; sends one resolved message if it was firing. Returns True if sent."""
        now = now or utcnow()
        t = alert_incidents
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(t).where(t.c.incident_key == key)).mappings().one_or_none()
            if row is None or row["status"] != "firing":
                return False
            changed = conn.execute(sa.update(t).where(t.c.incident_key == key, t.c.status == "firing")
                                   .values(status="resolved", resolved_at=now, last_seen_at=now)).rowcount
        if not changed:
            return False
        delivered = self.sink.send(format_alert(row["severity"], key, message, resolved=True), "INFO")
        if self.sink.remote_channels and not set(self.sink.remote_channels) & set(delivered):
            with self.engine.begin() as conn:  # undo: the next evaluation retries the resolution
                conn.execute(sa.update(t).where(t.c.incident_key == key).values(
                    status="firing", resolved_at=None))
            return False
        return True

    def firing(self, prefix: str = "") -> dict[str, dict]:
        t = alert_incidents
        q = sa.select(t).where(t.c.status == "firing")
        if prefix:
            q = q.where(t.c.incident_key.startswith(prefix, autoescape=True))
        with self.engine.connect() as conn:
            return {r["incident_key"]: dict(r) for r in conn.execute(q).mappings()}

    def sync(self, prefix: str, bad: Mapping[str, tuple[str, str]]) -> dict[str, list[str]]:
        """Fire every key in ``bad`` ({key: (severity, message)}) and resolve every firing key
        under ``prefix`` that is no longer bad. Returns {"fired": [...], "resolved": [...]}."""
        fired = [k for k, (sev, msg) in sorted(bad.items()) if self.fire(k, sev, msg)]
        resolved = [k for k in sorted(self.firing(prefix)) if k not in bad and self.resolve(k)]
        return {"fired": fired, "resolved": resolved}

    def _undo_claim(self, key: str, previous: Mapping | None) -> None:
        t = alert_incidents
        with self.engine.begin() as conn:
            if previous is None:
                conn.execute(sa.delete(t).where(t.c.incident_key == key))
            else:
                conn.execute(sa.update(t).where(t.c.incident_key == key).values(
                    status=previous["status"], severity=previous["severity"],
                    message=previous["message"], first_fired_at=previous["first_fired_at"],
                    resolved_at=previous["resolved_at"]))

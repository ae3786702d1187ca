"""What must be true before launching recovery on the Stripe path, checked from the data we hold.

Each check says ``verified``, ``failed`` or ``cannot verify`` (with why). Sources: the ops store's
Stripe inbox (events as received: first/last time, how they arrived), ``stripe_objects`` (latest
invoice states: attempt counts, scheduled retries) and the environment (names of secrets only;
values are never printed).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from recovery_pipeline.opsstore.models import webhook_inbox
from recovery_pipeline.settings import DEMO_SECRETS, SECRET_ENV_VARS
from recovery_pipeline.stripe_connector.mapping import ts
from recovery_pipeline.stripe_connector.models import stripe_objects

VERIFIED, FAILED, UNKNOWN = "verified", "failed", "cannot verify"
INGEST_DAYS = 7
RECEIVING_WITHIN = timedelta(hours=24)
RESTRICTED_KEY_PERMISSIONS = "read: Invoices, Charges, Subscriptions, Customers"


@dataclass
class Check:
    name: str
    status: str  # verified | failed | cannot verify
    detail: str

    def as_dict(self) -> dict:
        return asdict(self)


def _stripe_inbox(engine: sa.Engine) -> list[dict]:
    t = webhook_inbox.c
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(
            sa.select(t.event_id, t.event_type, t.received_at, t.headers_json, t.body, t.status)
            .where(t.provider == "stripe"))]


def _invoices(engine: sa.Engine) -> list[dict]:
    t = stripe_objects.c
    with engine.connect() as conn:
        return [json.loads(d) for (d,) in conn.execute(
            sa.select(t.data_json).where(t.object_type == "invoice"))]


def _from_file(row: dict) -> bool:
    try:
        return str(json.loads(row["headers_json"]).get("x-recovery-source", "")).startswith("file")
    except (ValueError, AttributeError):
        return False


def _created(row: dict) -> datetime | None:
    try:
        return ts(json.loads(row["body"]).get("created"))
    except (ValueError, AttributeError):
        return None


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def run_checks(engine: sa.Engine, env: dict[str, str] | None = None, now: datetime | None = None) -> list[Check]:
    env = os.environ if env is None else env
    now = now or datetime.now(UTC)
    inbox = _stripe_inbox(engine)
    invoices = _invoices(engine)
    checks: list[Check] = []

    # 1. Smart Retries off: Stripe schedules its own retries (attempt_count > 1 with a next attempt)
    retried = [i for i in invoices if (i.get("attempt_count") or 0) > 1 and i.get("next_payment_attempt")]
    failed_open = [i for i in invoices if (i.get("attempt_count") or 0) >= 1 and i.get("status") == "open"]
    scheduled = [i for i in failed_open if i.get("next_payment_attempt")]
    if retried:
        checks.append(Check("Smart Retries off", FAILED,
                            f"{len(retried)} invoice(s) were retried by Stripe and have another automatic "
                            f"attempt scheduled (e.g. {retried[0]['id']}): Smart Retries (or a retry schedule) "
                            "is on; turn it off in Billing > Revenue recovery > Retries"))
    elif failed_open and not scheduled:
        checks.append(Check("Smart Retries off", VERIFIED,
                            f"{len(failed_open)} open invoice(s) with a failed attempt and no automatic "
                            "retry scheduled (next_payment_attempt is empty)"))
    elif scheduled:
        checks.append(Check("Smart Retries off", FAILED,
                            f"{len(scheduled)} failed open invoice(s) have next_payment_attempt set "
                            f"(e.g. {scheduled[0]['id']}): Stripe will retry them itself"))
    else:
        checks.append(Check("Smart Retries off", UNKNOWN,
                            "no failed open invoice in the data yet: the retry setting shows only on an "
                            "invoice whose payment failed (next_payment_attempt)"))

    # 2. Webhook endpoint configured and receiving
    live = [r for r in inbox if not _from_file(r)]
    if not live:
        checks.append(Check("webhook endpoint configured and receiving", FAILED if not inbox else UNKNOWN,
                            "no Stripe event has reached POST /webhooks/stripe" + (
                                f" ({len(inbox)} replayed from files only)" if inbox else "")
                            + "; add the endpoint in Stripe (Developers > Webhooks) with the invoice.*, "
                              "charge.*, payment_intent.payment_failed, customer.subscription.* and "
                              "customer.source.expiring events"))
    else:
        last = max(_aware(r["received_at"]) for r in live)
        if now - last <= RECEIVING_WITHIN:
            checks.append(Check("webhook endpoint configured and receiving", VERIFIED,
                                f"{len(live)} event(s) received by the endpoint, the last at {last:%Y-%m-%d %H:%M}Z"))
        else:
            checks.append(Check("webhook endpoint configured and receiving", FAILED,
                                f"the last event reached the endpoint at {last:%Y-%m-%d %H:%M}Z, more than "
                                f"{RECEIVING_WITHIN} ago: check the endpoint's status in Stripe"))

    # 3. 7 days of events ingested, with no retries of payments during them
    created = sorted(c for c in (_created(r) for r in inbox) if c is not None)
    if not created:
        checks.append(Check(f"{INGEST_DAYS} days of events ingested with no retries", FAILED,
                            "no Stripe event ingested yet"))
    else:
        first, last = created[0], created[-1]
        span = last - first
        window_start = int(first.timestamp())
        retries = [i for i in invoices if (i.get("attempt_count") or 0) > 1 and (i.get("created") or 0) >= window_start]
        if span < timedelta(days=INGEST_DAYS):
            checks.append(Check(f"{INGEST_DAYS} days of events ingested with no retries", FAILED,
                                f"events span {span.days} day(s) {span.seconds // 3600} h "
                                f"({first:%Y-%m-%d} .. {last:%Y-%m-%d}), {len(created)} event(s): keep ingesting"))
        elif retries:
            checks.append(Check(f"{INGEST_DAYS} days of events ingested with no retries", FAILED,
                                f"{span.days} days of events ({first:%Y-%m-%d} .. {last:%Y-%m-%d}) but "
                                f"{len(retries)} invoice(s) in that window were retried (attempt_count > 1, "
                                f"e.g. {retries[0]['id']})"))
        else:
            checks.append(Check(f"{INGEST_DAYS} days of events ingested with no retries", VERIFIED,
                                f"{span.days} days of events ({first:%Y-%m-%d} .. {last:%Y-%m-%d}), "
                                f"{len(created)} event(s), no invoice retried in that window"))

    # 4. Restricted API key present (for the API loader / backfill)
    key_var = SECRET_ENV_VARS["stripe_api_key"]
    key = env.get(key_var) or ""
    if not key:
        checks.append(Check("restricted API key present", FAILED,
                            f"{key_var} is not set; create a restricted key ({RESTRICTED_KEY_PERMISSIONS})"))
    elif key.startswith(("rk_live_", "rk_test_")):
        checks.append(Check("restricted API key present", VERIFIED,
                            f"{key_var} holds a restricted key ({'live' if '_live_' in key else 'test'} mode); "
                            f"its permissions cannot be read from data: they should be {RESTRICTED_KEY_PERMISSIONS}"))
    elif key.startswith(("sk_live_", "sk_test_")):
        checks.append(Check("restricted API key present", FAILED,
                            f"{key_var} holds a full secret key (sk_...); use a restricted key "
                            f"({RESTRICTED_KEY_PERMISSIONS})"))
    else:
        checks.append(Check("restricted API key present", UNKNOWN,
                            f"{key_var} is set but does not look like a Stripe key (rk_/sk_ prefix)"))

    # 5. Webhook signing secret set
    secret_var = SECRET_ENV_VARS["stripe_webhook_secret"]
    secret = env.get(secret_var) or ""
    if not secret:
        demo = " (the receiver falls back to the loopback demo secret)" if secret_var in DEMO_SECRETS else ""
        checks.append(Check(f"{secret_var} set", FAILED, f"{secret_var} is not set{demo}"))
    elif secret == DEMO_SECRETS.get(secret_var):
        checks.append(Check(f"{secret_var} set", FAILED, f"{secret_var} is the loopback demo secret"))
    elif not secret.startswith("whsec_"):
        checks.append(Check(f"{secret_var} set", UNKNOWN,
                            f"{secret_var} is set but is not a whsec_... signing secret"))
    else:
        checks.append(Check(f"{secret_var} set", VERIFIED, f"{secret_var} is set (whsec_...)"))
    return checks

"""A dlt source over the Stripe API: backfill by ``created`` range and incremental sync that also
re-scans objects that are still moving (open invoices, subscriptions in dunning).

Yields billing export rows (the columns of ``billing_engine/schema.py``, conformed to the raw
contract of ``ingest.contract``: ``_source='stripe_api'``, ``_month``, ...; ``conform=False`` for
the bare columns) into ``customers``, ``subscriptions``, ``invoices`` and ``transactions`` (one per
charge, plus one per refund), merged on the primary key, so a dlt pipeline with
``dataset_name="billing_raw"`` fills the raw warehouse tables (``raw_load.load_stripe_raw``).

Key: the argument ``stripe_api_key`` is injected by dlt, so the environment variable
``STRIPE_API_KEY`` (dlt's least specific lookup name for it; any dlt config provider works) supplies
it; it travels only in the ``Authorization`` header, never in rows, state or logs. Use a **restricted key**
(``rk_...``) with **Read** permission on: Invoices, Charges (covers refunds' state on charges),
Subscriptions, Customers; nothing else and no Write permission.

Listing: ``GET /v1/{invoices,charges,subscriptions,customers}?created[gte]=&created[lt]=&limit=100``
paged with ``starting_after`` while ``has_more`` (``status=all`` for subscriptions). Requests pin
``Stripe-Version`` (default 2024-06-20, where a charge names its invoice and an invoice its
subscription; the basil layout is understood as well).

Incremental: each list resource has a typed cursor ``dlt.sources.incremental[datetime]("created_at",
initial_value=...)`` (the row's ``created_at`` is Stripe's ``created``; explicit initial value
``initial_created``, unix seconds), sent to Stripe as ``created[gte]``. Because a cursor on
``created`` never sees later changes to old
objects (the Events API reaches back only 30 days), two re-scan resources run every time:
``open_invoices`` lists ``status=open`` invoices and GETs every invoice id it last saw open, so an
old invoice that got paid, voided or marked uncollectible is picked up (both with the subscription
expanded, so an ended dunning stamps the invoice's ``dunning_complete_at``); ``dunning_subscriptions``
does the same for ``past_due`` / ``unpaid`` subscriptions (``butter_dunning_complete`` metadata,
cancellation at the end of dunning). Both write into the same tables (merge on the key).
Backfill: pass ``created_gte`` / ``created_lt`` (unix seconds; e.g. one month per run); the range
becomes the cursor's ``initial_value`` / ``end_value`` and leaves the incremental state untouched.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import dlt
import httpx
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from recovery_pipeline.stripe_connector import mapping as m
from recovery_pipeline.stripe_connector.store import conformed_tables, dlt_columns

DEFAULT_BASE_URL = "https://api.stripe.com"
DEFAULT_API_VERSION = "2024-06-20"
DEFAULT_INITIAL_CREATED = 0  # the epoch: a first run lists everything (explicit, not "now")
PAGE_LIMIT = 100
ATTEMPT_STATE_DAYS = 90  # failed-charge history kept per invoice for attempt numbering


SOURCE_NAME = "stripe_api"  # the rows' _source in billing_raw


def _chunks(rows: Iterable[dict], n: int) -> Iterator[list[dict]]:
    chunk: list[dict] = []
    for r in rows:
        chunk.append(r)
        if len(chunk) >= n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class StripeAPIError(RuntimeError):
    """A non-retryable Stripe API answer (status and Stripe's error message, never the key)."""


_backoff = wait_exponential_jitter(initial=0.5, max=20)
MAX_RETRY_AFTER_S = 60.0


def _wait(retry_state) -> float:
    """Exponential backoff with jitter, or the server's Retry-After when it asks for longer."""
    wait = _backoff(retry_state)
    exc = retry_state.outcome.exception() if retry_state.outcome else None
    if isinstance(exc, httpx.HTTPStatusError):
        try:
            wait = max(wait, min(float(exc.response.headers.get("retry-after", 0)), MAX_RETRY_AFTER_S))
        except ValueError:
            pass
    return wait


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, httpx.TransportError):
        return True
    return isinstance(exc, httpx.HTTPStatusError) and (
        exc.response.status_code == 429 or exc.response.status_code >= 500)


class StripeClient:
    def __init__(self, api_key: str, base_url: str = DEFAULT_BASE_URL, api_version: str = DEFAULT_API_VERSION,
                 page_limit: int = PAGE_LIMIT, transport: httpx.BaseTransport | None = None):
        self.page_limit = page_limit
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"), timeout=30, transport=transport,
            headers={"Authorization": f"Bearer {api_key}", "Stripe-Version": api_version})

    def close(self) -> None:
        self._http.close()

    @retry(retry=retry_if_exception(_retryable), stop=stop_after_attempt(6), wait=_wait, reraise=True)
    def get(self, path: str, params: dict[str, Any] | None = None) -> dict:
        resp = self._http.get(path, params=params)
        if resp.status_code == 429 or resp.status_code >= 500:
            resp.raise_for_status()
        if resp.status_code >= 400:
            try:
                message = resp.json().get("error", {}).get("message", "")
            except ValueError:
                message = resp.text[:200]
            raise StripeAPIError(f"GET {path}: {resp.status_code} {message}")
        return resp.json()

    def list(self, path: str, params: dict[str, Any]) -> Iterator[dict]:
        params = {**params, "limit": self.page_limit}
        while True:
            page = self.get(path, params)
            data = page.get("data") or []
            yield from data
            if not page.get("has_more") or not data:
                return
            params["starting_after"] = data[-1]["id"]


def _unix(value: datetime) -> int:
    return int(value.timestamp())


def _range(cursor: dlt.sources.incremental) -> dict[str, int]:
    start = cursor.start_value if cursor.start_value is not None else cursor.initial_value
    params = {"created[gte]": _unix(start)}
    if cursor.end_value is not None:
        params["created[lt]"] = _unix(cursor.end_value)
    return params


# --- per-object "updated" timestamps for API reads (the object's own times, never the sync time) ---

def subscription_updated_ts(sub: dict) -> int:
    dunning = m.subscription_dunning_complete(sub)
    values = [m._int(sub.get(k)) for k in ("created", "start_date", "canceled_at", "ended_at")]
    if dunning:
        values.append(int(dunning.timestamp()))
    return max(values)


def charge_updated_ts(ch: dict) -> int:
    refunds = [m._int(r.get("created")) for r in ((ch.get("refunds") or {}).get("data") or [])
               if isinstance(r, dict)]
    return max([m._int(ch.get("created"))] + refunds)


def _invoice_row(inv: dict) -> dict:
    """An invoice row; when its subscription came expanded (the re-scans ask for it), the
    subscription's end of dunning stamps the open / uncollectible invoice it predates."""
    sub = inv.get("subscription") if isinstance(inv.get("subscription"), dict) else None
    dunning = m.subscription_dunning_complete(sub) if sub else None
    if dunning is not None and dunning.timestamp() < m._int(inv.get("created")):
        dunning = None
    return m.invoice_row(inv, m.invoice_updated_ts(inv), dunning_complete_at=dunning)


def _sub_row(sub: dict) -> dict:
    return m.subscription_row(sub, subscription_updated_ts(sub))


@dlt.source(name="stripe_api", max_table_nesting=0)
def stripe_api_source(
    stripe_api_key: str = dlt.secrets.value,
    stripe_base_url: str = DEFAULT_BASE_URL,
    stripe_api_version: str = DEFAULT_API_VERSION,
    initial_created: int = DEFAULT_INITIAL_CREATED,
    created_gte: int | None = None,
    created_lt: int | None = None,
    rescan: bool = True,
    page_limit: int = PAGE_LIMIT,
    transport: Any = None,
    conform: bool = True,
    loaded_at: datetime | None = None,
):
    """Stripe invoices, charges, subscriptions and customers as billing export rows."""
    client = StripeClient(stripe_api_key, stripe_base_url, stripe_api_version, page_limit, transport)
    loaded_at = loaded_at or datetime.now(UTC)

    def out(entity: str, rows: Iterable[dict]) -> Iterator[Any]:
        """Rows in pages: conformed Arrow tables (the raw contract, ``_source='stripe_api'``), or
        plain dicts with exactly the schema columns when ``conform=False``."""
        for chunk in _chunks(rows, page_limit):
            if conform:
                yield from conformed_tables(entity, chunk, source=SOURCE_NAME, loaded_at=loaded_at)
            else:
                yield from chunk
    start = m.ts(created_gte if created_gte is not None else initial_created)
    end = m.ts(created_lt)

    def cursor() -> dlt.sources.incremental[datetime]:
        # typed cursor on the row's own created_at (Stripe's ``created``), explicit initial value
        return dlt.sources.incremental[datetime]("created_at", initial_value=start, end_value=end)

    def _remember(state_key: str, oid: str, keep: bool) -> None:
        ids = dlt.current.source_state().setdefault(state_key, [])
        if keep and oid not in ids:
            ids.append(oid)
        elif not keep and oid in ids:
            ids.remove(oid)

    @dlt.resource(name="customers", primary_key="customer_id", write_disposition="merge",
                  columns=dlt_columns("customers"))
    def customers(created=cursor()) -> Iterator[dict]:
        yield from out("customers", (m.customer_row(cus) for cus in client.list("/v1/customers", _range(created))))

    @dlt.resource(name="subscriptions", primary_key="subscription_id", write_disposition="merge",
                  columns=dlt_columns("subscriptions"))
    def subscriptions(created=cursor()) -> Iterator[dict]:
        def rows():
            for sub in client.list("/v1/subscriptions", {**_range(created), "status": "all"}):
                if sub.get("status") in ("past_due", "unpaid"):  # only the re-scan forgets ids
                    _remember("dunning_subscription_ids", sub["id"], True)
                yield _sub_row(sub)

        yield from out("subscriptions", rows())

    @dlt.resource(name="invoices", primary_key="invoice_id", write_disposition="merge",
                  columns=dlt_columns("invoices"))
    def invoices(created=cursor()) -> Iterator[dict]:
        def rows():
            for inv in client.list("/v1/invoices", _range(created)):
                if inv.get("status") in ("open", "draft"):  # only the re-scan forgets ids
                    _remember("open_invoice_ids", inv["id"], True)
                yield _invoice_row(inv)

        yield from out("invoices", rows())

    @dlt.resource(name="transactions", primary_key="transaction_id", write_disposition="merge",
                  columns=dlt_columns("transactions"))
    def charges(created=cursor()) -> Iterator[dict]:
        # expand the invoice so each transaction also carries its subscription id
        found = sorted(client.list("/v1/charges", {**_range(created), "expand[]": "data.invoice"}),
                       key=lambda c: (m._int(c.get("created")), c["id"]))
        # invoice id -> {"ids": failed charge ids in order, "last": created of the latest}: bounded by
        # recent failures, not by history; a charge's attempt number = its place in that list
        state = dlt.current.resource_state().setdefault("failed_charges_by_invoice", {})
        rows = []
        for ch in found:
            iid = m.charge_invoice_id(ch)
            if not iid or ch.get("status") not in ("failed", "succeeded"):
                continue  # not an invoice payment (one-off charge) or no outcome yet
            entry = state.setdefault(iid, {"ids": [], "last": 0})
            seen = entry["ids"]
            number = seen.index(ch["id"]) + 1 if ch["id"] in seen else len(seen) + 1
            inv = ch.get("invoice") if isinstance(ch.get("invoice"), dict) else {}
            row = m.charge_transaction_row(
                ch, invoice_id=iid, attempt_number=number, updated=charge_updated_ts(ch),
                customer_id=m.ref_id(inv.get("customer")),
                subscription_id=m.invoice_subscription_id(inv) if inv else None)
            rows.append(row)
            refund = m.refund_transaction_row(ch, row, charge_updated_ts(ch))
            if refund:
                rows.append(refund)
            if ch.get("status") == "failed" and ch["id"] not in seen:
                seen.append(ch["id"])
            entry["last"] = max(entry["last"], m._int(ch.get("created")))
        yield from out("transactions", rows)
        if found:
            horizon = m._int(found[-1].get("created")) - ATTEMPT_STATE_DAYS * 86400
            for iid in [i for i, e in state.items() if e["last"] < horizon or not e["ids"]]:
                state.pop(iid)

    @dlt.resource(name="open_invoices", table_name="invoices", primary_key="invoice_id",
                  columns=dlt_columns("invoices"),
                  write_disposition="merge")
    def open_invoices() -> Iterator[dict]:
        held = set(dlt.current.source_state().get("open_invoice_ids", []))
        still_open: set[str] = set()

        def rows():
            for inv in client.list("/v1/invoices", {"status": "open", "expand[]": "data.subscription"}):
                still_open.add(inv["id"])
                yield _invoice_row(inv)
            for iid in sorted(held - still_open):
                inv = client.get(f"/v1/invoices/{iid}", {"expand[]": "subscription"})
                _remember("open_invoice_ids", iid, inv.get("status") in ("open", "draft"))
                yield _invoice_row(inv)
            for iid in still_open:
                _remember("open_invoice_ids", iid, True)

        yield from out("invoices", rows())

    @dlt.resource(name="dunning_subscriptions", table_name="subscriptions", primary_key="subscription_id",
                  columns=dlt_columns("subscriptions"),
                  write_disposition="merge")
    def dunning_subscriptions() -> Iterator[dict]:
        held = set(dlt.current.source_state().get("dunning_subscription_ids", []))
        in_dunning: set[str] = set()

        def rows():
            for status in ("past_due", "unpaid"):
                for sub in client.list("/v1/subscriptions", {"status": status}):
                    in_dunning.add(sub["id"])
                    yield _sub_row(sub)
            for sid in sorted(held - in_dunning):
                sub = client.get(f"/v1/subscriptions/{sid}")
                _remember("dunning_subscription_ids", sid, sub.get("status") in ("past_due", "unpaid"))
                yield _sub_row(sub)
            for sid in in_dunning:
                _remember("dunning_subscription_ids", sid, True)

        yield from out("subscriptions", rows())

    resources = [customers, subscriptions, invoices, charges]
    if rescan and created_gte is None and created_lt is None:
        resources += [open_invoices, dunning_subscriptions]
    return resources


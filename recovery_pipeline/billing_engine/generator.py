"""Deterministic, vectorised generator of a realistic subscription billing history.

Model (all draws are counter-based hashes of ``(seed, stream, record key)``, so the result does not
depend on the chunk size or on the order of work):

* each month has ``invoices_per_month`` billing *slots*; ~85% of slots hold monthly subscriptions
  (one invoice a month on the subscription's anchor day), ~15% hold annual ones (twelve cohorts
  per slot, one invoice a year each), so every month has exactly ``invoices_per_month`` invoices;
* a subscription churns voluntarily (monthly 3%/month, annual 20% at renewal) or after an
  unrecovered invoice; a new subscription (new customer) then takes the slot;
* customers have a country -> currency (USD, CAD, EUR, GBP, AUD, JPY (zero-decimal), BRL, MXN,
  INR) and business entity; plans are monthly or annual, priced per currency in minor units;
* every charge attempt is a transaction row: the first ~1h after the invoice, retries every
  2-5 days (up to 4 attempts), with the gateway's decline-code classes (soft declines recover
  with a probability, customer-action declines only after a payment-method update, hard never);
* outcomes: first-attempt success, paid after failure, unrecovered (``uncollectible`` with
  ``dunning_complete_at``), refunded (the succeeded charge stays, a ``refunded`` transaction is
  added, invoice status ``refunded``), voided (with or without a failed attempt) and still open
  (attempts or dunning not finished at ``end``).

Currency codes are UPPERCASE ISO-4217 everywhere. Timestamps are UTC, inside the generated
window, ``updated_at >= created_at``. Volume is written per month and in chunks within a month
(Parquet row groups, bulk database inserts): memory is bounded by the chunk size plus small
per-slot state.

``bad_row_fraction`` injects extra rows, one kind per quarantine reason (see ``BAD_ROW_REASONS``);
the summary's ``bad_rows`` manifest lists their ids by reason.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recovery_pipeline.billing_engine import gateway as gw
from recovery_pipeline.billing_engine.exports import TS_TYPE, ExportWriter, arrow_schema

BAD_ROW_REASONS = (
    "missing_currency",
    "unknown_currency",
    "negative_amount",
    "unknown_state",
    "orphan_invoice",
    "orphan_transaction",
    "future_timestamp",
    "card_number_like",
)

# country, currency, weight, business entity, first-attempt failure rate
COUNTRIES = [
    ("US", "USD", 0.38, "acme_inc_us", 0.15),
    ("CA", "CAD", 0.06, "acme_inc_us", 0.14),
    ("GB", "GBP", 0.10, "acme_ltd_uk", 0.14),
    ("DE", "EUR", 0.08, "acme_bv_eu", 0.11),
    ("FR", "EUR", 0.06, "acme_bv_eu", 0.14),
    ("ES", "EUR", 0.03, "acme_bv_eu", 0.16),
    ("NL", "EUR", 0.03, "acme_bv_eu", 0.11),
    ("IT", "EUR", 0.02, "acme_bv_eu", 0.16),
    ("AU", "AUD", 0.05, "acme_pty_au", 0.14),
    ("JP", "JPY", 0.05, "acme_kk_jp", 0.09),
    ("BR", "BRL", 0.07, "acme_ltda_br", 0.30),
    ("MX", "MXN", 0.04, "acme_inc_us", 0.25),
    ("IN", "INR", 0.03, "acme_inc_us", 0.28),
]
# currency -> (units per USD, zero-decimal)
FX = {"USD": (1.0, False), "CAD": (1.35, False), "EUR": (0.92, False), "GBP": (0.79, False),
      "AUD": (1.5, False), "JPY": (150.0, True), "BRL": (5.0, False), "MXN": (17.0, False),
      "INR": (83.0, False)}
ZERO_DECIMAL_CURRENCIES = frozenset(c for c, (_fx, z) in FX.items() if z)
# plan id, billing period unit, price in USD
PLANS = [
    ("starter-monthly", "month", 9), ("pro-monthly", "month", 29), ("team-monthly", "month", 99),
    ("starter-annual", "year", 90), ("pro-annual", "year", 290), ("team-annual", "year", 990),
]
MONTHLY_PLAN_WEIGHTS = (0.5, 0.35, 0.15)
ANNUAL_SLOT_SHARE = 0.15
MAX_ATTEMPTS = 4

SECOND = 1_000_000  # timestamps are int64 microseconds since the epoch
HOUR = 3600 * SECOND
DAY = 24 * HOUR
ENTITY_ORDER = ("customers", "subscriptions", "invoices", "transactions")


# --- counter-based randomness -------------------------------------------------------------------

_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a bijection on uint64 (distinct keys -> distinct outputs)."""
    x = np.asarray(x, dtype=np.uint64).copy()
    x ^= x >> np.uint64(30)
    x *= _M1
    x ^= x >> np.uint64(27)
    x *= _M2
    x ^= x >> np.uint64(31)
    return x


def _tag(*parts: object) -> np.uint64:
    return np.uint64(int.from_bytes(
        hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest(), "big"))


class _Rand:
    def __init__(self, seed: int):
        self.seed = seed
        self._tags: dict[str, np.uint64] = {}

    def tag(self, stream: str) -> np.uint64:
        t = self._tags.get(stream)
        if t is None:
            t = self._tags[stream] = _tag(self.seed, stream)
        return t

    def bits(self, stream: str, keys: np.ndarray) -> np.ndarray:
        return mix64(mix64(np.asarray(keys, dtype=np.uint64) ^ self.tag(stream)))

    def uniform(self, stream: str, keys: np.ndarray) -> np.ndarray:
        return (self.bits(stream, keys) >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))

    def choice(self, stream: str, keys: np.ndarray, weights) -> np.ndarray:
        cw = np.cumsum(np.asarray(weights, dtype=np.float64))
        cw /= cw[-1]
        return np.minimum(np.searchsorted(cw, self.uniform(stream, keys), side="right"),
                          len(cw) - 1)

    def ids(self, prefix: str, stream: str, keys: np.ndarray) -> pa.Array:
        """Stripe-like ids ``<prefix>_<16 hex>``; distinct keys give distinct ids (bijective)."""
        return hex_ids(prefix, mix64(np.asarray(keys, dtype=np.uint64) ^ self.tag(stream)))


_HEX2 = np.frombuffer("".join(f"{i:02x}" for i in range(256)).encode(), dtype=np.uint8).reshape(256, 2)


def hex_ids(prefix: str, values: np.ndarray) -> pa.Array:
    """``<prefix>_<16 hex digits of values>`` built as one fixed-width byte matrix (no Python loop)."""
    head = (prefix + "_").encode()
    b = np.asarray(values, dtype=">u8").view(np.uint8).reshape(-1, 8)
    n, width = len(b), len(head) + 16
    out = np.empty((n, width), dtype=np.uint8)
    out[:, :len(head)] = np.frombuffer(head, dtype=np.uint8)
    out[:, len(head):] = _HEX2[b].reshape(n, 16)
    fixed = pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), n, [None, pa.py_buffer(out)])
    return fixed.cast(pa.binary()).cast(pa.string())


def _ts(us: np.ndarray, mask: np.ndarray | None = None) -> pa.Array:
    return pa.array(np.asarray(us, dtype=np.int64), type=pa.int64(), mask=mask).cast(TS_TYPE)


def _take(values: list, idx: np.ndarray, mask: np.ndarray | None = None) -> pa.Array:
    arr = pc.take(pa.array(values, pa.string()), pa.array(np.asarray(idx, dtype=np.int64)))
    if mask is not None:
        arr = pc.if_else(pa.array(np.asarray(mask, dtype=bool)), pa.nulls(len(arr), pa.string()), arr)
    return arr


def _digits(values: np.ndarray, mask: np.ndarray | None = None) -> pa.Array:
    return pa.array(np.asarray(values, dtype=np.int64), mask=mask).cast(pa.string())


# --- configuration and summary ------------------------------------------------------------------

def month_floor(d: date | datetime) -> date:
    return date(d.year, d.month, 1)


def default_end() -> date:
    """First day of the current month (UTC): every generated month is complete."""
    return month_floor(datetime.now(UTC))


@dataclass(frozen=True)
class GenerateConfig:
    seed: int = 7
    months: int = 12
    invoices_per_month: int = 2000
    end: date | None = None  # exclusive; floored to the first of its month; default: this month
    bad_row_fraction: float = 0.0
    chunk_size: int = 50_000

    def resolved_end(self) -> date:
        return month_floor(self.end) if self.end else default_end()

    def month_starts(self) -> list[date]:
        end = self.resolved_end()
        out = []
        y, m = end.year, end.month
        for _ in range(self.months):
            m -= 1
            if m == 0:
                y, m = y - 1, 12
            out.append(date(y, m, 1))
        return out[::-1]


@dataclass
class GenerationSummary:
    config: GenerateConfig
    months: list[str]
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # entity -> month -> rows
    invoice_statuses: dict[str, dict[str, int]] = field(default_factory=dict)  # month -> status -> n
    currencies: dict[str, int] = field(default_factory=dict)  # invoices by currency
    countries: dict[str, int] = field(default_factory=dict)  # customers by country
    bad_rows: dict[str, list[dict]] = field(default_factory=dict)  # reason -> [{entity, record_id, month}]
    export_files: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def total(self, entity: str) -> int:
        return sum(self.counts.get(entity, {}).values())

    def _add(self, entity: str, month: str, n: int) -> None:
        per = self.counts.setdefault(entity, {})
        per[month] = per.get(month, 0) + n

    def as_dict(self) -> dict:
        return {
            "seed": self.config.seed, "months": self.months,
            "totals": {e: self.total(e) for e in ENTITY_ORDER},
            "counts": self.counts, "invoice_statuses": self.invoice_statuses,
            "currencies": self.currencies, "countries": self.countries,
            "bad_rows": {r: len(v) for r, v in self.bad_rows.items()},
            "seconds": round(self.seconds, 2),
        }


Sink = Callable[[str, str, pa.Table], None]


# --- the generator --------------------------------------------------------------------------------

class _Months:
    def __init__(self, starts: list[date], end: date):
        bounds = [*starts, end]
        self.labels = [f"{d.year:04d}-{d.month:02d}" for d in starts]
        self.us = np.array([int(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp()) * SECOND
                            for d in bounds], dtype=np.int64)
        self.abs = [d.year * 12 + d.month - 1 for d in starts]

    def index_of(self, us: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.us, us, side="right") - 1


def _prices() -> np.ndarray:
    """price[plan, currency index] in minor units."""
    cur = list(FX)
    out = np.zeros((len(PLANS), len(cur)), dtype=np.int64)
    for i, (_p, _u, usd) in enumerate(PLANS):
        for j, c in enumerate(cur):
            fx, zero = FX[c]
            major = usd * fx
            out[i, j] = int(round(major / 10.0) * 10) if zero else int(np.ceil(major)) * 100 - 1
    return out


class HistoryGenerator:
    def __init__(self, config: GenerateConfig):
        if config.months < 1 or config.invoices_per_month < 1:
            raise ValueError("months and invoices_per_month must be >= 1")
        if config.invoices_per_month >= 1 << 31:
            raise ValueError("invoices_per_month must be < 2**31 (it is part of the record keys)")
        if config.chunk_size < 1:
            raise ValueError("chunk_size must be >= 1")
        if not 0.0 <= config.bad_row_fraction < 0.5:
            raise ValueError("bad_row_fraction must be in [0, 0.5)")
        self.cfg = config
        self.r = _Rand(config.seed)
        self.end = config.resolved_end()
        self.m = _Months(config.month_starts(), self.end)
        self.end_us = int(self.m.us[-1])
        n = config.invoices_per_month
        self.n = n
        slots = np.arange(n, dtype=np.uint64)
        self.slot_annual = self.r.uniform("annual-slot", slots) < ANNUAL_SLOT_SHARE
        rank = np.cumsum(self.slot_annual) - 1
        self.annual_base = np.where(self.slot_annual, n + rank * 12, -1).astype(np.int64)
        size = n + int(self.slot_annual.sum()) * 12
        # per-subscription-slot state (the subscription currently occupying it)
        self.s_key = np.zeros(size, dtype=np.uint64)
        self.s_plan = np.zeros(size, dtype=np.int8)
        self.s_country = np.zeros(size, dtype=np.int8)
        self.s_anchor = np.zeros(size, dtype=np.float64)
        self.s_created = np.zeros(size, dtype=np.int64)
        self.s_outcome = np.zeros(size, dtype=np.int8)  # 0 fine, 2 unrecovered, 3 open failing
        self.s_last_event = np.zeros(size, dtype=np.int64)
        self.s_dunning = np.zeros(size, dtype=np.int64)
        self.sub_records: list[dict[str, np.ndarray]] = []
        self.prices = _prices()
        self.cur_codes = list(FX)
        self.country_cur = np.array([self.cur_codes.index(c[1]) for c in COUNTRIES], dtype=np.int64)
        self.country_fail = np.array([c[4] for c in COUNTRIES])
        codes = list(gw.DECLINE_CODES)
        self.codes = codes
        self.code_weights = [gw.DECLINE_CODES[c][1] for c in codes]
        cls = [gw.DECLINE_CODES[c][0] for c in codes]
        self.code_soft = np.array([c == gw.SOFT for c in cls])
        self.code_cust = np.array([c == gw.CUSTOMER_ACTION for c in cls])
        self.code_p = np.array([gw.DECLINE_CODES[c][2] for c in codes])
        self.code_msgs = [gw.DECLINE_CODES[c][3] for c in codes]
        self.alt_codes = np.array([codes.index(c) for c in
                                   ("insufficient_funds", "do_not_honor", "generic_decline")])

    # -- public ---------------------------------------------------------------------------------

    def run(self, sinks: list[Sink], progress: Callable[[str, int, int], None] | None = None
            ) -> GenerationSummary:
        t0 = time.perf_counter()
        s = GenerationSummary(config=self.cfg, months=list(self.m.labels))
        pending: dict[int, list[pa.Table]] = {}  # month index -> transactions created that month
        total_chunks = sum(-(-self.n // self.cfg.chunk_size) for _ in self.m.labels)
        done = 0

        def emit(entity: str, month: str, table: pa.Table) -> None:
            if table.num_rows == 0:
                return
            for sink in sinks:
                sink(entity, month, table)
            s._add(entity, month, table.num_rows)

        for k, label in enumerate(self.m.labels):
            for carried in pending.pop(k, []):
                emit("transactions", label, carried)
            for lo in range(0, self.n, self.cfg.chunk_size):
                hi = min(self.n, lo + self.cfg.chunk_size)
                inv, txn = self._chunk(k, lo, hi)
                emit("invoices", label, inv)
                st = s.invoice_statuses.setdefault(label, {})
                for row in pc.value_counts(inv["status"]).to_pylist():
                    st[row["values"]] = st.get(row["values"], 0) + row["counts"]
                for row in pc.value_counts(inv["currency"]).to_pylist():
                    s.currencies[row["values"]] = s.currencies.get(row["values"], 0) + row["counts"]
                tm = self.m.index_of(txn["created_at"].cast(pa.int64()).to_numpy())
                for mk in np.unique(tm):
                    part = txn.filter(pa.array(tm == mk))
                    if mk == k:
                        emit("transactions", label, part)
                    else:
                        pending.setdefault(int(mk), []).append(part)
                done += 1
                if progress:
                    progress(label, done, total_chunks)
            if self.cfg.bad_row_fraction > 0:
                for entity, table in self._bad_rows(k, s).items():
                    emit(entity, label, table)
        subs, custs = self._subscriptions_and_customers()
        sub_month = self.m.index_of(subs["created_at"].cast(pa.int64()).to_numpy())
        for k, label in enumerate(self.m.labels):
            mask = pa.array(sub_month == k)
            emit("customers", label, custs.filter(mask))
            emit("subscriptions", label, subs.filter(mask))
        for row in pc.value_counts(custs["country"]).to_pylist():
            s.countries[row["values"]] = row["counts"]
        s.seconds = time.perf_counter() - t0
        return s

    # -- one chunk of one month -------------------------------------------------------------------

    def _chunk(self, k: int, lo: int, hi: int) -> tuple[pa.Table, pa.Table]:
        r = self.r
        ms, me = int(self.m.us[k]), int(self.m.us[k + 1])
        mabs = self.m.abs[k]
        slots = np.arange(lo, hi, dtype=np.int64)
        n = len(slots)
        annual = self.slot_annual[lo:hi]
        st = np.where(annual, self.annual_base[lo:hi] + (mabs % 12), slots)
        key_inv = (np.uint64(mabs) << np.uint64(32)) | slots.astype(np.uint64)

        # which subscription bills in this slot this month
        had = self.s_key[st] != 0
        churn_p = np.where(annual, 0.20, 0.03)
        churn_vol = had & (r.uniform("churn", key_inv) < churn_p)
        churn_unrec = had & (self.s_outcome[st] == 2)
        new = ~had | churn_vol | churn_unrec
        ended = had & new
        if ended.any():
            e = st[ended]
            vol_at = np.maximum(self.s_last_event[e] + HOUR,
                                ms - (r.uniform("cancel-at", key_inv[ended]) * 5 * DAY).astype(np.int64))
            unrec = churn_unrec[ended]
            self._flush(e, status=np.full(len(e), 2, np.int8),
                        canceled=np.where(unrec, self.s_dunning[e], vol_at),
                        dunning=np.where(unrec, self.s_dunning[e], 0))
        if new.any():
            ni = st[new]
            nk = key_inv[new]
            self.s_key[ni] = nk
            self.s_plan[ni] = np.where(annual[new], 3, 0) + r.choice("plan", nk, MONTHLY_PLAN_WEIGHTS)
            self.s_country[ni] = r.choice("country", nk, [c[2] for c in COUNTRIES])
            self.s_anchor[ni] = r.uniform("anchor", nk)
            self.s_outcome[ni] = 0
            self.s_dunning[ni] = 0
        sub_key = self.s_key[st]
        plan = self.s_plan[st].astype(np.int64)
        country = self.s_country[st].astype(np.int64)
        cur = self.country_cur[country]
        amount = self.prices[plan, cur]
        created = ms + (self.s_anchor[st] * (me - ms - HOUR)).astype(np.int64)
        if new.any():
            back = (r.uniform("sub-created", key_inv[new]) * 2 * HOUR).astype(np.int64)
            self.s_created[st[new]] = np.maximum(ms, created[new] - back)

        sim = self._simulate(key_inv, created, country, cur)

        # subscription state for next month / final flush
        self.s_outcome[st] = sim["state_outcome"]
        self.s_last_event[st] = sim["updated"]
        self.s_dunning[st] = sim["dunning"]

        ids_inv = r.ids("in", "invoice", key_inv)
        ids_cus = r.ids("cus", "customer", sub_key)
        ids_sub = r.ids("sub", "subscription", sub_key)
        ent_names = [c[3] for c in COUNTRIES]
        n_null = np.zeros(n, bool)
        inv = pa.table({
            "invoice_id": ids_inv,
            "customer_id": ids_cus,
            "subscription_id": ids_sub,
            "status": _take(["open", "paid", "uncollectible", "void", "refunded"], sim["status"]),
            "amount_minor": pa.array(amount, pa.int64()),
            "currency": _take(self.cur_codes, cur),
            "business_entity": _take(ent_names, country),
            "attempt_count": pa.array(sim["attempts"], pa.int32()),
            "due_at": _ts(created),
            "paid_at": _ts(sim["paid_at"], mask=sim["paid_at"] == 0),
            "collection_paused": pa.array(n_null),
            "dunning_complete_at": _ts(sim["dunning"], mask=sim["dunning"] == 0),
            "handed_off_at": pa.nulls(n, TS_TYPE),
            "payment_method_update_requested_at": pa.nulls(n, TS_TYPE),
            "created_at": _ts(created),
            "updated_at": _ts(sim["updated"]),
        }, schema=arrow_schema("invoices"))
        txn = self._transactions(sim, key_inv, sub_key, ids_inv, ids_cus, ids_sub, amount, cur,
                                 country)
        return inv, txn

    def _simulate(self, key, created, country, cur) -> dict[str, np.ndarray]:
        r, end = self.r, self.end_us
        n = len(key)
        fails = r.uniform("fail", key) < self.country_fail[country]
        code0 = r.choice("code", key, self.code_weights)
        soft, cust = self.code_soft[code0], self.code_cust[code0]
        void0 = r.uniform("void0", key) < 0.006
        void1 = fails & ~void0 & (r.uniform("void1", key) < 0.06)
        T = np.zeros((n, MAX_ATTEMPTS), dtype=np.int64)
        T[:, 0] = created + (60 * SECOND + r.uniform("t1", key) * 3540 * SECOND).astype(np.int64)
        for a in range(1, MAX_ATTEMPTS):
            T[:, a] = T[:, a - 1] + (2 * DAY + r.uniform(f"delay{a}", key) * 3 * DAY).astype(np.int64)
        # customer updates the payment method before attempt `upd` (customer-action codes only)
        upd = np.full(n, MAX_ATTEMPTS + 1)
        for a in range(MAX_ATTEMPTS, 1, -1):
            upd = np.where(r.uniform(f"upd{a}", key) < 0.3, a, upd)
        succ_at = np.zeros(n, dtype=np.int64)
        for a in range(MAX_ATTEMPTS, 1, -1):
            u = r.uniform(f"succ{a}", key)
            ok = (soft & (u < self.code_p[code0])) | (cust & (a >= upd) & (u < gw.UPDATED_METHOD_SUCCESS))
            succ_at = np.where(ok, a, succ_at)
        succ_at = np.where(fails, succ_at, 1)
        planned = np.where(void0, 0, np.where(void1, 1, np.where(succ_at > 0, succ_at, MAX_ATTEMPTS)))
        happened = (np.arange(1, MAX_ATTEMPTS + 1)[None, :] <= planned[:, None]) & (T < end)
        h = happened.sum(axis=1)
        rows = np.arange(n)
        last_t = np.where(h > 0, T[rows, np.maximum(h - 1, 0)], created)

        status = np.zeros(n, dtype=np.int8)  # 0 open 1 paid 2 uncollectible 3 void 4 refunded
        paid_at = np.zeros(n, dtype=np.int64)
        dunning = np.zeros(n, dtype=np.int64)
        refund_at = np.zeros(n, dtype=np.int64)
        updated = last_t.copy()

        v0_t = np.minimum(created + (HOUR + r.uniform("void0-t", key) * 47 * HOUR).astype(np.int64),
                          end - 1)
        v0_t = np.maximum(v0_t, created)
        status = np.where(void0, 3, status)
        updated = np.where(void0, v0_t, updated)

        paid = (succ_at > 0) & (h >= succ_at) & ~void0
        paid_at = np.where(paid, T[rows, np.maximum(succ_at - 1, 0)], 0)
        status = np.where(paid, 1, status)
        updated = np.where(paid, paid_at, updated)
        r_t = paid_at + (DAY + r.uniform("refund-t", key) * 19 * DAY).astype(np.int64)
        refunded = paid & (succ_at == 1) & (r.uniform("refund", key) < 0.015) & (r_t < end)
        refund_at = np.where(refunded, r_t, 0)
        status = np.where(refunded, 4, status)
        updated = np.where(refunded, r_t, updated)

        v1_t = T[:, 0] + (DAY + r.uniform("void1-t", key) * 2 * DAY).astype(np.int64)
        v1 = void1 & (h == 1) & (v1_t < end)
        status = np.where(v1, 3, status)
        updated = np.where(v1, v1_t, updated)

        d_t = T[:, -1] + (2 * DAY + r.uniform("dunning-t", key) * DAY).astype(np.int64)
        unrec = ~void0 & ~void1 & (succ_at == 0) & (h == MAX_ATTEMPTS) & (d_t < end)
        dunning = np.where(unrec, d_t, 0)
        status = np.where(unrec, 2, status)
        updated = np.where(unrec, d_t, updated)

        open_failing = (status == 0) & (h > 0)
        state_outcome = np.where(unrec, 2, np.where(open_failing, 3, 0)).astype(np.int8)
        return {"status": status, "attempts": h, "paid_at": paid_at, "dunning": dunning,
                "refund_at": refund_at, "updated": updated, "T": T, "happened": happened,
                "succ_at": succ_at, "code0": code0, "soft": soft, "upd": upd,
                "state_outcome": state_outcome, "last_failed": last_t}

    def _card_fields(self, sub_key: np.ndarray, country: np.ndarray, cur: np.ndarray) -> dict:
        r = self.r
        sepa = (cur == self.cur_codes.index("EUR")) & (r.uniform("sepa", sub_key) < 0.15)
        brand = r.choice("brand", sub_key, (0.55, 0.32, 0.10, 0.03))
        u = r.uniform("bin", sub_key)
        bin_ = np.select(
            [brand == 0, brand == 1, brand == 2],
            [400000 + (u * 99999).astype(np.int64), 510000 + (u * 49999).astype(np.int64),
             np.where(u < 0.5, 340000, 370000) + (u * 9999).astype(np.int64)],
            601100 + (u * 99).astype(np.int64))
        foreign = r.uniform("card-country", sub_key) < 0.05
        card_country = np.where(foreign, 0, country)  # 0 = US
        gateway = r.choice("gateway", sub_key, (0.7, 0.2, 0.1))
        return {"sepa": sepa, "brand": brand, "bin": bin_, "card_country": card_country,
                "gateway": gateway}

    def _transactions(self, sim, key_inv, sub_key, ids_inv, ids_cus, ids_sub, amount, cur,
                      country) -> pa.Table:
        r = self.r
        hap = sim["happened"]
        inv_idx, att = np.nonzero(hap)  # row-major: per invoice, attempts in order
        attempt = att + 1
        ref_idx = np.nonzero(sim["refund_at"] > 0)[0]
        t_inv = np.concatenate([inv_idx, ref_idx])
        order = np.argsort(t_inv, kind="stable")
        t_inv = t_inv[order]
        attempt = np.concatenate([attempt, np.ones(len(ref_idx), np.int64)])[order]
        is_ref = np.concatenate([np.zeros(len(inv_idx), bool), np.ones(len(ref_idx), bool)])[order]
        m = len(t_inv)
        tkey = key_inv[t_inv] * np.uint64(8) + np.where(is_ref, 7, attempt).astype(np.uint64)
        created = np.where(is_ref, sim["refund_at"][t_inv],
                           sim["T"][t_inv, np.minimum(attempt, MAX_ATTEMPTS) - 1])
        succeeded = ~is_ref & (attempt == sim["succ_at"][t_inv])
        code0 = sim["code0"][t_inv]
        drift = sim["soft"][t_inv] & (attempt > 1) & (r.uniform("drift", tkey) < 0.2)
        alt = self.alt_codes[r.choice("alt", tkey, (1, 1, 1))]
        code = np.where(drift, alt, code0)
        failed = ~succeeded & ~is_ref
        status = np.where(is_ref, 2, np.where(succeeded, 0, 1))
        cf = self._card_fields(sub_key[t_inv], country[t_inv], cur[t_inv])
        card = ~cf["sepa"]
        new_pm = self.code_cust[code0] & (attempt >= sim["upd"][t_inv]) & ~is_ref
        pm = pc.if_else(pa.array(new_pm), r.ids("pm", "pm-new", key_inv[t_inv]),
                        r.ids("pm", "pm", sub_key[t_inv]))
        fp = pc.if_else(pa.array(new_pm), r.ids("fp", "fp-new", key_inv[t_inv]),
                        r.ids("fp", "fp", sub_key[t_inv]))
        gw_id = pc.if_else(pa.array(is_ref), r.ids("re", "re", tkey), r.ids("ch", "ch", tkey))
        no_card = ~card
        country_codes = [c[0] for c in COUNTRIES]
        return pa.table({
            "transaction_id": r.ids("txn", "transaction", tkey),
            "invoice_id": pc.take(ids_inv, pa.array(t_inv)),
            "customer_id": pc.take(ids_cus, pa.array(t_inv)),
            "subscription_id": pc.take(ids_sub, pa.array(t_inv)),
            "status": _take(["succeeded", "failed", "refunded"], status),
            "amount_minor": pa.array(amount[t_inv], pa.int64()),
            "currency": _take(self.cur_codes, cur[t_inv]),
            "attempt_number": pa.array(attempt, pa.int32()),
            "gateway": _take(["stripe", "adyen", "braintree"], cf["gateway"]),
            "gateway_transaction_id": gw_id,
            "gateway_status": _take(["succeeded", "declined", "refunded"], status),
            "decline_code": _take(self.codes, code, mask=~failed),
            "decline_message": _take(self.code_msgs, code, mask=~failed),
            "payment_method_type": _take(["card", "sepa_debit"], cf["sepa"].astype(np.int64)),
            "payment_method_token": pm,
            "card_brand": _take(["visa", "mastercard", "amex", "discover"], cf["brand"], mask=no_card),
            "card_bin": _digits(cf["bin"], mask=no_card),
            "card_fingerprint": pc.if_else(pa.array(no_card), pa.nulls(m, pa.string()), fp),
            "card_country": _take(country_codes, cf["card_country"], mask=no_card),
            "created_at": _ts(created),
            "updated_at": _ts(created),
        }, schema=arrow_schema("transactions"))

    # -- subscriptions & customers ------------------------------------------------------------------

    def _flush(self, st: np.ndarray, *, status, canceled, dunning) -> None:
        updated = np.maximum(self.s_created[st], np.where(
            status == 2, canceled, np.where(status == 1, self.s_last_event[st], self.s_created[st])))
        self.sub_records.append({
            "key": self.s_key[st].copy(), "plan": self.s_plan[st].astype(np.int64),
            "country": self.s_country[st].astype(np.int64), "created": self.s_created[st].copy(),
            "status": status, "canceled": canceled, "dunning": dunning, "updated": updated,
        })

    def _subscriptions_and_customers(self) -> tuple[pa.Table, pa.Table]:
        live = np.nonzero(self.s_key != 0)[0]
        out = self.s_outcome[live]
        status = np.where(out == 2, 2, np.where(out == 3, 1, 0)).astype(np.int8)
        self._flush(live, status=status,
                    canceled=np.where(out == 2, self.s_dunning[live], 0),
                    dunning=np.where(out == 2, self.s_dunning[live], 0))
        rec = {k: np.concatenate([r[k] for r in self.sub_records]) for k in self.sub_records[0]}
        self.sub_records = []
        order = np.lexsort((rec["key"], rec["created"]))
        rec = {k: v[order] for k, v in rec.items()}
        r = self.r
        key = rec["key"]
        n = len(key)
        cur = self.country_cur[rec["country"]]
        is_annual = rec["plan"] >= 3
        cus_ids = r.ids("cus", "customer", key)
        cus_created = rec["created"] - (r.uniform("cus-created", key) * 600 * SECOND).astype(np.int64)
        month_start = self.m.us[np.clip(self.m.index_of(rec["created"]), 0, len(self.m.labels) - 1)]
        cus_created = np.maximum(cus_created, month_start)
        subs = pa.table({
            "subscription_id": r.ids("sub", "subscription", key),
            "customer_id": cus_ids,
            "plan_id": _take([p[0] for p in PLANS], rec["plan"]),
            "status": _take(["active", "past_due", "canceled"], rec["status"]),
            "amount_minor": pa.array(self.prices[rec["plan"], cur], pa.int64()),
            "currency": _take(self.cur_codes, cur),
            "billing_period": pa.array(np.ones(n, np.int32), pa.int32()),
            "billing_period_unit": _take(["month", "year"], is_annual.astype(np.int64)),
            "business_entity": _take([c[3] for c in COUNTRIES], rec["country"]),
            "activated_at": _ts(rec["created"]),
            "canceled_at": _ts(rec["canceled"], mask=rec["canceled"] == 0),
            "expires_at": pa.nulls(n, TS_TYPE),
            "dunning_complete_at": _ts(rec["dunning"], mask=rec["dunning"] == 0),
            "created_at": _ts(rec["created"]),
            "updated_at": _ts(rec["updated"]),
        }, schema=arrow_schema("subscriptions"))
        emails = pc.binary_join_element_wise(cus_ids, "@example.com", "")
        custs = pa.table({
            "customer_id": cus_ids,
            "email": emails,
            "country": _take([c[0] for c in COUNTRIES], rec["country"]),
            "created_at": _ts(cus_created),
            "updated_at": _ts(cus_created),
        }, schema=arrow_schema("customers"))
        return subs, custs

    # -- bad rows -----------------------------------------------------------------------------------

    def _bad_rows(self, k: int, s: GenerationSummary) -> dict[str, pa.Table]:
        """Extra rows for month ``k``, one kind per quarantine reason (spread over the months)."""
        total_inv = self.n * len(self.m.labels)
        per_reason = min(1 << 24, max(1, round(self.cfg.bad_row_fraction * total_inv / len(BAD_ROW_REASONS))))
        label = self.m.labels[k]
        mabs = self.m.abs[k]
        ms, me = int(self.m.us[k]), int(self.m.us[k + 1])
        r = self.r
        # a real invoice of this month to borrow ids from: slot 0's current subscription
        host_key = np.array([(mabs << 32) | 0], dtype=np.uint64)
        host_sub = self.s_key[np.array([0 if not self.slot_annual[0] else self.annual_base[0] + mabs % 12])]
        host_inv = r.ids("in", "invoice", host_key)[0].as_py()
        host_cus = r.ids("cus", "customer", host_sub)[0].as_py()
        host_subid = r.ids("sub", "subscription", host_sub)[0].as_py()
        inv_rows, txn_rows = [], []
        future_base = datetime(max(self.end.year, datetime.now(UTC).year) + 5, 1, 1, tzinfo=UTC)
        for ri, reason in enumerate(BAD_ROW_REASONS):
            for j in range(per_reason):
                if j % len(self.m.labels) != k:
                    continue
                bkey = np.array([(mabs << 32) | 0x80000000 | (ri << 24) | j], dtype=np.uint64)
                u = float(r.uniform("bad-t", bkey)[0])
                created = ms + int(u * (me - ms - DAY))
                ts = datetime.fromtimestamp(created / SECOND, UTC)
                if reason in ("orphan_transaction", "card_number_like"):
                    tid = r.ids("txn", "transaction", bkey)[0].as_py()
                    txn_rows.append(self._bad_txn(
                        reason, tid, bkey, ts, host_inv, host_cus, host_subid))
                    s.bad_rows.setdefault(reason, []).append(
                        {"entity": "transactions", "record_id": tid, "month": label})
                else:
                    iid = r.ids("in", "invoice", bkey)[0].as_py()
                    row = {
                        "invoice_id": iid, "customer_id": host_cus, "subscription_id": host_subid,
                        "status": "open", "amount_minor": 2900, "currency": "USD",
                        "business_entity": "acme_inc_us", "attempt_count": 0, "due_at": ts,
                        "paid_at": None, "collection_paused": False, "dunning_complete_at": None,
                        "handed_off_at": None, "payment_method_update_requested_at": None,
                        "created_at": ts, "updated_at": ts,
                    }
                    if reason == "missing_currency":
                        row["currency"] = None
                    elif reason == "unknown_currency":
                        row["currency"] = "XXQ"
                    elif reason == "negative_amount":
                        row["amount_minor"] = -2900
                    elif reason == "unknown_state":
                        row["status"] = "weird"
                    elif reason == "orphan_invoice":
                        ghost = int(r.bits("ghost", bkey)[0])
                        row["customer_id"] = f"cus_{ghost:016x}"
                        row["subscription_id"] = f"sub_{ghost:016x}"
                    elif reason == "future_timestamp":
                        fut = future_base.replace(day=1 + int(u * 27))
                        row.update(created_at=fut, updated_at=fut, due_at=fut)
                    inv_rows.append(row)
                    s.bad_rows.setdefault(reason, []).append(
                        {"entity": "invoices", "record_id": iid, "month": label})
        out = {}
        if inv_rows:
            out["invoices"] = pa.Table.from_pylist(inv_rows, schema=arrow_schema("invoices"))
        if txn_rows:
            out["transactions"] = pa.Table.from_pylist(txn_rows, schema=arrow_schema("transactions"))
        return out

    def _bad_txn(self, reason, tid, bkey, ts, host_inv, host_cus, host_sub) -> dict:
        r = self.r
        row = {
            "transaction_id": tid, "invoice_id": host_inv, "customer_id": host_cus,
            "subscription_id": host_sub, "status": "failed", "amount_minor": 2900,
            "currency": "USD", "attempt_number": 1, "gateway": "stripe",
            "gateway_transaction_id": r.ids("ch", "bad-ch", bkey)[0].as_py(),
            "gateway_status": "declined", "decline_code": "generic_decline",
            "decline_message": gw.decline_message("generic_decline"),
            "payment_method_type": "card", "payment_method_token": r.ids("pm", "bad-pm", bkey)[0].as_py(),
            "card_brand": "visa", "card_bin": "424242", "card_fingerprint": None, "card_country": "US",
            "created_at": ts, "updated_at": ts,
        }
        if reason == "orphan_transaction":
            ghost = int(r.bits("ghost", bkey)[0])
            row["invoice_id"] = f"in_{ghost:016x}"
        else:  # a card number pasted where a token belongs (synthetic, Luhn-valid)
            row["payment_method_token"] = luhn_complete("4" + f"{int(r.bits('pan', bkey)[0]) % 10**14:014d}")
        return row


def luhn_complete(partial: str) -> str:
    """Append the Luhn check digit to a digit string (used only to fabricate a bad row)."""
    total = 0
    for i, ch in enumerate(reversed(partial)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return partial + str((10 - total % 10) % 10)


def luhn_valid(number: str) -> bool:
    if not number.isdigit() or len(number) < 12:
        return False
    return luhn_complete(number[:-1]) == number


# --- convenience entry point ----------------------------------------------------------------------

def generate(
    config: GenerateConfig,
    *,
    db_url: str | None = None,
    exports_dir: Path | str | None = None,
    formats: tuple[str, ...] | list[str] = ("parquet",),
    progress: Callable[[str, int, int], None] | None = None,
    reset_db: bool = True,
) -> GenerationSummary:
    """Generate the history into the billing database (``db_url``) and/or export files."""
    from recovery_pipeline.billing_engine import db as bdb

    sinks: list[Sink] = []
    writer = None
    engine = None
    if exports_dir is not None:
        writer = ExportWriter(Path(exports_dir), formats)
        last_month: dict[str, str] = {}

        def export_sink(entity: str, month: str, table: pa.Table) -> None:
            prev = last_month.get(entity)
            if prev is not None and prev != month:
                writer.close_month(entity, prev)
            last_month[entity] = month
            writer.write(entity, month, table)

        sinks.append(export_sink)
    if db_url is not None:
        engine = bdb.create_billing_engine(db_url)
        bdb.init_billing_db(engine, reset=reset_db)
        if reset_db:  # loading into empty tables: build the indexes once at the end
            bdb.drop_entity_indexes(engine)

        def db_sink(entity: str, month: str, table: pa.Table) -> None:
            bdb.bulk_insert(engine, entity, table)

        sinks.append(db_sink)
    try:
        summary = HistoryGenerator(config).run(sinks, progress=progress)
    finally:
        if writer is not None:
            writer.close()
        if engine is not None and reset_db:
            bdb.create_entity_indexes(engine)
    if writer is not None:
        summary.export_files = [str(p) for p in writer.files]
    if engine is not None:
        bdb.set_meta(engine, "gateway_seed", str(config.seed))
        bdb.set_meta(engine, "generated_end", config.resolved_end().isoformat())
        engine.dispose()
    return summary

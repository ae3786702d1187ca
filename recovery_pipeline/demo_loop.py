"""The whole recovery loop, in-process on loopback, for ``make demo`` (and its end-to-end test).

After the demo's generate + backfill (``commands/demo.py``), ``run_loop``:

1. starts three loopback services in threads, on free ports chosen once here: the provider
   sandbox (delivering signed webhooks to the receiver, a small ``time_scale`` so retry schedules
   are quick, a fraction of duplicate deliveries so the dedupe shows), the demo billing engine's
   HTTP API over the same billing database, and the webhook receiver over the ops store. The
   process environment points the pipeline at them (``PROVIDER_BASE_URL``, ``BILLING_ENGINE_URL``,
   ``RECEIVER_URL``) and sets ``RECOVERY_EXECUTION_MODE=live`` for the loop (integration.yaml's
   rollout stays as it is); both are restored afterwards;
2. runs the code location's jobs on the Dagster instance under ``settings.dagster_home`` (so
   ``make ui`` shows every run): ``provider_push`` (history), ``failure_handoff``, waits for the
   sandbox's webhooks to land in the inbox, ``poll_recovery_actions`` once (hybrid),
   ``execute_recovery_actions`` (live: retries through the billing engine's HTTP API write new
   transaction rows), then the incremental sync: the billing system's changes since the backfill
   reach the source (export kind: an incremental export file per changed month, the way a
   billing system drops deltas; SQL kind: read in place), ``billing_changes_sensor`` is evaluated
   for the changed months, ``billing_sync_job`` runs over them (raw + canonical), and a second
   ``provider_push`` sends just the changes;
3. runs ``daily_reconciliation`` (provider counts, parity, state mismatches) on the warehouse
   (DuckDB or PostgreSQL: the reconciliation SQL is transpiled);
4. prints a readable summary and returns a ``LoopReport`` with the numbers.

Pure orchestration: the Dagster definitions are the code location's own, with resources built
by ``resources.build_resources`` for the loop's endpoints (only the push rate is raised to what
the sandbox is configured to allow).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
ENTITIES = ("customers", "subscriptions", "invoices", "transactions")
PUSHED = ("subscriptions", "invoices", "transactions")


@dataclass
class LoopOptions:
    provider: str = "slicker"
    requests_per_second: float = 100.0  # the sandbox's limit; the push stays under it
    batch_limit: int = 100
    time_scale: float = 0.001  # webhook retry schedules x this
    webhook_duplicate_fraction: float = 0.1  # the sandbox re-delivers some events: dedupe shows
    webhook_wait_seconds: float = 60.0
    max_execution_runs: int = 5  # per round (the executor acts on up to 500 events per run)
    max_rounds: int = 3  # decide -> execute -> sync -> push, until nothing new is executed
    reconcile: bool = True


@dataclass
class LoopReport:
    endpoints: dict[str, str] = field(default_factory=dict)
    execution_mode: str = ""
    pushes: list[dict[str, dict]] = field(default_factory=list)  # per push: entity -> metadata
    handoff: dict = field(default_factory=dict)
    webhooks: dict = field(default_factory=dict)
    polled: dict = field(default_factory=dict)
    executions: list[dict] = field(default_factory=list)
    audit: dict = field(default_factory=dict)
    changes: dict = field(default_factory=dict)  # entity -> rows changed in the billing system
    sync_months: list[str] = field(default_factory=list)
    sync_run_keys: list[str] = field(default_factory=list)
    retried_invoices: list[str] = field(default_factory=list)
    new_transactions: list[str] = field(default_factory=list)  # billing rows written by live actions
    new_transactions_in_canonical: list[str] = field(default_factory=list)
    recovered: list[dict] = field(default_factory=list)  # per currency
    provider_counts: dict = field(default_factory=dict)  # month -> {invoices, transactions, failed}
    billing_counts: dict = field(default_factory=dict)
    parity: list[dict] | None = None
    coverage: list[dict] | None = None
    mismatches: list[dict] | None = None
    reconciliation_note: str = ""
    run_ids: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def changes_pushed(self, entity: str) -> int:
        return sum(int((p.get(entity) or {}).get("records_sent") or 0) for p in self.pushes[1:])

    @property
    def parity_differences(self) -> list[dict]:
        return [r for r in (self.parity or []) if r["status"] == "MISMATCH"]


# --- environment and services -----------------------------------------------------------------
@contextlib.contextmanager
def patched_env(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the loop; restore the previous values afterwards."""
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def loop_services(settings, opts: LoopOptions) -> Iterator[dict[str, str]]:
    """Receiver, billing engine API and provider sandbox on free loopback ports (resolved once,
    here); the environment points at them while the block runs. Yields the three base URLs."""
    from recovery_pipeline.billing_engine.app import create_app as billing_app
    from recovery_pipeline.httpserve import free_port, serve_in_thread
    from recovery_pipeline.provider_sandbox import SandboxConfig
    from recovery_pipeline.provider_sandbox import create_app as sandbox_app
    from recovery_pipeline.webhooks.app import ReceiverConfig
    from recovery_pipeline.webhooks.app import create_app as receiver_app

    ports = {name: free_port() for name in ("provider", "billing", "receiver")}
    urls = {name: f"http://127.0.0.1:{p}" for name, p in ports.items()}
    env = {"PROVIDER_BASE_URL": urls["provider"], "BILLING_ENGINE_URL": urls["billing"],
           "RECEIVER_URL": urls["receiver"], "RECOVERY_EXECUTION_MODE": "live"}
    import dataclasses

    receiver_cfg = dataclasses.replace(ReceiverConfig.from_env(), ops_store_url=settings.ops_store_url)
    sandbox_cfg = SandboxConfig(batch_limit=opts.batch_limit, db_path=str(sandbox_db_path(settings)),
                                requests_per_second=opts.requests_per_second,
                                webhook_url=urls["receiver"], time_scale=opts.time_scale)
    with patched_env(env), \
            serve_in_thread(receiver_app(receiver_cfg), port=ports["receiver"]), \
            serve_in_thread(billing_app(db_url=settings.billing_db_url), port=ports["billing"]), \
            serve_in_thread(sandbox_app(sandbox_cfg), port=ports["provider"]):
        yield urls


def sandbox_db_path(settings) -> Path:
    """Where the demo's provider sandbox keeps what it was sent (beside the push ledger)."""
    return settings.data_dir / "provider_sandbox.sqlite"


def reset_loop_state(settings) -> list[str]:
    """A fresh demo: forget what the previous one pushed, received and executed (the ops store
    and the sandbox's copy) when they are files under the data dir; returns what was removed.
    A database given by URL is never dropped here."""
    removed = []
    ops = settings.ops_store_url
    candidates = [sandbox_db_path(settings)]
    if ops.startswith("sqlite:///"):
        candidates.append(Path(ops.removeprefix("sqlite:///")))
    for base in candidates:
        base = base.resolve()
        if not base.is_relative_to(settings.data_dir):
            continue
        for suffix in ("", "-wal", "-shm", "-journal", ".inbox-lock"):
            f = base.with_name(base.name + suffix)
            if f.exists():
                f.unlink()
                removed.append(f.name)
    return removed


def loop_definitions(settings, opts: LoopOptions):
    """The code location's definitions with resources for the loop's endpoints."""
    import importlib

    import dagster as dg

    from recovery_pipeline.definitions import DOMAINS
    from recovery_pipeline.resources import ProviderResource, _env_secret, build_resources

    resources = build_resources(settings)
    resources["provider"] = ProviderResource(
        integration_file=str(settings.integration_file), base_url=settings.provider_base_url,
        api_key=_env_secret("PROVIDER_API_KEY"), provider=opts.provider,
        batch_size=opts.batch_limit, requests_per_second=opts.requests_per_second)
    domain_defs = [importlib.import_module(f"recovery_pipeline.defs.{d}").defs for d in DOMAINS]
    return dg.Definitions.merge(*domain_defs, dg.Definitions(resources=resources)), resources


def _plain(value: Any) -> Any:
    return getattr(value, "value", value)


def run_job(defs, instance, name: str, **kwargs) -> tuple[str, dict[str, dict]]:
    """Execute one job of the code location in-process on ``instance``; returns the run id and
    each materialization's metadata (asset key path -> {name: value})."""
    job = defs.resolve_job_def(name)
    tags = {"recovery/demo": "loop", **kwargs.pop("tags", {})}
    result = job.execute_in_process(instance=instance, run_config=QUIET, tags=tags, **kwargs)
    out: dict[str, dict] = {}
    for ev in result.get_asset_materialization_events():
        mat = ev.event_specific_data.materialization
        out["/".join(mat.asset_key.path)] = {k: _plain(v) for k, v in mat.metadata.items()}
    return result.run_id, out


def reconciliation_selection(defs) -> list:
    """Provider counts + the reconciliation group (ops snapshot, parity, mismatches)."""
    import dagster as dg

    graph = defs.resolve_asset_graph()
    keys = dg.AssetSelection.groups("reconciliation").resolve(graph)
    return sorted([dg.AssetKey(["provider", "counts"]), *keys], key=lambda k: k.to_user_string())


# --- the billing system's side ------------------------------------------------------------------
def billing_high_water_mark(billing_db_url: str, now: datetime | None = None) -> datetime:
    """The newest ``updated_at`` not after ``now`` in the billing database (what the backfill
    has seen; a future-dated bad row does not count)."""
    import sqlalchemy as sa

    from recovery_pipeline.billing_engine import schema
    from recovery_pipeline.ingest.sql_database import _to_utc, bind_ts

    now = now or datetime.now(UTC)
    engine = sa.create_engine(billing_db_url)
    try:
        with engine.connect() as conn:
            marks = [conn.execute(sa.select(sa.func.max(schema.ENTITIES[e].c.updated_at)).where(
                schema.ENTITIES[e].c.updated_at <= bind_ts(conn, now))).scalar() for e in ENTITIES]
    finally:
        engine.dispose()
    marks = [_to_utc(m) for m in marks if m is not None]
    return max(marks) if marks else datetime(1970, 1, 1, tzinfo=UTC)


def export_changes(billing_db_url: str, exports_dir: str | Path, since: datetime,
                   label: str, until: datetime | None = None) -> dict[str, dict[str, int]]:
    """The billing system's incremental export: rows changed after ``since`` (and not after
    ``until``, default now: a future-dated row is not a change), one Parquet file
    per entity and ``created_at`` month, ``exports/<entity>/<YYYY-MM>-changes-<label>.parquet``
    (the export contract's columns). Returns entity -> month -> rows."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    import sqlalchemy as sa

    from recovery_pipeline.billing_engine import schema
    from recovery_pipeline.billing_engine.exports import arrow_schema
    from recovery_pipeline.ingest.sql_database import bind_ts, rows_to_arrow

    out: dict[str, dict[str, int]] = {}
    until = until or datetime.now(UTC)
    engine = sa.create_engine(billing_db_url)
    try:
        with engine.connect() as conn:
            for entity in ENTITIES:
                table = schema.ENTITIES[entity]
                rows = conn.execute(sa.select(table).where(
                    table.c.updated_at > bind_ts(conn, since),
                    table.c.updated_at <= bind_ts(conn, until))).all()
                if not rows:
                    continue
                data = rows_to_arrow(table, rows).cast(arrow_schema(entity))
                months = pc.strftime(data["created_at"], format="%Y-%m")
                for month in sorted(set(months.to_pylist())):
                    part = data.filter(pc.equal(months, pa.scalar(month)))
                    path = Path(exports_dir) / entity / f"{month}-changes-{label}.parquet"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    pq.write_table(part, path)
                    out.setdefault(entity, {})[month] = part.num_rows
    finally:
        engine.dispose()
    return out


def evaluate_change_sensor(defs, instance, resources: dict, cursor: str | None):
    """One evaluation of ``billing_changes_sensor`` (the incremental sync's change detection)."""
    import dagster as dg

    sensor = defs.resolve_sensor_def("billing_changes_sensor")
    ctx = dg.build_sensor_context(instance=instance, cursor=cursor, resources={
        "billing_db": resources["billing_db"], "pipeline_settings": resources["pipeline_settings"]})
    return sensor(ctx)


def wait_for_webhooks(provider_url: str, receiver_url: str, timeout: float) -> dict:
    """Until the sandbox's outbox has nothing pending (or ``timeout``); the delivery numbers."""
    import httpx

    deadline = time.monotonic() + timeout
    stats: dict = {}
    while True:
        stats = httpx.get(f"{provider_url}/sandbox/stats", timeout=10).json()
        if not stats["webhooks"].get("pending") or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    writer = httpx.get(f"{receiver_url}/healthz", timeout=10).json().get("writer", {})
    return {"outbox": stats["webhooks"], "delivery_attempts": stats.get("webhook_attempts", 0),
            "duplicates_sent": stats.get("webhook_duplicates_sent", 0),
            "recovery_actions_at_provider": stats.get("recovery_actions", 0),
            "receiver_requests": writer.get("items", 0), "receiver_stored": writer.get("rows", 0)}


def audit_groups(ops_engine) -> list[dict]:
    """The audit trail by business action, mode and result."""
    import sqlalchemy as sa

    from recovery_pipeline.opsstore.models import executed_actions as ea

    cols = (ea.c.business_action, ea.c.mode, ea.c.result)
    with ops_engine.connect() as c:
        return [{"business_action": a, "mode": m, "result": r, "n": int(n)} for a, m, r, n in
                c.execute(sa.select(*cols, sa.func.count()).group_by(*cols).order_by(*cols))]


def live_retried_invoices(ops_engine) -> list[str]:
    """Invoices the loop retried in the billing system (live, executed)."""
    import sqlalchemy as sa

    from recovery_pipeline.opsstore.models import executed_actions as ea

    with ops_engine.connect() as c:
        return sorted({r[0] for r in c.execute(sa.select(ea.c.invoice_id).where(
            ea.c.business_action == "retry_now", ea.c.mode == "live", ea.c.result == "executed"))})


def new_billing_transactions(billing_db_url: str, invoice_ids: list[str], since: datetime) -> list[str]:
    import sqlalchemy as sa

    from recovery_pipeline.billing_engine.schema import transactions
    from recovery_pipeline.ingest.sql_database import bind_ts

    if not invoice_ids:
        return []
    engine = sa.create_engine(billing_db_url)
    try:
        with engine.connect() as conn:
            return sorted(r[0] for r in conn.execute(sa.select(transactions.c.transaction_id).where(
                transactions.c.invoice_id.in_(invoice_ids),
                transactions.c.created_at >= bind_ts(conn, since))))
    finally:
        engine.dispose()


# --- the loop -----------------------------------------------------------------------------------
def run_loop(console=None, settings=None, opts: LoopOptions | None = None,
             print_report: bool = True, fresh: bool = True) -> LoopReport:
    """Run the loop once over the backfilled history (see the module docstring). ``fresh``
    (the demo without ``--keep``) starts from an empty ops store and provider sandbox."""
    import dagster as dg
    import httpx
    from rich.console import Console

    from recovery_pipeline.commands.backfill import ensure_instance_config
    from recovery_pipeline.execution.reports import audit_summary
    from recovery_pipeline.ingest.months import month_to_partition, partition_to_month
    from recovery_pipeline.integration import load_integration
    from recovery_pipeline.settings import load_settings

    console = console or Console()
    opts = opts or LoopOptions()
    base = settings or load_settings()
    report = LoopReport()
    timer = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal timer
        now = time.perf_counter()
        report.seconds[name] = round(now - timer, 2)
        timer = now

    if fresh:
        reset_loop_state(base)
    since = billing_high_water_mark(base.billing_db_url)
    loop_started = datetime.now(UTC)
    ensure_instance_config(base.dagster_home)
    with loop_services(base, opts) as urls, \
            dg.DagsterInstance.from_config(str(base.dagster_home)) as instance:
        settings = load_settings()  # now pointing at the loop's services
        report.endpoints = urls
        defs, resources = loop_definitions(settings, opts)
        ops = resources["ops_store"].engine()
        policy = resources["execution_settings"].policy()
        report.execution_mode, batch_size = policy.mode, policy.batch_size
        source_kind = load_integration(settings.integration_file).source_kind()
        # the change detection's starting point: everything the backfill loaded counts as seen
        baseline = evaluate_change_sensor(defs, instance, resources, None)
        httpx.post(f"{urls['provider']}/sandbox/faults", timeout=10, json={
            "webhook_duplicate_fraction": opts.webhook_duplicate_fraction, "seed": 7})
        lap("start")

        with console.status("pushing the history to the provider (Dagster: provider_push)"):
            rid, mats = run_job(defs, instance, "provider_push")
        report.run_ids["provider_push"] = rid
        report.pushes.append({e: mats.get(f"provider_sync/pushed_{e}", {}) for e in PUSHED})
        lap("push history")
        with console.status("handing off failures (Dagster: failure_handoff)"):
            rid, mats = run_job(defs, instance, "failure_handoff")
        report.run_ids["failure_handoff"] = rid
        report.handoff = mats.get("provider_sync/failure_handoffs", {})
        lap("handoff")

        cursor = baseline.cursor
        for n in range(1, opts.max_rounds + 1):
            # decisions arrive (webhooks; polled once per round: hybrid) and are executed, live
            with console.status(f"round {n}: waiting for the provider's webhooks"):
                report.webhooks = wait_for_webhooks(urls["provider"], urls["receiver"],
                                                    opts.webhook_wait_seconds)
            with console.status(f"round {n}: polling recovery actions (Dagster: "
                                "poll_recovery_actions)"):
                rid, mats = run_job(defs, instance, "poll_recovery_actions")
            report.run_ids.setdefault("poll_recovery_actions", rid)
            polled = mats.get("polled_recovery_actions", {})
            report.polled = {"new_actions": report.polled.get("new_actions", 0) + (
                polled.get("new_actions") or 0), "listed": polled.get("provider_total_size")}
            executed = 0
            with console.status(f"round {n}: executing recovery actions, live (Dagster: "
                                "execute_recovery_actions)"):
                for _ in range(opts.max_execution_runs):
                    rid, mats = run_job(defs, instance, "execute_recovery_actions")
                    this_run = mats.get("executed_actions", {}).get("this_run", {}) or {}
                    report.executions.append({"round": n, **this_run})
                    report.run_ids.setdefault("execute_recovery_actions", rid)
                    results = this_run.get("results") or {}
                    executed += results.get("executed", 0)
                    if sum(results.values()) < batch_size or this_run.get("paused"):
                        break  # the executor's budget was not used up: nothing more is due
            lap(f"round {n}: decisions")
            if executed == 0:
                break  # nothing changed in the billing system: the loop is at rest
            # the loop closes: the billing system's changes come back through the incremental sync
            if source_kind == "exports":
                exported = export_changes(settings.billing_db_url, settings.exports_dir, since,
                                          f"{loop_started:%Y%m%dT%H%M%S}-{n}")
                since = billing_high_water_mark(settings.billing_db_url)
                for e, by_month in exported.items():
                    report.changes[e] = report.changes.get(e, 0) + sum(by_month.values())
            sensed = evaluate_change_sensor(defs, instance, resources, cursor)
            cursor = sensed.cursor
            requests = list(sensed.run_requests or [])
            months = sorted({partition_to_month(r.partition_key) for r in requests})
            report.sync_run_keys += [r.run_key for r in requests]
            report.sync_months = sorted(set(report.sync_months) | set(months))
            if months:
                with console.status(f"round {n}: incremental sync of {len(months)} changed "
                                    "month(s) (Dagster: billing_sync_job)"):
                    rid, _ = run_job(defs, instance, "billing_sync_job", tags={
                        "recovery/change": f"{len(requests)} sensor run request(s)",
                        "dagster/asset_partition_range_start": month_to_partition(months[0]),
                        "dagster/asset_partition_range_end": month_to_partition(months[-1])})
                report.run_ids.setdefault("billing_sync_job", rid)
            with console.status(f"round {n}: pushing the changes (Dagster: provider_push)"):
                rid, mats = run_job(defs, instance, "provider_push")
            report.pushes.append({e: mats.get(f"provider_sync/pushed_{e}", {}) for e in PUSHED})
            lap(f"round {n}: sync + push")
            if not report.pushes[-1]["transactions"].get("records_sent"):
                break  # decisions follow new payment attempts: none sent, none to come
        report.audit = {**audit_summary(ops), "groups": audit_groups(ops)}
        report.retried_invoices = live_retried_invoices(ops)
        report.new_transactions = new_billing_transactions(
            settings.billing_db_url, report.retried_invoices, loop_started)
        report.webhooks = wait_for_webhooks(urls["provider"], urls["receiver"],
                                            opts.webhook_wait_seconds)

        _read_warehouse(settings, report, loop_started)
        report.provider_counts = {
            m: {k: v.get(k, 0) for k in ("invoices", "transactions", "failed_transactions")}
            for m, v in httpx.get(f"{urls['provider']}/sandbox/counts", timeout=30).json()[
                "months"].items()}

        if not opts.reconcile:
            report.reconciliation_note = "reconciliation not requested"
        else:
            with console.status("reconciling billing against the provider "
                                "(Dagster: daily_reconciliation)"):
                # the daily_reconciliation job's provider view + parity + mismatches (its
                # monitoring part runs on its own schedule). A failed blocking check fails the
                # run: the summary below names the differences either way.
                rid, _ = run_job(defs, instance, "daily_reconciliation", raise_on_error=False,
                                 asset_selection=reconciliation_selection(defs))
            report.run_ids["daily_reconciliation"] = rid
            _read_reconciliation(settings, report)
        lap("reconcile")
    if print_report:
        print_loop_summary(report, console)
    return report


def _read_warehouse(settings, report: LoopReport, loop_started: datetime) -> None:
    from recovery_pipeline.sqlmodels.runner import warehouse

    with warehouse(settings.warehouse) as wh:
        if report.new_transactions:
            ids = report.new_transactions
            found = set()
            for i in range(0, len(ids), 500):
                chunk = ids[i:i + 500]
                params = {f"t{j}": t for j, t in enumerate(chunk)}
                marks = ", ".join(f"$t{j}" for j in range(len(chunk)))
                found |= {r[0] for r in wh.fetchall(
                    f"select transaction_id from canonical.transactions "
                    f"where transaction_id in ({marks})", params)}
            report.new_transactions_in_canonical = sorted(found)
        rows = wh.fetchall(
            "select o.currency, count(*), sum(o.recovered_amount_minor), max(c.minor_units) "
            "from canonical.invoice_outcomes as o "
            "left join reference.currencies as c on c.code = o.currency "
            "where o.outcome = 'paid_after_failure' and o.paid_at >= $since "
            "group by o.currency order by o.currency", {"since": loop_started})
        report.recovered = [{"currency": c, "invoices": int(n), "amount_minor": int(a or 0),
                             "minor_units": 2 if u is None else int(u)} for c, n, a, u in rows]
        billing = wh.fetchall(
            "select i.month, count(*), (select count(*) from canonical.transactions t "
            "where t.month = i.month), (select count(*) from canonical.transactions t "
            "where t.month = i.month and t.status = 'failed') "
            "from canonical.invoices i group by i.month order by i.month")
        extra = wh.fetchall(  # months with transactions only (a retry in the current month)
            "select t.month, count(*), count(case when t.status = 'failed' then 1 end) "
            "from canonical.transactions t where not exists (select 1 from canonical.invoices i "
            "where i.month = t.month) group by t.month")
    report.billing_counts = {m: {"invoices": int(i), "transactions": int(t),
                                 "failed_transactions": int(f)} for m, i, t, f in billing}
    for m, t, f in extra:
        report.billing_counts[m] = {"invoices": 0, "transactions": int(t), "failed_transactions": int(f)}


def _read_reconciliation(settings, report: LoopReport) -> None:
    from recovery_pipeline.reconciliation import parity
    from recovery_pipeline.reconciliation.warehouse_con import connect

    with connect(settings.warehouse, read_only=True) as con:  # DuckDB file or PostgreSQL URL
        report.parity = parity.parity_table(con)
        report.coverage = parity.coverage_summary(con)
        report.mismatches = parity.mismatches(con)


# --- the summary ----------------------------------------------------------------------------------
def _fmt(v: Any) -> str:
    from rich.markup import escape

    if v is None:
        return "-"
    if isinstance(v, int):
        return f"{v:,}"
    return escape(str(v))


def _table(title: str, columns: list[str], rows: list[tuple], left: int = 1, compact: bool = False):
    from rich import box
    from rich.table import Table

    t = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD if compact else box.HEAVY_HEAD,
              pad_edge=not compact, collapse_padding=compact)
    for i, c in enumerate(columns):
        t.add_column(c, justify="left" if i < left else "right", no_wrap=True)
    for r in rows:
        t.add_row(*[_fmt(v) for v in r])
    return t


def _measure(name: str) -> str:
    return name.replace("invoice_outcomes[", "outcome ").rstrip("]") if "[" in name else name


def _money(minor: int, units: int) -> str:
    return f"{minor / 10 ** units:,.{units}f}"


def print_loop_summary(report: LoopReport, console) -> None:
    from rich.rule import Rule

    console.print(Rule("The recovery loop"))
    console.print(
        f"Loopback services: provider sandbox {report.endpoints.get('provider')}, billing engine "
        f"{report.endpoints.get('billing')}, webhook receiver {report.endpoints.get('receiver')}.\n"
        f"Execution mode: [bold]{report.execution_mode}[/] for this demo (RECOVERY_EXECUTION_MODE="
        f"live; integration.yaml rollout.mode stays as configured for real runs).")
    rows = []
    labels = ["history"] + [f"round {i}" for i in range(1, len(report.pushes))]
    for label, push in zip(labels, report.pushes, strict=True):
        for e in PUSHED:
            m = push.get(e, {})
            rows.append((label if e == PUSHED[0] else "", e, m.get("records_sent"),
                         m.get("unchanged"), m.get("requests"), m.get("retries"), m.get("429s"),
                         m.get("dead_letters")))
    console.print(_table("Push to the provider (Dagster: provider_push; DLQ = dead letters)",
                         ["push", "entity", "sent", "unchanged", "requests", "retries", "429s",
                          "DLQ"], rows, left=2, compact=True))
    h = report.handoff
    console.print(f"Failure hand-off: {_fmt(h.get('failed_transactions'))} failed charges, "
                  f"{_fmt(h.get('invoices_considered'))} invoices, sent {_fmt(h.get('sent'))}, "
                  f"already handed off {_fmt(h.get('already_handed_off'))}, billing marked "
                  f"{_fmt(h.get('billing_marked'))}, dead letters {_fmt(h.get('dead_letters'))}.")
    months = sorted(set(report.billing_counts) | set(report.provider_counts))
    rows = []
    for m in months:
        b, p = report.billing_counts.get(m, {}), report.provider_counts.get(m, {})
        rows.append((m, *(v for k in ("invoices", "transactions", "failed_transactions")
                          for v in (b.get(k, 0), p.get(k, 0)))))
    console.print(_table("Billing (canonical) next to the provider's counts, after the last push",
                         ["month", "invoices", "provider", "transactions", "provider", "failed",
                          "provider"], rows))
    w = report.webhooks
    dedup = max(0, w.get("receiver_requests", 0) - w.get("receiver_stored", 0))
    console.print(
        f"Webhooks: the provider made {_fmt(report.webhooks.get('recovery_actions_at_provider'))} "
        f"recovery decisions; the receiver verified {_fmt(w.get('receiver_requests'))} signed "
        f"deliveries, stored {_fmt(w.get('receiver_stored'))} and deduplicated {_fmt(dedup)} "
        f"(the sandbox re-sent {_fmt(w.get('duplicates_sent'))} on purpose). Polling: "
        f"the provider lists {_fmt(report.polled.get('listed'))} recovery actions, "
        f"{_fmt(report.polled.get('new_actions'))} stored; a decision that arrives both ways "
        f"executes once.")
    groups = {(g["business_action"], g["mode"], g["result"]): g["n"]
              for g in report.audit.get("groups", [])}
    console.print(_table("Decisions executed in billing (audit trail)",
                         ["business action", "mode", "result", "actions"],
                         [(*k, v) for k, v in sorted(groups.items())], left=3))
    console.print(
        f"Loop closed: {len(report.retried_invoices)} invoices retried live -> "
        f"{len(report.new_transactions)} new billing transactions -> "
        f"{len(report.new_transactions_in_canonical)} carried back by the incremental sync "
        f"(months {', '.join(report.sync_months) or '-'}; "
        f"{sum(report.changes.values()) if report.changes else 0} changed rows exported) -> "
        f"{_fmt(report.changes_pushed('transactions'))} transactions pushed back to the provider "
        f"in {len(report.pushes) - 1} round(s).")
    if report.recovered:
        console.print(_table("Recovered by the loop (invoices paid after a live retry)",
                             ["currency", "invoices", "recovered amount"],
                             [(r["currency"], r["invoices"], _money(r["amount_minor"], r["minor_units"]))
                              for r in report.recovered]))
    else:
        console.print("Recovered by the loop: no invoice paid yet (retries declined this time).")
    if report.parity is None:
        console.print(f"Reconciliation: {report.reconciliation_note}")
    else:
        totals = [r for r in report.parity if r["month"] == "total"]
        console.print(_table("Parity, billing vs provider (all months; per-month rows in the UI)",
                             ["measure", "billing", "provider", "difference", "status"],
                             [(_measure(r["measure"]), r["billing"], r["provider"], r["difference"],
                               r["status"]) for r in totals]))
        diffs = report.parity_differences
        per_month = [r for r in report.parity if r["month"] != "total"]
        bad_cov = [c for c in report.coverage or [] if c["status"] == "MISMATCH"]
        console.print(f"Per month: {len(per_month)} rows, {len(diffs)} with a difference; "
                      f"currency/country coverage: {len(report.coverage or [])} keys, "
                      f"{len(bad_cov)} mismatched.")
        for r in diffs[:10]:
            console.print(f"  [red]MISMATCH[/] {r['month']} {_fmt(_measure(r['measure']))}: billing {r['billing']} "
                          f"vs provider {r['provider']}")
        mism = report.mismatches or []
        if mism:
            kinds: dict[str, int] = {}
            for m in mism:
                kinds[m["kind"]] = kinds.get(m["kind"], 0) + 1
            console.print(_table(f"State mismatches ({len(mism)} shown, oldest first)",
                                 ["kind", "invoice", "month", "billing", "provider", "age (h)"],
                                 [(m["kind"], m["invoice_id"], m["month"], m["billing_state"],
                                   m["provider_state"], f"{m['age_hours']:.1f}"
                                   if m.get("age_hours") is not None else "-") for m in mism[:10]]))
        else:
            console.print("State mismatches: none.")
    console.print("Timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in report.seconds.items()))


def report_as_json(report: LoopReport) -> str:
    from dataclasses import asdict

    return json.dumps(asdict(report), default=str, indent=2)

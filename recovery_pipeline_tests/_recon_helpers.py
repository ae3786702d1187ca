"""Shared helpers for the reconciliation / monitoring / alert tests (not collected: no test_ prefix)."""

from __future__ import annotations

import contextlib
import threading

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from recovery_pipeline.httpserve import serve_in_thread
from recovery_pipeline.resources import (
    OpsStoreResource,
    PipelineSettingsResource,
    ReconciliationConfig,
    WarehouseResource,
)


class FakeCounts:
    """Serves provider counts (long rows) like the sandbox's GET /sandbox/counts."""

    def __init__(self, rows):
        self.rows = rows

    def app(self) -> Starlette:
        async def counts(request):
            return JSONResponse({"rows": self.rows})

        return Starlette(routes=[Route("/sandbox/counts", counts)])


def provider_count_rows(rows) -> list[dict]:
    """Billing-side count rows as the provider serves them: integer values, no ``source``."""
    return [{k: (int(v) if k == "value" else v) for k, v in r.items() if k != "source"} for r in rows]


def counts_resources(warehouse: str, tmp_path, provider_base_url: str) -> dict:
    """Resources for the reconciliation assets: ``warehouse``, provider counts served at
    ``provider_base_url`` (a FakeCounts), an ops store and settings under ``tmp_path``."""
    return {
        "warehouse": WarehouseResource(target=warehouse),
        "ops_store": OpsStoreResource(url=f"sqlite:///{tmp_path / 'ops.sqlite'}"),
        "reconciliation": ReconciliationConfig(provider="slicker", provider_base_url=provider_base_url,
                                               provider_counts_source="sandbox_counts"),
        "pipeline_settings": PipelineSettingsResource(
            data_dir=str(tmp_path), exports_dir=str(tmp_path / "exports"),
            integration_file=str(tmp_path / "integration.yaml")),
    }


class SlackCapture:
    """A local stand-in for a Slack incoming webhook: records every POSTed JSON body."""

    def __init__(self, fail: bool = False):
        self.messages: list[dict] = []
        self.fail = fail
        self._lock = threading.Lock()

    def app(self) -> Starlette:
        async def hook(request: Request):
            body = await request.json()
            with self._lock:
                if self.fail:
                    return JSONResponse({"ok": False}, status_code=500)
                self.messages.append(body)
            return JSONResponse({"ok": True})

        return Starlette(routes=[Route("/hooks/alerts", hook, methods=["POST"])])

    @property
    def texts(self) -> list[str]:
        with self._lock:
            return [m["text"] for m in self.messages]

    def alerts(self) -> list[str]:
        return [t for t in self.texts if "RESOLVED" not in t]

    def resolutions(self) -> list[str]:
        return [t for t in self.texts if "RESOLVED" in t]


@contextlib.contextmanager
def slack_capture(fail: bool = False):
    cap = SlackCapture(fail=fail)
    with serve_in_thread(cap.app()) as base:
        cap.url = f"{base}/hooks/alerts"
        yield cap


def shift_provider_rows(rows: list[dict], month: str, changes: dict[tuple[str, str, str], int]) -> list[dict]:
    """Copy ``rows`` applying ``{(measure, dimension, key): delta}`` to ``month``."""
    out = []
    for r in rows:
        r = dict(r)
        k = (r["measure"], r["dimension"], r["key"])
        if r["month"] == month and k in changes:
            r["value"] = int(r["value"]) + changes[k]
        out.append(r)
    return out


def rename_key(rows: list[dict], dimension: str, old: str, new: str) -> list[dict]:
    return [{**r, "key": new} if r["dimension"] == dimension and r["key"] == old else dict(r) for r in rows]

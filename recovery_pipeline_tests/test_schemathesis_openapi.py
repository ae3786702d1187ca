"""schemathesis against the OpenAPI documents the provider sandbox and the webhook receiver serve.

Each server runs for real on loopback; schemathesis loads its ``/openapi.json`` over HTTP, generates
requests per operation from the document (bounded: a few examples per operation) and checks every
response: never a server error, and the response conforms to the documented status codes and
schemas. The sandbox's fault-injection hook (``POST /sandbox/faults``, whose purpose is to make
the sandbox answer 5xx) and its reconfiguration hook are left out.
"""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from recovery_pipeline.httpserve import serve_in_thread
from recovery_pipeline.provider_sandbox import SandboxConfig, create_app
from recovery_pipeline_tests._webhook_support import receiver

API_KEY = "schemathesis-provider-key"
AUTH = {"Authorization": f"Bearer {API_KEY}", "X-API-KEY": API_KEY}
SKIP = {("POST", "/sandbox/faults"), ("POST", "/sandbox/config")}
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]


def run_schema(base_url: str, examples_per_operation: int, headers: dict | None = None) -> list[str]:
    """Run every operation of the served document; returns the operations exercised."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    exercised = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if (operation.method.upper(), operation.path) in SKIP:
            continue

        @settings(max_examples=examples_per_operation, deadline=None, derandomize=True,
                  phases=[Phase.explicit, Phase.generate], database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def call(case):
            response = case.call(base_url=base_url, headers=headers, timeout=10)
            case.validate_response(response, checks=CHECKS)

        call()
        exercised.append(f"{operation.method.upper()} {operation.path}")
    return exercised


def test_sandbox_openapi_operations_never_answer_a_server_error_and_match_the_document(tmp_path):
    cfg = SandboxConfig(api_key=API_KEY, requests_per_second=10000.0, revtain_per_minute=100000,
                        time_scale=0.001, deliver_in_background=False)
    with serve_in_thread(create_app(cfg)) as url:
        exercised = run_schema(url, 12, headers=AUTH)
    assert any("/v1/" in op for op in exercised) and any("/api/recovery" in op for op in exercised)


def test_receiver_openapi_operations_never_answer_a_server_error_and_match_the_document(tmp_path):
    with receiver(f"sqlite:///{tmp_path / 'ops.db'}") as client:
        exercised = run_schema(str(client.base_url).rstrip("/"), 40)
    assert any("/webhooks/" in op for op in exercised)

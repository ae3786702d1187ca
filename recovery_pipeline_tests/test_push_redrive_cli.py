"""`recovery-pipeline redrive` replays dead letters through the CLI and is safe to run twice."""

from __future__ import annotations

from recovery_pipeline.cli import main
from recovery_pipeline.opsstore import create_ops_engine, init_ops_store
from recovery_pipeline.providers.push import PushSettings, push_all
from recovery_pipeline.providers.synthetic import chunks, generate
from recovery_pipeline_tests.provider_fixtures import API_KEY, faults, make_client, sandbox, stats  # noqa: F401


def test_redrive_command_replays_once_then_finds_nothing(data_env, monkeypatch, sandbox, capsys):
    monkeypatch.setenv("PROVIDER_API_KEY", API_KEY)
    data = generate(30, seed=19)
    engine = create_ops_engine(data_env.ops_store_url)
    init_ops_store(engine)
    faults(sandbox, fraction_5xx=1.0, seed=5)
    with make_client(sandbox) as client:
        push_all(engine, client, lambda e: chunks(data[e]), PushSettings(max_receive_count=1))
    faults(sandbox)
    assert main(["redrive", "--provider", "slicker", "--base-url", sandbox]) == 0
    first = capsys.readouterr().out
    assert main(["redrive", "--provider", "slicker", "--base-url", sandbox]) == 0
    second = capsys.readouterr().out
    assert "redriven 3" in first and "considered 0" in second
    assert stats(sandbox)["records_by_entity"] == {e: len(r) for e, r in data.items()}
    assert stats(sandbox)["duplicates_seen"] == 0

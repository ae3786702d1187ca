from recovery_pipeline.settings import load_settings, secret


def test_data_dir_env_moves_every_embedded_store(tmp_path):
    s = load_settings({"RECOVERY_DATA_DIR": str(tmp_path)})
    assert s.warehouse == str(tmp_path / "warehouse.duckdb")
    assert s.ops_store_url == f"sqlite:///{tmp_path / 'ops.sqlite'}"
    assert s.billing_db_url == f"sqlite:///{tmp_path / 'billing.sqlite'}"
    assert s.exports_dir == tmp_path / "exports"
    assert s.dagster_home == tmp_path / "dagster_home"


def test_postgres_warehouse_is_selected_by_url(tmp_path):
    s = load_settings({"RECOVERY_DATA_DIR": str(tmp_path), "RECOVERY_WAREHOUSE": "postgresql://x@h/db"})
    assert s.warehouse_is_postgres


def test_secret_prefers_environment_over_demo_value():
    assert secret("PROVIDER_API_KEY", {"PROVIDER_API_KEY": "real"}) == "real"
    assert secret("PROVIDER_API_KEY", {}) == "demo-provider-key"
    assert secret("STRIPE_API_KEY", {}) is None

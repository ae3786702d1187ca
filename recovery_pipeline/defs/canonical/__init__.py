"""Group ``canonical``: the SQL models of dbt_like_sql/canonical and their checks."""

import dagster as dg

from recovery_pipeline.defs.canonical.assets import canonical_assets
from recovery_pipeline.defs.canonical.checks import canonical_checks

defs = dg.Definitions(assets=canonical_assets, asset_checks=canonical_checks)

"""Group ``provider_feedback``: webhook events (inbox), polled recovery actions (and provider counts).

Assets and checks are collected from ``assets.py`` / ``checks.py``: add new ones there. Polling
health alerts (``polling_stopped:<name>``) come from the monitoring group's alerting sensor, which
reads the ``poll_state`` this group writes.
"""

import dagster as dg

from recovery_pipeline.defs.provider_feedback import assets, checks, jobs, provider_assets, schedules

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([assets, provider_assets]),
    asset_checks=dg.load_asset_checks_from_modules([checks]),
    jobs=[jobs.poll_recovery_actions_job],
    schedules=[schedules.recovery_actions_poll],
)

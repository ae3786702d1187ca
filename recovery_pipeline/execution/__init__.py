"""Recovery decisions -> business actions in the billing system.

- ``instructions``: parse a stored inbox row or a polled recovery action into one ``Instruction``;
- ``policy``: execution mode (shadow / live / cohort), red-flag rules, retry limits;
- ``killswitch``: the env / ops-store kill switch;
- ``billing``: the ``BillingSystem`` interface and its HTTP implementation (demo billing engine);
- ``executor``: drains pending work into the audit trail (``executed_actions``);
- ``polling``: lists recovery actions from the provider (paging, dedupe, poll_state, health).

Nothing here imports Dagster.
"""

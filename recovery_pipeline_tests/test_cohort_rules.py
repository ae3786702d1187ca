"""Cohort rollout: who executes live, who stays in shadow."""

from __future__ import annotations

import pytest

from recovery_pipeline.execution.policy import (
    CohortRule,
    decide_mode,
    in_cohort,
    policy_from_config,
    stable_bucket,
)


def test_percentage_cohort_uses_a_stable_hash_of_the_customer():
    rule = CohortRule(percentage=30)
    first = [in_cohort(rule, {"customer_id": f"cus_{i}"}) for i in range(2000)]
    again = [in_cohort(rule, {"customer_id": f"cus_{i}"}) for i in range(2000)]
    assert first == again
    assert 0.25 < sum(first) / len(first) < 0.35


def test_percentage_cohort_grows_monotonically_customers_stay_in_when_raised():
    small, large = CohortRule(percentage=10), CohortRule(percentage=50)
    ids = [f"cus_{i}" for i in range(500)]
    assert all(in_cohort(large, {"customer_id": c}) for c in ids if in_cohort(small, {"customer_id": c}))


def test_stable_bucket_is_the_same_value_for_the_same_key_and_salt():
    assert stable_bucket("cus_1") == stable_bucket("cus_1") != stable_bucket("cus_1", salt="other")


@pytest.mark.parametrize(("rule", "ctx", "expected"), [
    ({"countries": ["de"]}, {"customer_country": "DE"}, True),
    ({"countries": ["DE"]}, {"customer_country": "US"}, False),
    ({"countries": ["DE"]}, {}, False),
    ({"plans": ["pro"]}, {"plan_id": "pro"}, True),
    ({"currencies": ["eur"]}, {"currency": "USD"}, False),
    ({"business_entities": ["acme-eu"]}, {"business_entity": "acme-eu"}, True),
    ({"countries": ["DE"], "plans": ["pro"]}, {"customer_country": "DE", "plan_id": "basic"}, False),
])
def test_cohort_criteria_all_have_to_match(rule, ctx, expected):
    assert in_cohort(CohortRule(**rule), ctx) is expected


def test_outside_the_cohort_behaves_as_shadow_and_live_or_shadow_ignore_the_cohort():
    cohort = policy_from_config({"mode": "cohort", "cohort": {"countries": ["FR"]}}, env={})
    assert decide_mode(cohort, {"customer_country": "FR"}) == "live"
    assert decide_mode(cohort, {"customer_country": "IT"}) == "shadow"
    assert decide_mode(policy_from_config({"mode": "live"}, env={}), {}) == "live"
    assert decide_mode(policy_from_config(None, env={}), {"customer_country": "FR"}) == "shadow"


def test_flat_rollout_config_and_bad_env_mode_are_handled():
    policy = policy_from_config({"mode": "cohort", "percentage": 5, "countries": ["nl"]}, env={})
    assert (policy.cohort.percentage, policy.cohort.countries) == (5, ["NL"])
    with pytest.raises(ValueError, match="RECOVERY_EXECUTION_MODE"):
        policy_from_config({}, env={"RECOVERY_EXECUTION_MODE": "yolo"})

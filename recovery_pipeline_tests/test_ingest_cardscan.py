"""Card-number-like values are found (Luhn-valid 13-19 digit runs) and masked, ids are left alone."""

from __future__ import annotations

import pyarrow as pa

from recovery_pipeline.ingest.cardscan import (
    luhn_valid,
    mask_card_numbers,
    mask_card_numbers_in_table,
)


def test_luhn_validation():
    assert luhn_valid("4242424242424242") and luhn_valid("378282246310005")
    assert not luhn_valid("4242424242424241") and not luhn_valid("424242424242")


def test_spaced_and_dashed_card_numbers_are_masked_keeping_the_last_four():
    assert mask_card_numbers("card 4242 4242 4242 4242 declined") == (
        "card ************4242 declined", True)
    assert mask_card_numbers("5555-5555-5555-4444") == ("************4444", True)


def test_non_luhn_runs_and_identifier_digits_are_not_card_numbers():
    assert mask_card_numbers("order 4242424242424241") == ("order 4242424242424241", False)
    assert mask_card_numbers("pm_4242424242424242") == ("pm_4242424242424242", False)
    assert mask_card_numbers("ch_7b3e4242424242424242") == ("ch_7b3e4242424242424242", False)


def test_table_masking_flags_the_column_and_leaves_other_rows():
    t = pa.table({"decline_message": ["ok", "pan 4242424242424242", None],
                  "card_bin": ["424242", "424242", None]})
    out = mask_card_numbers_in_table(t, ["decline_message", "card_bin"])
    assert out.column("decline_message").to_pylist() == ["ok", "pan ************4242", None]
    assert out.column("_card_like_columns").to_pylist() == [None, "decline_message", None]

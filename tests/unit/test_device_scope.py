"""A token's devices claim turned into LIKE patterns and SQL parameters (pure)."""

from __future__ import annotations

import pytest

from storage.device_scope import claim_condition, claim_values, like_pattern


@pytest.mark.parametrize(
    ("glob", "pattern"),
    [
        ("plant-a-*", "plant-a-%"),
        ("dev_a*", "dev\\_a%"),  # `_` is LIKE's any-character: literal here
        ("100%*", "100\\%%"),
        ("a\\*", "a\\\\%"),  # a backslash stays a backslash
        ("*-7", "%-7"),
        ("d*v*1", "d%v%1"),
        ("exact", "exact"),
    ],
)
def test_like_pattern(glob: str, pattern: str) -> None:
    assert like_pattern(glob) == pattern


@pytest.mark.parametrize(
    ("claim", "values"),
    [
        (None, (None, [])),  # no claim: every device
        (("*",), (None, [])),
        (("d1", "*"), (None, [])),
        ((), ([], [])),  # an empty claim: no device at all
        (("d1", "plant_*"), (["d1"], ["plant\\_%"])),
    ],
)
def test_claim_values(
    claim: tuple[str, ...] | None, values: tuple[list[str] | None, list[str]]
) -> None:
    assert claim_values(claim) == values


def test_claim_condition_binds_both_arrays() -> None:
    assert claim_condition(2, 3) == (
        "($2::text[] IS NULL OR device_id = ANY($2::text[]) OR device_id LIKE ANY($3::text[]))"
    )

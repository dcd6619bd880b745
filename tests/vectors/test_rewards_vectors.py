"""Pinned reward vectors: the HIP-15 table and one epoch's exact payouts."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

from tests.vectors import rewards_vectors

PINNED = json.loads((Path(__file__).parent / "rewards_table.json").read_text())


def test_vectors_match_this_implementation() -> None:
    assert rewards_vectors.compute() == PINNED


def test_pinned_table_is_the_known_hip15_table() -> None:
    # Checked against the published shape, not against our own code.
    scale = PINNED["share_scale"]
    rows = {row["witnesses"]: row for row in PINNED["table"]}
    assert Fraction(rows[5]["witness_units"], scale) == Fraction("0.76")
    assert Fraction(rows[5]["beaconer_units"], scale) == Fraction("1.20")
    for w in (1, 2, 3, 4):
        assert rows[w]["witness_units"] == scale
        assert Fraction(rows[w]["beaconer_units"], scale) == Fraction(w, 4)


def test_pinned_epoch_pays_the_whole_emission() -> None:
    epoch = PINNED["epoch"]
    assert sum(v for _, v in epoch["payouts"]) == epoch["emission"]
    assert len(epoch["lottery_winners_beacon_c"]) == 14

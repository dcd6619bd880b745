"""Pinned witness-validation verdicts (boundaries included)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.vectors import witness_vectors

PINNED = json.loads((Path(__file__).parent / "witness_verdicts.json").read_text())


def test_vectors_match_this_implementation() -> None:
    assert witness_vectors.compute() == PINNED


def test_vectors_cover_the_boundaries() -> None:
    verdicts = {c["name"]: c["verdict"] for c in PINNED["cases"]}
    assert verdicts["exactly_8_cells"] == "valid" and verdicts["7_cells"] == "too_close"
    assert verdicts["exactly_100km"] == "valid" and verdicts["100km_plus_1m"] == "too_far"
    assert verdicts["rssi_exactly_on_bound"] == "valid"
    assert verdicts["rssi_one_centi_db_above_bound"] == "rssi_above_fspl_bound"
    assert verdicts["same_owner"] == "same_owner"
    far = next(c for c in PINNED["cases"] if c["name"] == "exactly_100km")
    assert far["distance_m"] == 100_000

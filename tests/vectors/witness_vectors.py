"""Witness-validation vectors: signed beacon and reports, with the verdict each must get.

Another implementation decodes the hex envelopes, applies DESIGN.md's rules
with the integer geometry of ``depin_p2p/witness/radio.py`` and must reach
the same code, distance and rssi bound. Regenerate (only on a deliberate
rule change) with
``python -m tests.vectors.witness_vectors > tests/vectors/witness_verdicts.json``.
"""

from __future__ import annotations

import json
from typing import Any

from depin_p2p import wire
from depin_p2p.errors import ValidationError
from depin_p2p.witness import radio
from tests.unit.witness import support as s

NETWORK_ID = "depin-vectors"


def _case(
    name: str, beacon: radio.CheckedBeacon, env: wire.Envelope, registry: s.DictRegistry
) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "report_envelope": wire.encode(env).hex()}
    try:
        checked = radio.validate_witness_report(beacon, env, registry=registry, network_id=NETWORK_ID)
    except ValidationError as exc:
        out["verdict"] = exc.code
    else:
        out["verdict"] = "valid"
        out["distance_m"] = checked.distance_m
        out["rssi_bound_cdbm"] = checked.rssi_bound_cdbm
    return out


def compute() -> dict[str, Any]:
    bk = s.key("vector-beaconer")
    b_cell = s.cell(s.SF_LAT, s.SF_LNG)
    b_dev = s.radio_device(bk, b_cell)
    cells = {
        "near_2km": s.cell(s.SF_LAT + 0.018, s.SF_LNG),
        "exactly_8_cells": s.cell_at_grid_distance(b_cell, 8),
        "7_cells": s.cell_at_grid_distance(b_cell, 7),
        "exactly_100km": s.cell_at_distance_m(b_cell, 100_000),
        "100km_plus_1m": s.cell_at_distance_m(b_cell, 100_001),
    }
    keys = {name: s.key(f"vector-{name}") for name in cells}
    sibling = s.key("vector-same-owner")
    registry = s.DictRegistry(
        [
            b_dev,
            *(s.radio_device(keys[n], c) for n, c in cells.items()),
            s.radio_device(sibling, s.cell(s.SF_LAT, s.SF_LNG + 0.023), owner=b_dev.owner),
        ]
    )
    b_env = s.make_beacon(bk, b_dev, network=NETWORK_ID)
    checked = radio.validate_beacon(b_env, registry=registry, network_id=NETWORK_ID)
    dev = registry.get_device(keys["near_2km"].public_key)
    assert dev is not None
    near_bound = radio.rssi_bound_cdbm(b_dev, dev)

    def rep(name: str, **kw: Any) -> wire.Envelope:
        return s.make_report(keys[name], b_env, network=NETWORK_ID, **kw)

    cases = [
        _case("valid_2km", checked, rep("near_2km"), registry),
        _case("rssi_exactly_on_bound", checked, rep("near_2km", rssi=near_bound), registry),
        _case("rssi_one_centi_db_above_bound", checked, rep("near_2km", rssi=near_bound + 1), registry),
        _case("exactly_8_cells", checked, rep("exactly_8_cells"), registry),
        _case("7_cells", checked, rep("7_cells"), registry),
        _case("exactly_100km", checked, rep("exactly_100km", rssi=-11_000), registry),
        _case("100km_plus_1m", checked, rep("100km_plus_1m", rssi=-11_000), registry),
        _case("received_before_beacon", checked, rep("near_2km", received_at_ms=999_999), registry),
        _case("frequency_off_by_100001_hz", checked, rep("near_2km", freq=s.FREQ + 100_001), registry),
        _case("self_witness", checked, s.make_report(bk, b_env, network=NETWORK_ID), registry),
        _case("same_owner", checked, s.make_report(sibling, b_env, network=NETWORK_ID), registry),
    ]
    return {
        "network_id": NETWORK_ID,
        "devices": [
            {
                "device_id": d.device_id.hex(),
                "owner": d.owner.hex(),
                "location": d.location,
                "frequency_hz": d.frequency_hz,
                "tx_power_cdbm": d.tx_power_cdbm,
                "gain_cdbi": d.gain_cdbi,
            }
            for d in registry.devices.values()
        ],
        "beacon_envelope": wire.encode(b_env).hex(),
        "beacon_id": checked.beacon_id.hex(),
        "cases": cases,
    }


if __name__ == "__main__":
    print(json.dumps(compute(), indent=2))

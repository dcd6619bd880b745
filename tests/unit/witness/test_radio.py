"""Witness-report validation: one case per rejection code, valid cases on every boundary."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import h3.api.basic_int as h3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from depin_p2p import wire
from depin_p2p.errors import Ignore, Reject, ValidationError
from depin_p2p.witness import radio
from tests.unit.witness import support as s

BEACONER = s.key("beaconer")
NEAR = s.key("witness-near")  # ~2 km north
EIGHT = s.key("witness-8-cells")
SEVEN = s.key("witness-7-cells")
FAR_OK = s.key("witness-100km")
FAR_BAD = s.key("witness-100km+1m")
TOKYO = s.key("witness-tokyo")
STRANGER = s.key("unregistered")
COMPUTE = s.key("compute-box")
SIBLING = s.key("witness-same-owner")  # ~2 km east, owned by the beaconer's owner

B_CELL = s.cell(s.SF_LAT, s.SF_LNG)
B_DEV = s.radio_device(BEACONER, B_CELL)
REG = s.DictRegistry(
    [
        B_DEV,
        s.radio_device(NEAR, s.cell(s.SF_LAT + 0.018, s.SF_LNG)),
        s.radio_device(EIGHT, s.cell_at_grid_distance(B_CELL, 8)),
        s.radio_device(SEVEN, s.cell_at_grid_distance(B_CELL, 7)),
        s.radio_device(FAR_OK, s.cell_at_distance_m(B_CELL, 100_000)),
        s.radio_device(FAR_BAD, s.cell_at_distance_m(B_CELL, 100_001)),
        s.radio_device(TOKYO, s.cell(35.68, 139.69)),
        s.compute_device(COMPUTE, owner=s.key("o").public_key),
        s.radio_device(SIBLING, s.cell(s.SF_LAT, s.SF_LNG + 0.023), owner=B_DEV.owner),
    ]
)
SENT = 1_000_000
B_ENV = s.make_beacon(BEACONER, B_DEV, sent_at_ms=SENT)
CHECKED = radio.validate_beacon(B_ENV, registry=REG, network_id=s.NETWORK)


def bound(witness: s.KeyPair) -> int:
    dev = REG.get_device(witness.public_key)
    assert dev is not None
    return radio.rssi_bound_cdbm(B_DEV, dev)


def tampered_signature(env: wire.Envelope) -> wire.Envelope:
    return dataclasses.replace(env, signature=bytes([env.signature[0] ^ 1]) + env.signature[1:])


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[], wire.Envelope]
    code: str | None  # None: valid
    seen: frozenset[bytes] = frozenset()
    now_ms: int | None = None
    kind: type[ValidationError] = Reject


def rep(k: s.KeyPair = NEAR, **kw: int | str) -> Callable[[], wire.Envelope]:
    return lambda: s.make_report(k, B_ENV, **kw)  # type: ignore[arg-type]


CASES = [
    # valid, including every boundary
    Case("valid", rep(), None),
    Case("valid_at_window_start", rep(received_at_ms=SENT), None),
    Case("valid_at_window_end", rep(received_at_ms=SENT + radio.WINDOW_MS), None),
    Case("valid_frequency_delta_exactly_100khz", rep(freq=s.FREQ + 100_000), None),
    Case("valid_exactly_8_cells", rep(EIGHT), None),
    Case("valid_exactly_100_km", rep(FAR_OK, rssi=-11_000), None),
    Case("valid_rssi_exactly_on_bound", lambda: s.make_report(NEAR, B_ENV, rssi=bound(NEAR)), None),
    Case("valid_arrival_inside_slack", rep(), None, now_ms=SENT + radio.WINDOW_MS + radio.ARRIVAL_SLACK_MS),
    # one case per rejection code
    Case("self_witness", rep(BEACONER), "self_witness"),
    Case("same_owner", rep(SIBLING), "same_owner"),
    Case("duplicate", rep(), "duplicate", seen=frozenset({NEAR.public_key}), kind=Ignore),
    Case("stale_before_beacon", rep(received_at_ms=SENT - 1), "stale"),
    Case("stale_after_window", rep(received_at_ms=SENT + radio.WINDOW_MS + 1), "stale"),
    Case("frequency_mismatch", rep(freq=s.FREQ - 100_001), "frequency_mismatch"),
    Case("too_close_7_cells", rep(SEVEN), "too_close"),
    Case("too_far_100km_plus_1m", rep(FAR_BAD, rssi=-11_000), "too_far"),
    Case("too_far_other_continent", rep(TOKYO, rssi=-12_000), "too_far"),
    Case(
        "rssi_above_fspl_bound",
        lambda: s.make_report(NEAR, B_ENV, rssi=bound(NEAR) + 1),
        "rssi_above_fspl_bound",
    ),
    Case("unknown_device", rep(STRANGER), "unknown_device"),
    Case("bad_signature", lambda: tampered_signature(s.make_report(NEAR, B_ENV)), "bad_signature"),
    Case(
        "bad_signature_other_network",
        lambda: dataclasses.replace(s.make_report(NEAR, B_ENV, network="elsewhere"), network_id=s.NETWORK),
        "bad_signature",
    ),
    Case("wrong_network", rep(network="elsewhere"), "wrong_network"),
    Case("not_a_radio", rep(COMPUTE), "not_a_radio"),
    Case(
        "wrong_signer",
        lambda: dataclasses.replace(s.make_report(NEAR, B_ENV), signer=EIGHT.public_key),
        "wrong_signer",
    ),
    Case("malformed", lambda: dataclasses.replace(s.make_report(NEAR, B_ENV), body=b"\x93\x01"), "malformed"),
    Case(
        "wrong_beacon",
        lambda: s.make_report(NEAR, s.make_beacon(BEACONER, B_DEV, nonce=8)),
        "wrong_beacon",
    ),
    # node-local clock (gossip only): Ignore, never Reject
    Case("arrived_too_late", rep(), "arrived_too_late", now_ms=SENT + 180_000 + 60_001, kind=Ignore),
    Case("arrived_too_early", rep(), "arrived_too_early", now_ms=SENT - 60_001, kind=Ignore),
]


def test_every_design_code_has_a_case() -> None:
    design = {
        "self_witness",
        "same_owner",
        "duplicate",
        "stale",
        "frequency_mismatch",
        "too_close",
        "too_far",
        "rssi_above_fspl_bound",
        "unknown_device",
        "bad_signature",
    }
    assert design <= {c.code for c in CASES}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_witness_report_table(case: Case) -> None:
    env = case.build()
    kwargs = {"registry": REG, "network_id": s.NETWORK, "seen": case.seen, "now_ms": case.now_ms}
    if case.code is None:
        checked = radio.validate_witness_report(CHECKED, env, **kwargs)  # type: ignore[arg-type]
        assert checked.report.witness == env.signer
        assert checked.report.rssi_cdbm <= checked.rssi_bound_cdbm
    else:
        with pytest.raises(case.kind) as info:
            radio.validate_witness_report(CHECKED, env, **kwargs)  # type: ignore[arg-type]
        assert info.value.code == case.code
        assert type(info.value) is case.kind


def test_consensus_recheck_ignores_the_local_clock() -> None:
    # A report arriving a day late is still valid for consensus (signed fields only).
    env = s.make_report(NEAR, B_ENV)
    radio.validate_witness_report(CHECKED, env, registry=REG, network_id=s.NETWORK)
    with pytest.raises(Ignore):
        radio.validate_witness_report(
            CHECKED, env, registry=REG, network_id=s.NETWORK, now_ms=SENT + 86_400_000
        )


def test_boundary_fixtures_are_what_they_claim() -> None:
    # The 8/7-cell and 100 km witnesses sit exactly on the boundaries.
    def dev(k: s.KeyPair) -> int:
        d = REG.get_device(k.public_key)
        assert d is not None
        return d.location

    p = h3.cell_to_parent(B_CELL, 11)
    assert h3.grid_distance(p, h3.cell_to_parent(dev(EIGHT), 11)) == 8
    assert h3.grid_distance(p, h3.cell_to_parent(dev(SEVEN), 11)) == 7
    g = radio.cell_geo(B_CELL)
    assert radio.distance_mm(g, radio.cell_geo(dev(FAR_OK))) // 1000 == 100_000  # type: ignore[operator]
    assert radio.distance_mm(g, radio.cell_geo(dev(FAR_BAD))) // 1000 == 100_001  # type: ignore[operator]


# -------------------------------------------------------------- beacons


def test_valid_beacon_carries_its_id_and_work() -> None:
    assert CHECKED.beacon_id == wire.content_id(B_ENV.body)
    assert CHECKED.eirp_cdbm == s.TX + s.GAIN


@pytest.mark.parametrize(
    ("build", "code"),
    [
        (lambda: s.make_beacon(STRANGER, s.radio_device(STRANGER, B_CELL)), "unknown_device"),
        (lambda: s.make_beacon(BEACONER, dataclasses.replace(B_DEV, tx_power_cdbm=3_000)), "beacon_mismatch"),
        (
            lambda: s.make_beacon(BEACONER, dataclasses.replace(B_DEV, location=s.cell(37.8, -122.4))),
            "beacon_mismatch",
        ),
        (lambda: tampered_signature(B_ENV), "bad_signature"),
        (lambda: dataclasses.replace(B_ENV, signer=NEAR.public_key), "bad_signature"),
        (
            lambda: wire.seal(
                dataclasses.replace(wire.decode_as(B_ENV.body, radio.Beacon), device=NEAR.public_key),
                BEACONER,
                s.NETWORK,
            ),
            "wrong_signer",
        ),
        (lambda: s.make_report(NEAR, B_ENV), "wrong_domain"),
    ],
    ids=[
        "unknown_device",
        "tx_power_mismatch",
        "location_mismatch",
        "bad_signature",
        "swapped_signer",
        "wrong_signer",
        "wrong_domain",
    ],
)
def test_beacon_rejections(build: Callable[[], wire.Envelope], code: str) -> None:
    with pytest.raises(Reject) as info:
        radio.validate_beacon(build(), registry=REG, network_id=s.NETWORK)
    assert info.value.code == code


# -------------------------------------------------------------- integer maths


@settings(max_examples=300)
@given(st.integers(min_value=-(radio.PI_FP // 2), max_value=radio.PI_FP // 2))
def test_integer_sine_matches_float(x: int) -> None:
    assert abs(radio.sin_fp(x) / 2**64 - math.sin(x / 2**64)) < 1e-15


@settings(max_examples=300)
@given(st.integers(min_value=1, max_value=10**15))
def test_integer_log2_matches_float(n: int) -> None:
    got = radio.log2_fp(n) / 2**radio.LOG_FRAC
    assert got <= math.log2(n) + 1e-9  # truncation and a concave interpolation: never above
    assert math.log2(n) - got < 3e-6


@settings(max_examples=200)
@given(st.integers(1_000, 100_000_000), st.integers(100_000_000, 6 * 10**9))
def test_fspl_within_a_centi_db_of_the_float_formula(d_mm: int, f: int) -> None:
    exact = 2000 * math.log10(4 * math.pi * (d_mm / 1000) * f / radio.SPEED_OF_LIGHT_M_S)
    assert math.floor(exact) - 1 <= radio.fspl_cdb(d_mm, f) <= math.floor(exact)


@settings(max_examples=200)
@given(
    st.floats(min_value=-80, max_value=80),
    st.floats(min_value=-179, max_value=179),
    st.floats(min_value=-0.5, max_value=0.5),
    st.floats(min_value=-0.5, max_value=0.5),
)
def test_distance_matches_float_haversine(lat: float, lng: float, dlat: float, dlng: float) -> None:
    a = radio.cell_geo(s.cell(lat, lng))
    b = radio.cell_geo(s.cell(lat + dlat, lng + dlng))
    got = radio.distance_mm(a, b)
    p1, p2 = math.radians(a.lat_ud / 1e6), math.radians(b.lat_ud / 1e6)
    dl = math.radians((b.lng_ud - a.lng_ud) / 1e6)
    h = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    exact = 2 * radio.EARTH_RADIUS_MM * math.asin(math.sqrt(h))
    assert got is not None
    assert abs(got - exact) <= 2 + exact * 1e-9


def test_bad_location_is_rejected() -> None:
    with pytest.raises(Reject) as info:
        radio.cell_geo(12345)
    assert info.value.code == "bad_location"


@settings(max_examples=50)
@given(st.binary(max_size=300), st.sampled_from(["a", "depin-witness-test", "ü-net"]))
def test_memoised_report_signing_bytes_equal_wire(body: bytes, network: str) -> None:
    expected = wire.signing_bytes(network, wire.Domain.WITNESS, radio.WITNESS_REPORT_TYPE_ID, body)
    assert radio._report_signing_bytes(network, body) == expected


def test_distance_across_the_antimeridian_and_far_pairs() -> None:
    a = radio.cell_geo(s.cell(10.0, 179.99))
    b = radio.cell_geo(s.cell(10.0, -179.99))
    d = radio.distance_mm(a, b)
    assert d is not None and 2_100_000 < d < 2_300_000  # ~2.19 km, not half the planet
    assert radio.distance_mm(a, radio.cell_geo(s.cell(10.0, 0.0))) is None  # beyond 1000 km
    assert radio.distance_mm(a, radio.cell_geo(s.cell(25.0, 179.99))) is None  # 15 degrees of latitude


def test_beacon_epoch_and_local_clock_checks() -> None:
    radio.validate_beacon(B_ENV, registry=REG, network_id=s.NETWORK, epoch=3, now_ms=SENT)
    with pytest.raises(Reject) as info:
        radio.validate_beacon(B_ENV, registry=REG, network_id=s.NETWORK, epoch=4)
    assert info.value.code == "wrong_epoch"
    with pytest.raises(Ignore) as ignored:
        radio.validate_beacon(B_ENV, registry=REG, network_id=s.NETWORK, now_ms=SENT + 10**7)
    assert ignored.value.code == "arrived_too_late"

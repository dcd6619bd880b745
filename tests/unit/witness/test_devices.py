"""Device drivers: simulated devices in virtual time, the real local compute driver."""

from __future__ import annotations

import trio
import trio.testing

from depin_p2p import wire
from depin_p2p.clock import Clock
from depin_p2p.witness import compute, radio
from depin_p2p.witness.devices import (
    ComputeDriver,
    LocalComputeDriver,
    RadioDriver,
    SimulatedCompute,
    SimulatedRadio,
)
from depin_p2p.witness.world import World
from tests.unit.witness import support as s

BK, WK = s.key("drv-beaconer"), s.key("drv-witness")
B_DEV = s.radio_device(BK, s.cell(s.SF_LAT, s.SF_LNG))
W_DEV = s.radio_device(WK, s.cell(s.SF_LAT + 0.03, s.SF_LNG))
CW, PK = s.key("drv-challenger"), s.key("drv-provider")
P_DEV = s.compute_device(PK, owner=s.key("drv-powner").public_key, capacity=4)
REG = s.DictRegistry([B_DEV, W_DEV, P_DEV, s.radio_device(CW, s.cell(s.SF_LAT, s.SF_LNG + 0.1))])
WORLD = World(b"drivers", list(REG.devices.values()))
T0 = 1_700_000_000_000


async def test_simulated_radio_reports_at_the_worlds_time_and_validates(
    autojump_clock: trio.testing.MockClock,
) -> None:
    clock = Clock(wall_anchor_ms=T0)
    beaconer: RadioDriver = SimulatedRadio(
        key=BK, device=B_DEV, world=WORLD, clock=clock, network_id=s.NETWORK
    )
    witness: RadioDriver = SimulatedRadio(
        key=WK, device=W_DEV, world=WORLD, clock=clock, network_id=s.NETWORK
    )
    env = await beaconer.beacon(epoch=1, nonce=5)
    checked = radio.validate_beacon(env, registry=REG, network_id=s.NETWORK)
    report_env = await witness.witness(env)
    assert report_env is not None
    expected = WORLD.hear(checked.beacon, checked.beacon_id, W_DEV)
    assert expected is not None
    assert clock.now_ms() == expected.received_at_ms  # waited in virtual time
    ok = radio.validate_witness_report(
        checked, report_env, registry=REG, network_id=s.NETWORK, now_ms=clock.now_ms()
    )
    assert ok.report.rssi_cdbm == expected.rssi_cdbm


def _challenge(n: int, clock: Clock) -> wire.Envelope:
    now = clock.now_ms()
    ch = compute.Challenge(
        CW.public_key, PK.public_key, 2, b"\x05" * 32, n, compute.MODULUS, now, now + 60_000
    )
    return wire.seal(ch, CW, s.NETWORK)


async def test_simulated_compute_takes_the_worlds_time(autojump_clock: trio.testing.MockClock) -> None:
    clock = Clock(wall_anchor_ms=T0)
    for faulty, outcome in ((False, compute.Outcome.PASSED), (True, compute.Outcome.WRONG_RESULT)):
        driver: ComputeDriver = SimulatedCompute(
            key=PK, world=WORLD, clock=clock, network_id=s.NETWORK, faulty=faulty
        )
        env = _challenge(64, clock)
        pending = compute.prepare_challenge(env, witness_secret=b"drv")
        answer = await driver.answer(env)
        assert answer.elapsed_ms == WORLD.compute_ms(PK.public_key, 64)
        att = compute.judge_response(
            pending, answer.envelope, registry=REG, network_id=s.NETWORK, now_ms=clock.now_ms()
        )
        assert att.outcome is outcome
        assert att.elapsed_ms == answer.elapsed_ms


async def test_local_compute_driver_really_multiplies_and_times_it() -> None:
    clock = Clock(wall_anchor_ms=T0)  # trio's real clock: the work takes real time
    driver: ComputeDriver = LocalComputeDriver(key=PK, clock=clock, network_id=s.NETWORK)
    env = _challenge(256, clock)
    pending = compute.prepare_challenge(env, witness_secret=b"drv")
    with trio.fail_after(30):
        answer = await driver.answer(env)
    elapsed = compute.validate_response(
        pending, answer.envelope, registry=REG, network_id=s.NETWORK, now_ms=clock.now_ms()
    )
    assert answer.elapsed_ms >= 1  # 16.7 M multiply-adds cannot take under a millisecond
    assert elapsed >= answer.elapsed_ms

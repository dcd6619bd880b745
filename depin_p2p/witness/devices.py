"""Device drivers: the interface the witness service talks to, simulated and real.

A radio driver beacons and reports what it hears; a compute driver answers
challenges. Simulated drivers take their physics from a seeded
:class:`~depin_p2p.witness.world.World` and wait in the node's
:class:`~depin_p2p.clock.Clock`, so under ``trio.testing.MockClock`` a whole
fleet runs in virtual time. :class:`LocalComputeDriver` does the real work
on this machine (numpy, in a worker thread) and reports the time it took.

Cancellation: every method is a plain trio checkpoint; cancelling it drops
the pending beacon, report or answer (a worker thread already multiplying
finishes in the background and its result is discarded).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import trio

from depin_p2p import wire
from depin_p2p.clock import Clock
from depin_p2p.crypto import KeyPair
from depin_p2p.model import Device
from depin_p2p.witness import compute, radio
from depin_p2p.witness.world import World


@dataclass(frozen=True, slots=True)
class ComputeAnswer:
    """A signed response and how long the device took (ms, by the node's clock)."""

    envelope: wire.Envelope
    elapsed_ms: int


class RadioDriver(Protocol):
    """A radio device: it beacons and witnesses other beacons."""

    @property
    def device_id(self) -> bytes: ...

    async def beacon(self, *, epoch: int, nonce: int) -> wire.Envelope:
        """Send a beacon now; return the signed beacon."""
        ...

    async def witness(self, beacon_envelope: wire.Envelope) -> wire.Envelope | None:
        """Listen for a beacon; return the signed report once received, or None if not heard."""
        ...


class ComputeDriver(Protocol):
    """A compute device: it answers challenges."""

    @property
    def device_id(self) -> bytes: ...

    async def answer(self, challenge_envelope: wire.Envelope) -> ComputeAnswer:
        """Compute the product the challenge asks for and return the signed response."""
        ...


class SimulatedRadio:
    """A radio device of the seeded world; implements :class:`RadioDriver`."""

    def __init__(self, *, key: KeyPair, device: Device, world: World, clock: Clock, network_id: str) -> None:
        if key.public_key != device.device_id:
            raise ValueError("the key does not match the device")
        self._key, self._device, self._world = key, device, world
        self._clock, self._network_id = clock, network_id

    @property
    def device_id(self) -> bytes:
        return self._device.device_id

    async def beacon(self, *, epoch: int, nonce: int) -> wire.Envelope:
        d = self._device
        b = radio.Beacon(
            d.device_id,
            epoch,
            nonce,
            d.location,
            d.frequency_hz,
            d.tx_power_cdbm,
            d.gain_cdbi,
            self._clock.now_ms(),
        )
        await trio.lowlevel.checkpoint()
        return wire.seal(b, self._key, self._network_id)

    async def witness(self, beacon_envelope: wire.Envelope) -> wire.Envelope | None:
        beacon = wire.decode_as(beacon_envelope.body, radio.Beacon)
        bid = radio.beacon_id(beacon_envelope)
        heard = self._world.hear(beacon, bid, self._device)
        if heard is None:
            await trio.lowlevel.checkpoint()
            return None
        await self._clock.sleep_until_ms(heard.received_at_ms)
        report = radio.WitnessReport(
            self.device_id, bid, heard.rssi_cdbm, heard.snr_cdb, heard.frequency_hz, heard.received_at_ms
        )
        return wire.seal(report, self._key, self._network_id)


class SimulatedCompute:
    """A compute device of the seeded world; implements :class:`ComputeDriver`.

    It computes the real product (so honest answers verify) but takes the
    world's time for it. ``faulty`` devices corrupt one entry, as a cheater
    skipping work would.
    """

    def __init__(
        self, *, key: KeyPair, world: World, clock: Clock, network_id: str, faulty: bool = False
    ) -> None:
        self._key, self._world, self._clock = key, world, clock
        self._network_id, self._faulty = network_id, faulty

    @property
    def device_id(self) -> bytes:
        return self._key.public_key

    async def answer(self, challenge_envelope: wire.Envelope) -> ComputeAnswer:
        start = self._clock.now_ms()
        challenge = wire.decode_as(challenge_envelope.body, compute.Challenge)
        # Inline, not in a worker thread: the world, not this machine, says how long the work
        # takes, and a thread would let a mock clock jump by however long the machine took.
        response = compute.respond(challenge, challenge_envelope)
        if self._faulty:
            product = np.frombuffer(response.product, dtype="<u4").copy()
            product[0] = (int(product[0]) + 1) % challenge.modulus
            response = compute.Response(response.provider, response.challenge_id, product.tobytes())
        await self._clock.sleep_until_ms(start + self._world.compute_ms(self.device_id, challenge.n))
        return ComputeAnswer(wire.seal(response, self._key, self._network_id), self._clock.now_ms() - start)


class LocalComputeDriver:
    """The real thing: multiplies the matrices on this machine; implements :class:`ComputeDriver`."""

    def __init__(self, *, key: KeyPair, clock: Clock, network_id: str) -> None:
        self._key, self._clock, self._network_id = key, clock, network_id

    @property
    def device_id(self) -> bytes:
        return self._key.public_key

    async def answer(self, challenge_envelope: wire.Envelope) -> ComputeAnswer:
        start = self._clock.now_ms()
        challenge = wire.decode_as(challenge_envelope.body, compute.Challenge)
        # A worker thread keeps the event loop serving peers while numpy multiplies.
        response = await trio.to_thread.run_sync(compute.respond, challenge, challenge_envelope)
        envelope = wire.seal(response, self._key, self._network_id)
        return ComputeAnswer(envelope, self._clock.now_ms() - start)

"""Compute roles: a node's own compute provider cheating on challenges.

Each wraps the node's compute drivers (:class:`depin_p2p.witness.devices.ComputeDriver`).
Caught by the honest witnesses' attestations (their outcome, as committed by
consensus), which credit the provider nothing.

- ``wrong-result``: answers with one entry of the product wrong, as a
  provider skipping the work would. Caught as ``attested_wrong_result``.
- ``lazy-provider``: answers only after the challenge's deadline. Caught as
  ``attested_deadline_missed`` (or ``attested_no_response``).
- ``sybil-capacity``: registers 3 compute devices (keys it holds) claiming
  1,000,000 capacity units each, over the bound every device record is held
  to (``MAX_COMPUTE_CAPACITY``, 1024). Its transactions pass the pool (which
  checks envelopes, not device records) and are committed, skipped by the
  ledger with ``bad_device_params``: no device is registered, its nonce is
  spent, nothing is earned. Counted from the honest ledgers' skipped
  transactions signed by its key.
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np

from depin_p2p import wire
from depin_p2p.assemble import Devices
from depin_p2p.crypto import KeyPair
from depin_p2p.ledger.state import RegisterDevice, sign_device_binding
from depin_p2p.model import DeviceKind
from depin_p2p.witness import compute
from depin_p2p.witness.devices import ComputeAnswer, ComputeDriver
from devnet.adversaries.base import Host, Role

SYBILS = 3
HUGE_CAPACITY = 1_000_000  # units; a device may claim at most MAX_COMPUTE_CAPACITY (1024)


class _CheatingCompute:
    """An honest compute driver whose answers the role alters (re-signed by the device)."""

    def __init__(self, inner: ComputeDriver, key: KeyPair, host: Host, role: _ComputeCheat) -> None:
        self._inner, self._key, self._host, self._role = inner, key, host, role

    @property
    def device_id(self) -> bytes:
        return self._inner.device_id

    async def answer(self, challenge_envelope: wire.Envelope) -> ComputeAnswer:
        answer = await self._inner.answer(challenge_envelope)
        if not self._role.active(self._host):
            return answer
        return await self._role.cheat(self._host, self._key, challenge_envelope, answer)


class _ComputeCheat(Role):
    family = "compute"

    async def cheat(
        self, host: Host, key: KeyPair, challenge_envelope: wire.Envelope, answer: ComputeAnswer
    ) -> ComputeAnswer:
        raise NotImplementedError

    def devices(self, host: Host, devices: Devices) -> Devices:
        computes: dict[bytes, ComputeDriver] = {
            k: _CheatingCompute(d, devices.keys[k], host, self) for k, d in devices.computes.items()
        }
        return dataclasses.replace(devices, computes=computes)


class WrongResult(_ComputeCheat):
    name = "wrong-result"
    summary = "answers challenges with a wrong product"
    codes = frozenset({"attested_wrong_result"})

    async def cheat(
        self, host: Host, key: KeyPair, challenge_envelope: wire.Envelope, answer: ComputeAnswer
    ) -> ComputeAnswer:
        challenge = wire.decode_as(challenge_envelope.body, compute.Challenge)
        response = wire.decode_as(answer.envelope.body, compute.Response)
        product = np.frombuffer(response.product, dtype="<u4").copy()
        product[0] = (int(product[0]) + 1) % challenge.modulus
        wrong = compute.Response(response.provider, response.challenge_id, product.tobytes())
        host.attack.note("wrong_products", host.clock.now_ms())
        return ComputeAnswer(wire.seal(wrong, key, host.network_id), answer.elapsed_ms)


class LazyProvider(_ComputeCheat):
    name = "lazy-provider"
    summary = "misses challenge deadlines"
    codes = frozenset({"attested_deadline_missed", "attested_no_response"})

    async def cheat(
        self, host: Host, key: KeyPair, challenge_envelope: wire.Envelope, answer: ComputeAnswer
    ) -> ComputeAnswer:
        challenge = wire.decode_as(challenge_envelope.body, compute.Challenge)
        host.attack.note("late_answers", host.clock.now_ms())
        start = host.clock.now_ms() - answer.elapsed_ms
        await host.clock.sleep_until_ms(max(host.clock.now_ms(), challenge.deadline_ms + 200))
        return ComputeAnswer(answer.envelope, host.clock.now_ms() - start)


class SybilCapacity(Role):
    """Registers compute devices claiming a capacity no device may claim (MAX_COMPUTE_CAPACITY
    is 1024 units): challenges sized by capacity would otherwise make its claim cheap to pass
    and every passed unit a reward share."""

    name = "sybil-capacity"
    family = "compute"
    summary = f"registers {SYBILS} compute devices claiming {HUGE_CAPACITY:,} capacity units each"
    codes = frozenset({"bad_device_params"})

    async def run(self, host: Host) -> None:
        while not self.active(host):
            await host.clock.sleep_until_ms(host.clock.now_ms() + 500)
        for k in range(SYBILS):
            seed = hashlib.blake2b(host.key.seed + b"sybil" + bytes([k]), digest_size=32).digest()
            device = KeyPair.from_seed(seed)
            tx = RegisterDevice(
                nonce=host.next_nonce(),
                device_id=device.public_key,
                kind=DeviceKind.COMPUTE,
                location=0,
                frequency_hz=0,
                tx_power_cdbm=0,
                gain_cdbi=0,
                capacity=HUGE_CAPACITY,
                device_signature=sign_device_binding(device, host.key.public_key, host.network_id),
            )
            host.attack.note("huge_registrations", host.clock.now_ms())
            await host.submit_tx(wire.encode(wire.seal(tx, host.key, host.network_id)))


ROLES: tuple[type[Role], ...] = (WrongResult, LazyProvider, SybilCapacity)

"""Compute roles: a node's own compute provider cheating on challenges.

Each wraps the node's compute drivers (:class:`depin_p2p.witness.devices.ComputeDriver`).
Caught by the honest witnesses' attestations (their outcome, as committed by
consensus), which credit the provider nothing.

- ``wrong-result``: answers with one entry of the product wrong, as a
  provider skipping the work would. Caught as ``attested_wrong_result``.
- ``lazy-provider``: answers only after the challenge's deadline. Caught as
  ``attested_deadline_missed`` (or ``attested_no_response``).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from depin_p2p import wire
from depin_p2p.assemble import Devices
from depin_p2p.crypto import KeyPair
from depin_p2p.witness import compute
from depin_p2p.witness.devices import ComputeAnswer, ComputeDriver
from devnet.adversaries.base import Host, Role


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


ROLES: tuple[type[Role], ...] = (WrongResult, LazyProvider)

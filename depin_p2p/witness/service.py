"""The node's witnessing: its devices beacon, witness, challenge and answer; proofs go to the pool.

Per epoch, each of this node's radio devices beacons once, at an offset in
the first half of the epoch derived from its id (so beacons spread out, and
the same way on every run). Every beacon the node hears (its own, or from the
proofs topic) is offered to its other radio devices; what they hear they
report. A quarter into the epoch, each compute assignment whose witness
device is this node's sends a challenge to the provider's node over the
``/challenge/1`` protocol, judges the answer with Freivalds' check, and
publishes the signed attestation. The provider side answers challenges for
this node's compute devices. Everything heard or made lands in the
:class:`~depin_p2p.witness.pool.ProofPool`.

Only a proven offence costs a peer. Nodes commit an epoch at slightly
different moments, so a challenge may come from a witness one commit ahead
of us or behind us, or for a device our owner registered but does not run
here (the README's ``device register`` before a restart with its key). The
provider side therefore answers ``Ignore`` (no penalty) for everything that
depends on when we committed or on what we run: ``provider_not_served``,
``wrong_epoch``, ``not_ready``, ``ledger_ahead``, ``duplicate_challenge``;
and ``Reject`` only for what no honest witness can send once both sides
hold the ledger the assignment was drawn from: a malformed or wrongly
signed challenge, one from a device not assigned to this provider, or of
another size than its registered capacity sets.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog
import trio

from depin_p2p import wire
from depin_p2p.clock import Clock
from depin_p2p.crypto import KeyPair
from depin_p2p.errors import CodecError, DepinError, Ignore, Reject, TransportError, ValidationError
from depin_p2p.gossip.service import ProofGossip
from depin_p2p.gossip.transport import CHALLENGE, PeerId, Transport, protocol
from depin_p2p.gossip.validation import GossipRule, TimeWindow
from depin_p2p.model import Device, DeviceRegistry, Validator
from depin_p2p.schedule import EpochSchedule
from depin_p2p.witness import compute, radio
from depin_p2p.witness.assign import ComputeAssignment, assign_compute_witnesses
from depin_p2p.witness.candidates import potential_witnesses
from depin_p2p.witness.devices import ComputeDriver, RadioDriver
from depin_p2p.witness.pool import FAR_EPOCHS, ProofPool

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = structlog.get_logger("depin_p2p.witness")

CHALLENGE_TIMEOUT_S = 10.0
CHALLENGE_DEADLINE_MS = compute.CHALLENGE_DEADLINE_MS  # half the timeout: a late answer is still judged
COMMIT_POLL_MS = 250  # without a commit event: how often the pool learns our committed epoch
MAX_CONCURRENT_WITNESSING = 64
MAX_CHALLENGE_BYTES = 4 * 1024
MAX_RESPONSE_BYTES = 2 * 1024 * 1024  # a u32 product at the largest n, plus framing


def proof_rules(epoch_length_ms: int) -> dict[int, GossipRule]:
    """What the proofs topic carries, by wire type id, with local-clock arrival windows.

    A proof outside its window by more than :data:`~depin_p2p.witness.pool.FAR_EPOCHS`
    epochs as well is ``far_out_of_window`` (gossip charges its forwarder).
    """
    window, far = epoch_length_ms * 2, epoch_length_ms * FAR_EPOCHS
    beacon_window = TimeWindow(lambda m: m.sent_at_ms, window, 30_000, far)  # type: ignore[attr-defined]
    report_window = TimeWindow(lambda m: m.received_at_ms, window, 30_000, far)  # type: ignore[attr-defined]
    return {
        wire.info_of(radio.Beacon).type_id: GossipRule(wire.Domain.BEACON, beacon_window),
        wire.info_of(radio.WitnessReport).type_id: GossipRule(wire.Domain.WITNESS, report_window),
        wire.info_of(compute.Attestation).type_id: GossipRule(wire.Domain.COMPUTE_ATTESTATION),
    }


@dataclass(frozen=True, slots=True)
class LedgerContext:
    """What witnessing needs from the last committed ledger state."""

    registry: DeviceRegistry
    devices: tuple[Device, ...]
    validators: tuple[Validator, ...]  # with their bonded stake: compute witnesses are drawn by stake
    prev_cert_hash: bytes
    epoch: int = 0  # the last committed epoch; assignments of epoch e need e - 1 committed


def _offset_ms(device_id: bytes, epoch: int, span_ms: int) -> int:
    h = hashlib.blake2b(device_id + epoch.to_bytes(8, "big"), digest_size=8).digest()
    return int.from_bytes(h, "big") % max(1, span_ms)


def _beyond_reach(beaconer: Device, witness: Device) -> bool:
    """Registered more than ``radio.MAX_DISTANCE_M`` apart (or a location without geometry), or
    closer than ``radio.MIN_CELL_DISTANCE`` res-11 cells: consensus refuses a report either way."""
    try:
        a, b = radio.cell_geo(beaconer.location), radio.cell_geo(witness.location)
        d_mm = radio.distance_mm(a, b)
    except Reject:
        return True
    return d_mm is None or d_mm // 1000 > radio.MAX_DISTANCE_M or radio.is_too_close(a, b, d_mm)


class WitnessService:
    """Drives this node's devices; see the module docstring.

    Args:
        network_id: our network.
        clock: the node's clock.
        schedule: epoch boundaries.
        transport: for challenges (request/response).
        gossip: the proofs topic.
        pool: where proofs go.
        context: the ledger context of the last committed epoch (called per use).
        radios: this node's radio drivers.
        computes: this node's compute drivers, by device id.
        device_keys: keys of this node's devices (radio devices sign challenges
            and attestations when they are compute witnesses).
        peer_of: the peer that serves a device owner's challenges.
        committed: the event the next commit sets (None: poll).
        reach: connects us to a peer before a challenge (the peer manager's ``reach``).
        signed: told of each proof our devices sign (into the signature cache: never verified).
    """

    def __init__(
        self,
        *,
        network_id: str,
        clock: Clock,
        schedule: EpochSchedule,
        transport: Transport,
        gossip: ProofGossip,
        pool: ProofPool,
        context: Callable[[], LedgerContext],
        radios: Sequence[RadioDriver],
        computes: Mapping[bytes, ComputeDriver],
        device_keys: Mapping[bytes, KeyPair],
        peer_of: Callable[[bytes], PeerId],
        committed: Callable[[], trio.Event] | None = None,
        reach: Callable[[PeerId], Awaitable[bool]] | None = None,
        signed: Callable[[wire.Envelope], None] = lambda env: None,
    ) -> None:
        self._signed = signed
        self._reach = reach  # dial the provider's node first when not connected (a partial mesh)
        self._committed = committed  # the event the next commit sets (None: poll every 50 ms)
        self._net, self._clock, self._schedule = network_id, clock, schedule
        self._transport, self._gossip, self._pool, self._context = transport, gossip, pool, context
        self._radios = list(radios)
        self._computes = dict(computes)
        self._keys = dict(device_keys)
        self._peer_of = peer_of
        self._limiter = trio.CapacityLimiter(MAX_CONCURRENT_WITNESSING)
        self._challenge_protocol = protocol(network_id, CHALLENGE)
        self.beacons_sent = 0
        self.reports_sent = 0
        self.reports_skipped = 0
        self._potential_of = -1  # registry size the pool's potential-witness counts are from
        self.attestations_sent = 0
        self.challenges_answered = 0
        self.challenges_failed = 0
        # (epoch, witness, provider) already served: an assigned witness gets one answer per epoch.
        self._served: set[tuple[int, bytes, bytes]] = set()

    # ------------------------------------------------------------------ run

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve challenges, witness heard beacons and run the per-epoch schedule until cancelled.

        Cancellation: in-flight challenges and reports are abandoned.
        """
        self._transport.set_handler(
            self._challenge_protocol, self._on_challenge, max_request_bytes=MAX_CHALLENGE_BYTES
        )
        self._note_commit()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._consume, nursery)
            nursery.start_soon(self._epochs, nursery)
            nursery.start_soon(self._track_commits)
            task_status.started()

    async def _track_commits(self) -> None:
        """Keep the pool's view of our committed epoch current (it judges unknown devices by it)."""
        while True:
            if self._committed is None:
                await self._clock.sleep_until_ms(self._clock.now_ms() + COMMIT_POLL_MS)
            else:
                await self._committed().wait()
            self._note_commit()

    def _note_commit(self) -> None:
        """Tell the pool what we committed: it judges unknown devices and ranks reports by it."""
        ctx = self._context()
        self._pool.committed_epoch = ctx.epoch
        self._pool.chain_head = (ctx.epoch, ctx.prev_cert_hash)
        if len(ctx.devices) != self._potential_of:  # the registry grew: count again (O(radios²))
            self._pool.potential = potential_witnesses(ctx.devices)
            self._potential_of = len(ctx.devices)

    async def _consume(self, nursery: trio.Nursery) -> None:
        async for proof in self._gossip.received:
            self._accept(proof.verified, nursery)

    def _accept(self, verified: wire.Verified, nursery: trio.Nursery) -> None:
        self._pool.add(verified)
        msg = verified.message
        if isinstance(msg, radio.Beacon) and msg.epoch == self._schedule.epoch_at(self._clock.now_ms()):
            registry = self._context().registry
            beaconer = registry.get_device(msg.device)
            for driver in self._radios:
                if driver.device_id == msg.device:
                    continue
                mine = registry.get_device(driver.device_id)
                if beaconer is not None and mine is not None and mine.owner == beaconer.owner:
                    continue  # consensus rejects a sibling's report [same_owner]: do not send it
                if beaconer is not None and mine is not None and _beyond_reach(beaconer, mine):
                    continue  # nor one from over 100 km [too_far] or next door [too_close]: a ban
                nursery.start_soon(self._witness, driver, verified.envelope)

    def _publish(self, env: wire.Envelope, nursery: trio.Nursery) -> None:
        self._signed(env)
        self._gossip.submit(wire.encode(env))
        self._accept(wire.Verified(wire.decode(env.body), env.signer, env), nursery)

    async def _witness(self, driver: RadioDriver, beacon_env: wire.Envelope) -> None:
        bid = radio.beacon_id(beacon_env)
        async with self._limiter:
            if not self._pool.wants_report(bid, driver.device_id):
                self.reports_skipped += 1  # enough better lottery tickets already: no one keeps ours
                return
            report = await driver.witness(beacon_env)
        if report is not None and not self._pool.wants_report(bid, driver.device_id):
            self.reports_skipped += 1  # better ones came while we listened
            return
        if report is not None:
            self._signed(report)
            self._gossip.submit(wire.encode(report))
            self._pool.add(wire.Verified(wire.decode(report.body), report.signer, report))
            self.reports_sent += 1

    async def _epochs(self, nursery: trio.Nursery) -> None:
        epoch = max(1, self._schedule.epoch_at(self._clock.now_ms()))
        while True:  # an epoch's work runs beside the next one's: a challenge waiting out its
            self._pool.current_epoch = epoch  # timeout must not hold the pool's epoch back
            nursery.start_soon(self._epoch_work, epoch, nursery)
            await self._clock.sleep_until_ms(self._schedule.start_of(epoch + 1))
            epoch = max(epoch + 1, self._schedule.epoch_at(self._clock.now_ms()))

    async def _epoch_work(self, epoch: int, nursery: trio.Nursery) -> None:
        start, length = self._schedule.start_of(epoch), self._schedule.epoch_length_ms
        with trio.move_on_at(self._clock.deadline_for(self._schedule.start_of(epoch + 2))):
            async with trio.open_nursery() as tasks:
                for driver in self._radios:
                    at = start + _offset_ms(driver.device_id, epoch, length // 2)
                    tasks.start_soon(self._beacon_at, driver, epoch, at, nursery)
                tasks.start_soon(self._challenge_all, epoch, start + length // 4)

    async def _beacon_at(self, driver: RadioDriver, epoch: int, at_ms: int, nursery: trio.Nursery) -> None:
        if self._clock.now_ms() > at_ms + self._schedule.epoch_length_ms // 2:
            return  # started late in this epoch: skip rather than beacon out of time
        await self._clock.sleep_until_ms(at_ms)
        env = await driver.beacon(epoch=epoch, nonce=0)
        self._publish(env, nursery)
        self.beacons_sent += 1

    # ------------------------------------------------------------- compute

    def _assignments(self, epoch: int) -> tuple[ComputeAssignment, ...]:
        ctx = self._context()
        return assign_compute_witnesses(
            prev_cert_hash=ctx.prev_cert_hash,
            epoch=epoch,
            devices=ctx.devices,
            validators=ctx.validators,
        )

    async def _challenge_all(self, epoch: int, at_ms: int) -> None:
        await self._clock.sleep_until_ms(at_ms)
        # Epoch e's assignments are drawn from e - 1's certificate: wait (bounded) until it is
        # committed here, or the witness and the provider would draw different assignments.
        give_up = self._schedule.start_of(epoch) + self._schedule.epoch_length_ms // 2
        while self._context().epoch < epoch - 1:
            if self._clock.now_ms() >= give_up:
                log.info("witness.challenge.skipped", epoch=epoch, reason="previous_epoch_not_committed")
                return
            with trio.move_on_at(self._clock.deadline_for(give_up)):
                if self._committed is None:
                    await self._clock.sleep_until_ms(self._clock.now_ms() + 50)
                else:
                    await self._committed().wait()
        if self._schedule.epoch_at(self._clock.now_ms()) != epoch:
            return
        async with trio.open_nursery() as nursery:
            for assignment in self._assignments(epoch):
                for witness in assignment.witnesses:
                    if witness in self._keys:
                        nursery.start_soon(self._challenge, epoch, assignment, witness)

    async def _challenge(self, epoch: int, assignment: ComputeAssignment, witness: bytes) -> None:
        key = self._keys[witness]
        ctx = self._context()
        provider = ctx.registry.get_device(assignment.provider)
        if provider is None:
            return
        target = self._peer_of(provider.owner)
        if self._reach is not None:
            await self._reach(target)  # before the challenge is issued: the dial is not the provider's time
        now = self._clock.now_ms()
        seed = hashlib.blake2b(
            key.seed + epoch.to_bytes(8, "big") + assignment.provider, digest_size=32
        ).digest()
        deadline = now + CHALLENGE_DEADLINE_MS
        challenge = compute.Challenge(
            witness,
            assignment.provider,
            epoch,
            seed,
            compute.challenge_size(provider.capacity),  # only this size counts in consensus
            compute.MODULUS,
            now,
            deadline,
        )
        ch_env = wire.seal(challenge, key, self._net)
        pending = compute.prepare_challenge(ch_env, witness_secret=key.seed)
        answer: wire.Envelope | None = None
        try:
            data = await self._transport.request(
                target,
                self._challenge_protocol,
                wire.encode(ch_env),
                timeout=CHALLENGE_TIMEOUT_S,
                max_response_bytes=MAX_RESPONSE_BYTES,
            )
            answer = wire.decode_as(data, wire.Envelope)
        except (TransportError, CodecError) as exc:
            log.info("witness.challenge.unanswered", provider=assignment.provider.hex()[:16], error=str(exc))
        try:
            att = compute.judge_response(
                pending, answer, registry=ctx.registry, network_id=self._net, now_ms=self._clock.now_ms()
            )
        except ValidationError as exc:
            # A forged or stranger's response says nothing about the provider: no attestation.
            log.info("witness.challenge.bad_response", code=exc.code)
            return
        env = wire.seal(att, key, self._net)
        self._signed(env)
        self._gossip.submit(wire.encode(env))
        self._pool.add(wire.Verified(att, env.signer, env))
        self.attestations_sent += 1

    async def _on_challenge(self, peer: PeerId, data: bytes) -> bytes:
        """Provider side: check the challenge, do the work, return the signed response.

        Raises Ignore when the verdict would depend on when we committed or on
        which drivers we run, Reject only for what no honest witness sends
        (see the module docstring).
        """
        try:
            env = wire.decode_as(data, wire.Envelope)
            claimed = wire.decode_as(env.body, compute.Challenge)
        except CodecError as exc:
            raise Reject("malformed", str(exc)) from None
        driver = self._computes.get(claimed.provider)
        if driver is None:
            # Registered to our owner but not run here (yet), or a device we never heard of
            # because the witness is a commit ahead: nothing to answer, nobody to blame.
            raise Ignore("provider_not_served", "this node runs no driver for that device")
        epoch = self._schedule.epoch_at(self._clock.now_ms())
        if claimed.epoch != epoch:
            # Sent near an epoch boundary, or by a clock slightly off ours.
            raise Ignore("wrong_epoch", f"challenge for epoch {claimed.epoch} while {epoch} runs")
        ctx = self._context()
        if ctx.epoch < claimed.epoch - 1:
            # We lag the witness by a commit: we cannot know the assignment yet.
            raise Ignore("not_ready", "the previous epoch is not committed here yet")
        if ctx.epoch > claimed.epoch - 1:
            # Our ledger moved past the state epoch claimed.epoch's assignment was drawn from.
            raise Ignore("ledger_ahead", f"committed {ctx.epoch}, the assignment needs {claimed.epoch - 1}")
        served = (claimed.epoch, claimed.witness, claimed.provider)
        if served in self._served:
            # A witness restarted mid-epoch asks again; one answer per epoch is all it gets.
            raise Ignore("duplicate_challenge", "this witness was already answered this epoch")
        device = ctx.registry.get_device(claimed.provider)
        if device is None:
            raise Ignore("provider_not_registered", "our ledger does not hold this device")
        assigned = {a.provider: a for a in self._assignments(claimed.epoch)}.get(claimed.provider)
        allowed = frozenset(assigned.witnesses) if assigned is not None else frozenset()
        # Both sides now hold the ledger of claimed.epoch - 1: what fails here is proven.
        compute.validate_challenge(
            env,
            provider=claimed.provider,
            network_id=self._net,
            allowed_witnesses=allowed,
            expected_n=compute.challenge_size(device.capacity),
        )
        self._served = {s for s in self._served if s[0] == epoch}
        self._served.add(served)
        try:
            answer = await driver.answer(env)
        except DepinError:
            self.challenges_failed += 1
            raise
        self.challenges_answered += 1
        return wire.encode(answer.envelope)

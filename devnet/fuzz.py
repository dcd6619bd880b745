"""Deterministic fuzz harness for epoch consensus: many validators, one process, virtual time.

``python -m devnet.fuzz --validators 4 --byzantine 1 --seeds 0-99 --json``

Each seed derives, by BLAKE2b(seed ‖ label ‖ counter), a network (per-message
delays that reorder, drops, a partition that heals), crashes and restarts of
honest validators (they come back with their persisted sign-state and
ledger, nothing else), and Byzantine behaviour (equivocating votes,
conflicting proposals to two halves, withholding). ``--mode lock-split``
instead hands the network to an adversary aimed at the lock rule (see
:class:`LockSplit`). Events run from one seeded priority queue in virtual
milliseconds, so a seed replays exactly.

Network model: before GST (global stabilisation time, after the partition
healed) honest links drop and delay; from GST on every message between live
nodes arrives within ``MAX_DELAY_AFTER_GST_MS``. Byzantine nodes' own sends
are delayed but never dropped (they are the adversary's links). All crashed
validators restart by ``GST + MAX_DOWNTIME_MS``.

Checked per seed:
  agreement   no two honest validators decide different values for one epoch;
  validity    no honest validator decides a value the value check rejects;
  honest equivocation   no honest validator ever sends two different messages
              for one (epoch, round, step) (what a crash between send and
              persist would cause);
  liveness    with at most f Byzantine, every honest validator decides every
              epoch within ``LIVENESS_BUDGET_MS`` after the network healed;
  accountability   on a fork, the votes honest nodes saw convict at least f+1
              validators of duplicate votes.

Every node runs :class:`~depin_p2p.consensus.driver.EpochDriver`, the driver
the node's trio service runs; this harness only executes its requests on a
simulated network and in-memory storage (and lets Byzantine nodes rewrite
what they send).

Signatures: Ed25519 with ``--real-signatures``; otherwise a keyed BLAKE2b
stand-in (same checks in the core, ~50x cheaper). The Byzantine code in this
harness never forges, so the stand-in changes no outcome, only speed.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import heapq
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field

from depin_p2p import wire
from depin_p2p.consensus.driver import (
    BuildRequest,
    CertificateIn,
    CheckValue,
    Commit,
    Committed,
    DriverConfig,
    EpochClock,
    EpochDriver,
    EpochDue,
    Head,
    Input,
    InstanceOpened,
    OpenInstance,
    PeerMessage,
    Publish,
    Request,
    SignDenied,
    SignDurably,
    Signed,
    SleepUntil,
    TimeoutFired,
    ValueBuilt,
    ValueChecked,
)
from depin_p2p.consensus.signer import MemorySignStateStore, Signer, SignRefused
from depin_p2p.consensus.state import (
    GENESIS_PREV_HASH,
    Candidate,
    Certificate,
    Precommit,
    Prevote,
    Proposal,
    Rules,
    SignatureVerifier,
    TimeoutKind,
    Timeouts,
    ValidatorSet,
    certificate_hash,
    proposer_for,
    step_of,
    value_id_of,
)
from depin_p2p.crypto import KeyPair
from depin_p2p.errors import CodecError, InternalError, Reject
from depin_p2p.model import Validator

NET = "fuzz-net"
MAX_DELAY_AFTER_GST_MS = 50
MAX_DOWNTIME_MS = 3000
LIVENESS_BUDGET_MS = 120_000
FUTURE_BUFFER = 512
HARNESS_TIMEOUTS = Timeouts(propose_ms=400, prevote_ms=200, precommit_ms=200, delta_ms=100, retransmit_ms=300)
BYZANTINE_MODES = ("split", "equivocate", "withhold", "amnesia")
# Adversaries that also own the network before GST; only ever forced (``--mode``), never drawn.
SCHEDULED_MODES = ("lock-split",)


# --------------------------------------------------------------------------
# Hash-derived randomness


class HashRng:
    """Pseudo-randomness from BLAKE2b(seed ‖ label ‖ counter): reproducible from this docstring alone."""

    def __init__(self, seed: int, label: str) -> None:
        self._prefix = b"depin-p2p/fuzz" + seed.to_bytes(8, "big") + label.encode() + b"\0"
        self._counter = 0

    def bits64(self) -> int:
        self._counter += 1
        data = self._prefix + self._counter.to_bytes(8, "big")
        return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")

    def below(self, n: int) -> int:
        return self.bits64() % n

    def between(self, lo: int, hi: int) -> int:
        """Uniform in [lo, hi]."""
        return lo + self.below(hi - lo + 1)

    def permille(self, p: int) -> bool:
        return self.below(1000) < p

    def shuffled(self, items: list[int]) -> list[int]:
        out = list(items)
        for i in range(len(out) - 1, 0, -1):
            j = self.below(i + 1)
            out[i], out[j] = out[j], out[i]
        return out


# --------------------------------------------------------------------------
# Cheap deterministic signatures for speed (see module docstring)


@dataclass(frozen=True, slots=True)
class FastKey:
    """Implements ``wire.Signer`` with keyed BLAKE2b; verifiable from the public key alone."""

    public_key: bytes

    def sign(self, data: bytes) -> bytes:
        return hashlib.blake2b(data, key=self.public_key, digest_size=64).digest()


def fast_verify(public_key: bytes, data: bytes, signature: bytes) -> None:
    """Verifier for :class:`FastKey` signatures; raises Reject('bad_signature')."""
    if hashlib.blake2b(data, key=public_key, digest_size=64).digest() != signature:
        raise Reject("bad_signature")


_KEYS: dict[int, KeyPair] = {}


def validator_key(index: int) -> KeyPair:
    """Validator ``index``'s Ed25519 key, from a fixed seed."""
    key = _KEYS.get(index)
    if key is None:
        seed = hashlib.blake2b(b"fuzz-validator" + index.to_bytes(4, "big"), digest_size=32).digest()
        key = KeyPair.from_seed(seed)
        _KEYS[index] = key
    return key


# --------------------------------------------------------------------------
# Scenario and results


def quorum_2f(power: int, total: int) -> bool:
    """MUTANT: a quorum of 2f instead of 2f+1 (f = ⌊(total-1)/3⌋)."""
    return power >= 2 * ((total - 1) // 3)


@dataclass(frozen=True, slots=True)
class Scenario:
    """What one fuzz run looks like; mutations are explicit fields, never patches.

    Attributes:
        validators: number of validators (equal power 1 each).
        byzantine: how many of them are Byzantine (which ones is drawn per seed).
        epochs: epochs to decide per seed.
        real_signatures: Ed25519 instead of the keyed-BLAKE2b stand-in.
        rules: consensus rules for honest nodes (mutants: ``Rules(quorum=quorum_2f)``, ...).
        persist_before_send: False is the mutant that broadcasts a vote before its
            sign-state is durable (a crash in between forgets it).
        byzantine_mode: force one behaviour for all Byzantine nodes; None picks per seed.
            ``"lock-split"`` also gives the network to :class:`LockSplit` (with or
            without Byzantine nodes).
        faults: drops, partitions and crashes before GST (False: a clean network, for latency).
        fixed_delay_ms: with ``faults=False``, every message takes this long (± ``jitter_ms``).
        jitter_ms: with ``faults=False``, delays are uniform in fixed ± jitter.
        crash_permille: chance of a crash at each effect an honest node executes before GST.
        epoch_interval_ms: epoch e starts at e · interval (or on deciding e-1, if later).
    """

    validators: int = 4
    byzantine: int = 0
    epochs: int = 3
    real_signatures: bool = False
    rules: Rules = field(default_factory=Rules)
    persist_before_send: bool = True
    byzantine_mode: str | None = None
    faults: bool = True
    fixed_delay_ms: int = 10
    jitter_ms: int = 0
    crash_permille: int = 8
    epoch_interval_ms: int = 2500


@dataclass(slots=True)
class SeedResult:
    """Outcome of one seed (JSON-ready through ``dataclasses.asdict``)."""

    seed: int
    byzantine: list[int]
    modes: list[str]
    decided_epochs: int  # epochs decided by every honest validator
    rounds: list[int]  # highest round any honest validator decided in, per epoch
    messages: int
    crashes: int
    gst_ms: int
    agreement_violations: list[int]  # epochs with two different honest decisions
    invalid_decisions: list[int]  # epochs where an honest validator decided an invalid value
    honest_equivocators: list[int]
    liveness_ok: bool
    convicted: list[int]  # validators convicted by votes honest nodes saw
    latency_ms: list[int]  # per epoch: first honest start to first honest decision

    @property
    def forked(self) -> bool:
        return bool(self.agreement_violations)

    @property
    def violation(self) -> bool:
        return bool(
            self.agreement_violations
            or self.invalid_decisions
            or self.honest_equivocators
            or not self.liveness_ok
        )


# --------------------------------------------------------------------------
# The simulation


class LazyStore(MemorySignStateStore):
    """MUTANT store: ``save`` returns before the bytes are durable; ``flush`` makes them so.

    The harness flushes after it has broadcast, so a crash in between loses
    what was signed: "send before persist".
    """

    def __init__(self) -> None:
        super().__init__()
        self.pending: bytes | None = None

    def save(self, data: bytes) -> None:
        self.pending = data

    def flush(self) -> None:
        if self.pending is not None:
            self.data, self.pending = self.pending, None

    def lose(self) -> None:
        self.pending = None


class Crashed(Exception):
    """Raised inside effect execution when the schedule crashes the node at that point."""


@dataclass(slots=True)
class Node:
    index: int
    key: wire.Signer
    honest: bool
    mode: str
    store: MemorySignStateStore
    ledger: dict[int, Certificate] = field(default_factory=dict)
    up: bool = True
    incarnation: int = 0
    crashes: int = 0
    signer: Signer | None = None
    driver: EpochDriver | None = None  # the node's own epoch driver: the one the trio service runs
    replied: dict[tuple[int, int], int] = field(default_factory=dict)

    @property
    def address(self) -> bytes:
        return self.key.public_key

    @property
    def epoch(self) -> int:
        return len(self.ledger)


@dataclass(frozen=True, slots=True)
class Deliver:
    to: int
    frm: int
    item: wire.Envelope | Certificate


@dataclass(frozen=True, slots=True)
class Timer:
    """A driver's ``SleepUntil`` coming due (ignored if the node restarted meanwhile)."""

    node: int
    incarnation: int
    then: TimeoutFired | EpochDue


@dataclass(frozen=True, slots=True)
class Boot:
    node: int


Event = Deliver | Timer | Boot


def _decode_consensus(env: wire.Envelope) -> Proposal | Prevote | Precommit | None:
    try:
        msg = wire.decode(env.body)
    except CodecError:
        return None
    return msg if isinstance(msg, Proposal | Prevote | Precommit) else None


# --------------------------------------------------------------------------
# The lock-split adversary


@dataclass(frozen=True, slots=True)
class LockSplitPlan:
    """Who is told what in the attacked epoch (see :class:`LockSplit`).

    Attributes:
        epoch: the attacked epoch.
        round: r, the round whose polka only some validators see.
        unlocked: the f honest validators kept from round r's proposal (round r+1's
            proposer among them, when it is honest): they never see a polka, never lock.
    """

    epoch: int
    round: int
    unlocked: frozenset[int]


class LockSplit:
    """An adversary aimed at the lock rule (paper lines 23 and 29), for ``--mode lock-split``.

    It owns the network before GST (it drops, never forges) and attacks one
    epoch E, drawn per seed, from its round r on:

    * rounds below r: no proposal is delivered, every validator prevotes nil;
    * round r: the proposal for value A reaches everyone except ``unlocked``
      (f honest validators, the next round's proposer among them), which
      prevote nil; their nil prevotes are dropped, so the other 2f+1 (honest
      and Byzantine) see a polka for A, lock on it and precommit A. The
      decider (the first honest validator to precommit A: it is up and
      locked) has its precommit, and its certificate, reach nobody: it
      alone sees 2f+1 precommits and decides A, the others see 2f for A plus
      f nil and time out into round r+1;
    * round r+1: delivered untouched; its proposer has no valid value and
      proposes a fresh value B (a Byzantine proposer proposes one anyway).

    The 3f validators left in the epoch prevote B only if those locked on A
    ignore their lock: with correct rules at most f unlocked honest plus f
    Byzantine prevote B, short of a quorum; a node that ignores its lock
    makes the polka for B, and B is decided beside A. The Byzantine nodes
    follow the rules except that they ignore their locks, and in a round
    they propose they propose a fresh value and vote for it. While the
    attack runs, only validators it has locked crash (``Simulation.may_crash``):
    each restart must keep the lock.
    """

    def __init__(
        self, seed: int, validators: ValidatorSet, index: dict[bytes, int], honest: list[int], epochs: int
    ) -> None:
        self.rng = HashRng(seed, "lock-split")
        self.validators = validators
        self.index = index  # node index by address
        self.honest = honest
        self.epoch = self.rng.below(epochs)
        self.first_round = self.rng.below(2)
        self.plan: LockSplitPlan | None = None
        self.decider: int | None = None
        self.told_ms: int | None = None  # when all but the decider had left round r+1 (None: GST came first)

    def proposer(self, prev: bytes, round_: int) -> int:
        return self.index[proposer_for(self.validators, prev, self.epoch, round_)]

    def make_plan(self, prev: bytes) -> LockSplitPlan:
        """Fix the roles once epoch E's previous certificate is known (it fixes the proposers)."""
        # The same proposer twice would carry its own round-r proposal into r+1.
        r = next(
            (
                k
                for k in range(self.first_round, self.first_round + 64)
                if self.proposer(prev, k) != self.proposer(prev, k + 1)
            ),
            self.first_round,
        )
        f = (len(self.validators.members) - 1) // 3
        this, nxt = self.proposer(prev, r), self.proposer(prev, r + 1)
        # Round r's proposer has its own proposal, so it cannot be kept from it: it locks.
        others = [i for i in self.honest if i not in (this, nxt)]
        kept = ([nxt] if nxt in self.honest else []) + self.rng.shuffled(others)
        self.plan = LockSplitPlan(self.epoch, r, frozenset(kept[:f]))
        return self.plan

    def window_ms(self, plan: LockSplitPlan, max_delay_ms: int) -> int:
        """A bound on the time from epoch E's start to the end of round r+1 when nothing crashes."""
        t = HARNESS_TIMEOUTS
        return sum(
            t.duration(TimeoutKind.PROPOSE, k)
            + t.duration(TimeoutKind.PREVOTE, k)
            + t.duration(TimeoutKind.PRECOMMIT, k)
            + 4 * max_delay_ms
            for k in range(plan.round + 2)
        )

    def withholds(self, plan: LockSplitPlan, frm: int, to: int, item: wire.Envelope | Certificate) -> bool:
        """Whether the adversary drops ``item`` on the link ``frm`` → ``to`` (before GST)."""
        if isinstance(item, Certificate):
            return item.epoch == plan.epoch and frm == self.decider
        msg = _decode_consensus(item)
        if msg is None or msg.epoch != plan.epoch:
            return False
        if msg.round > plan.round:
            return False
        if isinstance(msg, Proposal):
            return msg.round < plan.round or to in plan.unlocked
        if msg.round < plan.round:
            return False
        signer = self.index.get(item.signer, -1)  # relayed votes are judged by their signer
        if isinstance(msg, Prevote):
            return signer in plan.unlocked
        if self.decider is None and msg.value_id is not None and signer in self.honest:
            self.decider = signer
        return signer == self.decider


class Simulation:
    """One seed of one scenario. ``run()`` returns its :class:`SeedResult`."""

    def __init__(self, scenario: Scenario, seed: int) -> None:
        self.sc = scenario
        self.seed = seed
        self.rng = HashRng(seed, "schedule")
        net = HashRng(seed, "network")
        n = scenario.validators
        keys: list[wire.Signer] = [
            validator_key(i) if scenario.real_signatures else FastKey(validator_key(i).public_key)
            for i in range(n)
        ]
        self.verify: SignatureVerifier = wire.verify_signature if scenario.real_signatures else fast_verify
        self.validators = ValidatorSet.of([Validator(k.public_key, 1) for k in keys])
        self.by_address = {k.public_key: i for i, k in enumerate(keys)}
        byz = sorted(net.shuffled(list(range(n)))[: scenario.byzantine])
        self.byzantine = byz
        self.nodes: list[Node] = []
        for i in range(n):
            honest = i not in byz
            mode = "honest" if honest else (scenario.byzantine_mode or BYZANTINE_MODES[net.below(4)])
            store = MemorySignStateStore() if scenario.persist_before_send or not honest else LazyStore()
            self.nodes.append(Node(i, keys[i], honest, mode, store))
        self.honest = [nd.index for nd in self.nodes if nd.honest]
        # Split attack: the honest validators in two groups that get different stories.
        order = net.shuffled(self.honest)
        self.group_a = set(order[: (len(order) + 1) // 2])
        # Amnesia attack: the one honest validator allowed to decide early.
        self.victim = order[0] if order else -1
        self.amnesia = any(nd.mode == "amnesia" for nd in self.nodes)
        # Network schedule.
        if scenario.faults:
            self.drop_permille = net.between(0, 300)
            self.max_delay = net.between(20, 200)
            self.partition: tuple[int, int, set[int]] | None = None
            if net.permille(500):
                start = net.between(0, 2000)
                side = {i for i in range(n) if net.permille(500)}
                self.partition = (start, start + net.between(500, 8000), side)
            self.gst = max(net.between(1000, 10_000), self.partition[1] if self.partition else 0)
        else:
            self.drop_permille, self.max_delay, self.partition, self.gst = 0, 0, None, 0
        self.lock_split: LockSplit | None = None
        if scenario.faults and scenario.byzantine_mode == "lock-split":
            # Its schedule replaces the random drops and the partition; GST is set once it
            # has picked its roles (at epoch E's first message), this is only a cap.
            self.lock_split = LockSplit(seed, self.validators, self.by_address, self.honest, scenario.epochs)
            self.drop_permille, self.partition = 0, None
            self.gst = (self.lock_split.epoch + 1) * scenario.epoch_interval_ms + 20_000
        self.release: dict[tuple[int, int, int, int], int] = {}
        self.queue: list[tuple[int, int, Event]] = []
        self.seq = 0
        self.now = 0
        self.messages = 0
        self.last_restart = 0
        # Observations.
        self.sent: dict[tuple[int, int, int, int], set[bytes]] = {}  # honest sends by (node, e, r, step)
        self.seen: dict[tuple[bytes, int, int, int], dict[bytes | None, wire.Envelope]] = {}
        self.decided_round: dict[int, int] = {}
        self.epoch_start: dict[int, int] = {}
        self.epoch_decided: dict[int, int] = {}

    # ---------------------------------------------------------------- queue

    def push(self, at: int, event: Event) -> None:
        self.seq += 1
        heapq.heappush(self.queue, (at, self.seq, event))

    def send(self, frm: int, to: int, item: wire.Envelope | Certificate) -> None:
        if to == frm:
            return
        sender_honest = self.nodes[frm].honest
        if self.sc.faults:
            before_gst = self.now < self.gst
            if before_gst and self.lock_split is not None and self.lock_split_drops(frm, to, item):
                return
            if before_gst and sender_honest:
                if self.rng.permille(self.drop_permille):
                    return
                if self.partition is not None:
                    start, end, side = self.partition
                    if start <= self.now < end and ((frm in side) != (to in side)):
                        return
            hi = self.max_delay if before_gst else MAX_DELAY_AFTER_GST_MS
            delay = self.rng.between(1, hi)
            held = self.held_back(item) if self.amnesia and before_gst and frm == self.victim else None
            if held is not None:
                # Before GST the adversary schedules the network: it holds back the victim's
                # precommits and certificates (re-sent copies too, until one release time per
                # link and round) so the victim decides while the others only lock.
                release = self.release.setdefault((frm, to, *held), self.now + self.rng.between(500, 4000))
                delay = max(delay, release - self.now)
        else:
            jitter = self.sc.jitter_ms
            delay = self.sc.fixed_delay_ms + (self.rng.between(-jitter, jitter) if jitter else 0)
        self.push(self.now + delay, Deliver(to, frm, item))

    def lock_split_drops(self, frm: int, to: int, item: wire.Envelope | Certificate) -> bool:
        """Whether the lock-split adversary drops this send; it picks its roles at epoch E's first message."""
        ls = self.lock_split
        assert ls is not None
        plan = ls.plan
        if plan is None:
            msg = item if isinstance(item, Certificate) else _decode_consensus(item)
            if msg is None or msg.epoch != ls.epoch:
                return False
            ledger = self.nodes[frm].ledger  # the sender has committed E-1, or it could not speak in E
            plan = ls.make_plan(certificate_hash(ledger[ls.epoch - 1]) if ls.epoch else GENESIS_PREV_HASH)
            # GST: once the attack is over (see below), at the latest after its window plus
            # time for crashed nodes to come back.
            window = ls.window_ms(plan, self.max_delay) + 3 * MAX_DOWNTIME_MS
            self.gst = self.now + window + self.rng.between(0, 1000)
        elif self.attack_over(plan):
            self.gst = ls.told_ms = self.now
            return False
        return ls.withholds(plan, frm, to, item)

    def attack_over(self, plan: LockSplitPlan) -> bool:
        """Every honest validator has decided epoch E or left its round r+1: the story is told."""
        for i in self.honest:
            node = self.nodes[i]
            if node.epoch > plan.epoch:
                continue
            st = node.driver.state if node.up and node.driver is not None else None
            if st is None or st.params.epoch != plan.epoch or st.round <= plan.round + 1:
                return False
        return True

    @staticmethod
    def held_back(item: wire.Envelope | Certificate) -> tuple[int, int] | None:
        """The (epoch, round) the amnesia adversary holds this item back for, if it does."""
        if isinstance(item, Certificate):
            return (item.epoch, -1)
        msg = _decode_consensus(item)
        return (msg.epoch, msg.round) if isinstance(msg, Precommit) else None

    def broadcast(self, frm: int, item: wire.Envelope | Certificate) -> None:
        for to in range(len(self.nodes)):
            self.send(frm, to, item)

    # ---------------------------------------------------------------- node lifecycle

    def head(self, node: Node) -> Head:
        epoch = node.epoch
        prev = certificate_hash(node.ledger[epoch - 1]) if epoch else GENESIS_PREV_HASH
        return Head(epoch, prev, self.validators)

    def boot(self, node: Node) -> None:
        node.up = True
        node.signer = Signer(node.key, node.store, NET, current_epoch=node.epoch, startup_wait_epochs=0)
        if isinstance(node.store, LazyStore):
            node.store.flush()
        config = DriverConfig(
            network_id=NET,
            me=node.address,
            clock=EpochClock(0, self.sc.epoch_interval_ms),  # epoch e is due at e · interval
            timeouts=HARNESS_TIMEOUTS,
            rules=self.sc.rules if node.honest else Rules(respect_locks=node.mode != "lock-split"),
            signatures=wire.SignatureCache(self.verify),  # a fresh memory per boot, as a process
            future_capacity=FUTURE_BUFFER,
        )
        node.driver = EpochDriver(config, self.head(node))
        node.driver.boot(self.now)
        self.run_requests(node)

    def crash_point(self, node: Node) -> None:
        if (
            self.sc.faults
            and node.honest
            and self.now < self.gst
            and node.crashes < 3
            and self.may_crash(node)
            and self.rng.permille(self.sc.crash_permille)
        ):
            raise Crashed

    def may_crash(self, node: Node) -> bool:
        """During the lock-split attack only validators locked by it crash: the restart must keep the lock."""
        ls = self.lock_split
        if ls is None or ls.plan is None:
            return True
        if node.index == ls.decider:
            return False
        st = node.driver.state if node.driver is not None else None
        return st is not None and st.params.epoch == ls.plan.epoch and st.locked_round >= ls.plan.round

    def crash(self, node: Node) -> None:
        node.up = False
        node.crashes += 1
        node.incarnation += 1
        node.driver = None
        node.signer = None
        if isinstance(node.store, LazyStore):
            node.store.lose()
        at = self.now + self.rng.between(50, MAX_DOWNTIME_MS)
        self.last_restart = max(self.last_restart, at)
        self.push(at, Boot(node.index))

    # ---------------------------------------------------------------- the driver's requests

    def run_requests(self, node: Node) -> None:
        """Execute the driver's requests in order; a crash point may raise Crashed (caught by ``run``)."""
        while node.up and node.driver is not None:
            req = node.driver.next_request(self.now)
            if req is None:
                return
            self.crash_point(node)
            answer = self.execute(node, req)
            if answer is not None and node.up and node.driver is not None:
                node.driver.feed(answer, self.now)

    def execute(self, node: Node, req: Request) -> Input | None:
        """What the trio service does for a request, on the simulated network and storage."""
        if isinstance(req, Publish):
            item = req.item
            if isinstance(item, wire.Envelope):
                self.out(node, item)
                if item.signer == node.address:
                    self.crash_point(node)
                    if isinstance(node.store, LazyStore):
                        node.store.flush()  # the mutant persists only now, after it spoke
            elif isinstance(item, Certificate) and (node.honest or node.mode != "withhold"):
                self.broadcast(node.index, item)
            # Evidence: the harness convicts from everything honest nodes saw (see ``seen``).
        elif isinstance(req, SleepUntil):
            self.push(req.at_ms, Timer(node.index, node.incarnation, req.then))
        elif isinstance(req, OpenInstance):
            return self.open_instance(node, req.epoch)
        elif isinstance(req, BuildRequest):
            return ValueBuilt(req.epoch, req.round, self.value_for(node, req.epoch, req.round))
        elif isinstance(req, CheckValue):
            return ValueChecked(value_id_of(req.candidate), _is_valid(req.candidate))
        elif isinstance(req, SignDurably):
            if not node.honest:
                return Signed(wire.seal(req.message, node.key, NET))
            assert node.signer is not None
            try:
                return Signed(node.signer.sign(req.message, req.lock))
            except SignRefused as exc:
                return SignDenied(exc.code)
        elif isinstance(req, Commit):
            return self.decide(node, req.certificate)
        return None  # PenalisePeer: the harness's links are not scored

    def open_instance(self, node: Node, epoch: int) -> InstanceOpened | None:
        if epoch >= self.sc.epochs:
            return None  # this run is over for the node: never answered, so nothing starts
        assert node.signer is not None
        if node.honest:
            self.epoch_start.setdefault(epoch, self.now)
        s = node.signer
        return InstanceOpened(epoch, s.lock(epoch), s.resume_round(epoch), s.last_signed(epoch))

    def out(self, node: Node, env: wire.Envelope) -> None:
        """Transmit one of the node's own signed messages (Byzantine nodes may rewrite it)."""
        if env.signer != node.address:  # relaying someone's vote (proof of lock): no story to tell
            self.broadcast(node.index, env)
        elif node.honest:
            msg = _decode_consensus(env)
            assert msg is not None
            key = (node.index, msg.epoch, msg.round, int(step_of(msg)))
            self.sent.setdefault(key, set()).add(env.body)
            self.observe(node, env)
            self.broadcast(node.index, env)
        else:
            self.byzantine_out(node, env)

    def decide(self, node: Node, cert: Certificate) -> Committed:
        epoch = cert.epoch
        node.ledger[epoch] = cert  # durable with the ledger, before anything else
        if node.honest:
            self.decided_round[epoch] = max(self.decided_round.get(epoch, 0), cert.round)
            self.epoch_decided.setdefault(epoch, self.now)
            self.observe_certificate(cert)
        return Committed(epoch, self.head(node))

    # ---------------------------------------------------------------- intake

    def receive(self, node: Node, frm: int, item: wire.Envelope | Certificate) -> None:
        assert node.driver is not None
        if isinstance(item, Certificate):
            if node.honest:
                self.observe_certificate(item)
            node.driver.feed(CertificateIn(item, str(frm)), self.now)
        else:
            msg = _decode_consensus(item)
            if msg is None:
                return
            if msg.epoch < node.epoch:
                self.reply_certificate(node, frm, msg.epoch)
                return
            self.observe(node, item)
            node.driver.feed(PeerMessage(item, str(frm)), self.now)
        self.run_requests(node)

    def reply_certificate(self, node: Node, to: int, epoch: int) -> None:
        # Stands in for sync.py: a peer still in an old epoch gets that epoch's certificate.
        last = node.replied.get((to, epoch), -(10**9))
        if self.now - last >= 200 and epoch in node.ledger and (node.honest or node.mode != "withhold"):
            node.replied[(to, epoch)] = self.now
            self.send(node.index, to, node.ledger[epoch])

    def observe(self, node: Node, env: wire.Envelope) -> None:
        """Record a vote an honest node saw: the forensic record for accountability."""
        if not node.honest:
            return
        msg = _decode_consensus(env)
        if isinstance(msg, Prevote | Precommit):
            key = (env.signer, msg.epoch, msg.round, int(step_of(msg)))
            self.seen.setdefault(key, {}).setdefault(msg.value_id, env)

    def observe_certificate(self, cert: Certificate) -> None:
        body = wire.encode(Precommit(cert.epoch, cert.round, cert.value_id))
        for sig in cert.signatures:
            key = (sig.validator, cert.epoch, cert.round, 3)
            env = wire.Envelope(NET, sig.validator, sig.signature, body)
            self.seen.setdefault(key, {}).setdefault(cert.value_id, env)

    # ---------------------------------------------------------------- values and Byzantine behaviour

    def value_for(self, node: Node, epoch: int, round_: int) -> bytes:
        if node.honest:
            return b"ok|%d|%d|%d" % (node.index, epoch, round_)
        return b"ok|A|%d|%d" % (epoch, round_)

    def byzantine_out(self, node: Node, env: wire.Envelope) -> None:
        if node.mode == "withhold":
            return
        msg = _decode_consensus(env)
        st = node.driver.state if node.driver is not None else None
        assert msg is not None and st is not None
        prev = st.params.prev_cert_hash if st.params.epoch == msg.epoch else None
        byz = set(self.byzantine)
        others = [i for i in range(len(self.nodes)) if i != node.index]
        if node.mode == "split" and prev is not None:
            side_a = self.group_a | byz
            alt = self.alternative(node, msg, prev)
            for to in others:
                self.send(node.index, to, env if to in side_a else alt)
        elif node.mode == "amnesia" and prev is not None:
            # Lets the victim decide, then tries to get a fresh value decided by the rest:
            # only locks stop it (correct nodes locked on the victim's value prevote nil).
            alt = self.alternative(node, msg, prev)
            byz_round = self.by_address[proposer_for(self.validators, prev, msg.epoch, msg.round)] in byz
            own_precommit = isinstance(msg, Precommit) and msg.value_id is not None
            for to in others:
                lie = isinstance(msg, Proposal) or byz_round or (own_precommit and to != self.victim)
                self.send(node.index, to, alt if lie else env)
        elif node.mode == "lock-split" and prev is not None:
            # Its driver ignores locks; as a proposer it never re-proposes: a fresh value it votes for.
            byz_round = self.by_address[proposer_for(self.validators, prev, msg.epoch, msg.round)] in byz
            item = self.alternative(node, msg, prev) if byz_round else env
            for to in others:
                self.send(node.index, to, item)
        elif node.mode == "equivocate" and prev is not None:
            alt = self.alternative(node, msg, prev)
            for to in others:
                self.send(node.index, to, env if self.rng.permille(500) else alt)
        else:
            for to in others:
                self.send(node.index, to, env)

    def alternative(self, node: Node, msg: Proposal | Prevote | Precommit, prev: bytes) -> wire.Envelope:
        """The conflicting twin of ``msg``: the B story of the split attack."""
        epoch, round_ = msg.epoch, msg.round
        # The equivocator's second story is an invalid value: correct nodes must prevote nil on it.
        tag = b"bad" if node.mode == "equivocate" else b"ok"
        b_value = Candidate(epoch, prev, b"%s|B|%d|%d" % (tag, epoch, round_))
        alt: Proposal | Prevote | Precommit
        if isinstance(msg, Proposal):
            alt = Proposal(epoch, round_, b_value, None)
        else:
            byz_round = self.by_address[proposer_for(self.validators, prev, epoch, round_)] in self.byzantine
            vid = value_id_of(b_value) if byz_round or msg.value_id is None else None
            alt = Prevote(epoch, round_, vid) if isinstance(msg, Prevote) else Precommit(epoch, round_, vid)
        return wire.seal(alt, node.key, NET)

    # ---------------------------------------------------------------- main loop

    def done(self) -> bool:
        return all(self.nodes[i].epoch >= self.sc.epochs for i in self.honest)

    def run(self) -> SeedResult:
        for node in self.nodes:
            self.push(0, Boot(node.index))
        while self.queue and not self.done():
            at, _, event = heapq.heappop(self.queue)
            if at > max(self.gst, self.last_restart) + LIVENESS_BUDGET_MS:
                break
            self.now = at
            try:
                self.handle(event)
            except Crashed:
                self.crash(self.nodes[event.to if isinstance(event, Deliver) else event.node])
        return self.result()

    def handle(self, event: Event) -> None:
        """Process one queued event."""
        if isinstance(event, Deliver):
            node = self.nodes[event.to]
            if node.up:
                self.messages += 1
                self.receive(node, event.frm, event.item)
        elif isinstance(event, Timer):
            node = self.nodes[event.node]
            if node.up and event.incarnation == node.incarnation and node.driver is not None:
                node.driver.feed(event.then, self.now)
                self.run_requests(node)
        else:
            self.boot(self.nodes[event.node])

    def result(self) -> SeedResult:
        violations = []
        for epoch in range(self.sc.epochs):
            ids = {self.nodes[i].ledger[epoch].value_id for i in self.honest if epoch in self.nodes[i].ledger}
            if len(ids) > 1:
                violations.append(epoch)
        equivocators = sorted({node for (node, _e, _r, _s), bodies in self.sent.items() if len(bodies) > 1})
        convicted = sorted({self.by_address[k[0]] for k, vals in self.seen.items() if len(vals) > 1})
        decided = min(self.nodes[i].epoch for i in self.honest) if self.honest else 0
        latency = [
            self.epoch_decided[e] - self.epoch_start[e]
            for e in range(self.sc.epochs)
            if e in self.epoch_decided and e in self.epoch_start
        ]
        f = (len(self.nodes) - 1) // 3
        return SeedResult(
            seed=self.seed,
            byzantine=self.byzantine,
            modes=[self.nodes[i].mode for i in self.byzantine],
            decided_epochs=decided,
            rounds=[self.decided_round.get(e, -1) for e in range(self.sc.epochs)],
            messages=self.messages,
            crashes=sum(nd.crashes for nd in self.nodes),
            gst_ms=self.gst,
            agreement_violations=violations,
            invalid_decisions=sorted(
                {
                    epoch
                    for i in self.honest
                    for epoch, cert in self.nodes[i].ledger.items()
                    if not _is_valid(cert.candidate)
                }
            ),
            honest_equivocators=equivocators,
            liveness_ok=decided >= self.sc.epochs or len(self.byzantine) > f,
            convicted=convicted,
            latency_ms=latency,
        )


def validate_value(candidate: Candidate) -> None:
    """The harness's deterministic value check: honest values start with ``ok|``."""
    if not candidate.value.startswith(b"ok|"):
        raise Reject("invalid_value")


def _is_valid(candidate: Candidate) -> bool:
    try:
        validate_value(candidate)
    except Reject:
        return False
    return True


def run_seed(scenario: Scenario, seed: int) -> SeedResult:
    """Run one seed of ``scenario``."""
    return Simulation(scenario, seed).run()


def run_seeds(scenario: Scenario, seeds: range) -> Iterator[SeedResult]:
    """Run consecutive seeds, yielding each outcome."""
    for seed in seeds:
        yield run_seed(scenario, seed)


# --------------------------------------------------------------------------
# Command line


def measure_latency(
    validators: int, seeds: range, delay_ms: int = 10, jitter_ms: int = 0, epochs: int = 5
) -> dict[str, object]:
    """Commit latency on a clean network, in mean one-way message delays.

    Every message takes ``delay_ms`` ± ``jitter_ms`` (uniform). Latency of an
    epoch: from the first honest validator starting it to the first honest
    decision. The lower bound of the three-step protocol is three one-way
    delays (proposal, prevotes, precommits), which exact delays reach. With
    jitter each step waits for the 2f+1-th fastest of its messages, which can
    be faster than the mean delay, so the figure can fall below 3 mean delays.
    """
    scenario = Scenario(
        validators=validators, epochs=epochs, faults=False, fixed_delay_ms=delay_ms, jitter_ms=jitter_ms
    )
    samples = sorted(ms for seed in seeds for ms in run_seed(scenario, seed).latency_ms)
    if not samples:
        raise InternalError("no epoch decided on a clean network")
    in_delays = [round(ms / delay_ms, 2) for ms in samples]
    return {
        "validators": validators,
        "message_delay_ms": delay_ms,
        "jitter_ms": jitter_ms,
        "epochs": len(samples),
        "commit_latency_delays": {
            "p50": in_delays[len(in_delays) // 2],
            "p99": in_delays[min(len(in_delays) - 1, (len(in_delays) * 99) // 100)],
            "max": in_delays[-1],
        },
        "lower_bound_delays": 3,
        "loopback_cluster": "pending: needs the trio service and the transport (not on this branch)",
    }


def summarize(scenario: Scenario, results: list[SeedResult]) -> dict[str, object]:
    """Totals over seeds, as printed by the CLI."""
    f = (scenario.validators - 1) // 3
    forks = [r for r in results if r.forked]
    return {
        "seeds": len(results),
        "validators": scenario.validators,
        "byzantine": scenario.byzantine,
        "agreement_violations": sum(len(r.agreement_violations) for r in results),
        "invalid_decisions": sum(len(r.invalid_decisions) for r in results),
        "honest_equivocations": sum(len(r.honest_equivocators) for r in results),
        "liveness_failures": sum(1 for r in results if not r.liveness_ok),
        "forks": len(forks),
        "forks_with_f_plus_1_convicted": sum(1 for r in forks if len(r.convicted) >= f + 1),
        "messages": sum(r.messages for r in results),
        "max_round": max((max(r.rounds) for r in results), default=-1),
    }


MUTATIONS = {
    "quorum-2f": {"rules": Rules(quorum=quorum_2f)},
    "ignore-locks": {"rules": Rules(respect_locks=False)},
    "send-before-persist": {"persist_before_send": False},
}


def _seed_range(text: str) -> range:
    lo, _, hi = text.partition("-")
    return range(int(lo), int(hi or lo) + 1)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status (1 if any seed had a violation)."""
    ap = argparse.ArgumentParser(
        prog="python -m devnet.fuzz", description=(__doc__ or "").split("\n")[0]
    )
    ap.add_argument("--validators", type=int, default=4)
    ap.add_argument("--byzantine", type=int, default=0)
    ap.add_argument("--seeds", default="0-99", help="inclusive range A-B")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument(
        "--mode",
        choices=BYZANTINE_MODES + SCHEDULED_MODES,
        default=None,
        help="force one Byzantine behaviour; lock-split also schedules the network (see LockSplit)",
    )
    ap.add_argument(
        "--mutation", choices=sorted(MUTATIONS), default=None, help="run a deliberately broken variant"
    )
    ap.add_argument("--real-signatures", action="store_true", help="Ed25519 instead of the fast stand-in")
    ap.add_argument("--json", action="store_true", help="one JSON object per seed, then the totals")
    ap.add_argument(
        "--latency", action="store_true", help="print commit latency on a clean network, in message delays"
    )
    args = ap.parse_args(argv)
    if not 0 <= args.byzantine <= args.validators or args.validators < 1:
        ap.error("need 1 <= validators and 0 <= byzantine <= validators")
    if args.latency:
        for jitter in (0, 5):  # exact 10 ms links, then 10 ± 5 ms
            print(json.dumps(measure_latency(args.validators, _seed_range(args.seeds), 10, jitter)))
        return 0
    scenario = Scenario(
        validators=args.validators,
        byzantine=args.byzantine,
        epochs=args.epochs,
        real_signatures=args.real_signatures,
        byzantine_mode=args.mode,
        **MUTATIONS.get(args.mutation or "", {}),  # type: ignore[arg-type]
    )
    results = []
    for res in run_seeds(scenario, _seed_range(args.seeds)):
        results.append(res)
        if args.json:
            print(json.dumps({**dataclasses.asdict(res), "violation": res.violation}), flush=True)
        else:
            status = "VIOLATION" if res.violation else "ok"
            print(
                f"seed {res.seed}: {status} decided={res.decided_epochs} rounds={res.rounds} "
                f"messages={res.messages} crashes={res.crashes} convicted={res.convicted}",
                flush=True,
            )
    totals = summarize(scenario, results)
    print(json.dumps({"totals": totals}) if args.json else f"totals: {totals}")
    bad = any(
        totals[k]
        for k in ("agreement_violations", "invalid_decisions", "honest_equivocations", "liveness_failures")
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

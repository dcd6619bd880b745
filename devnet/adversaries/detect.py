"""What caught an adversary, counted on the honest nodes only.

Every 100 ms of (virtual) time the :class:`Detector` reads, on each honest
node that runs: what its validators said of the messages the adversary's
own peer sent it (its transport's reject and ignore codes by forwarding peer,
``ignored_<code>`` for ignores, and the items of that peer's bundles its
gossip service ignored), the messages of that peer its rate limit dropped
(``rate_limited``) and the streams of it reset (``excess_streams``), the codes
of what its value builder left out of its own proposals (network-wide: a
left-out item names no forwarder), the codes its proof
pool refused the adversary's radios' reports for once the beacon they had
outrun came (``ProofPool.late_rejects``), its
consensus service's conflicting signers and duplicate-vote evidence
(``conflicting_votes``, ``duplicate_vote_evidence`` when they name the
adversary's key) and the proposer slots of the adversary it waited out
(``missed_proposal_slot``), whether its transport has banned the adversary's peer
(``peer_banned``), and the compute attestations its ledger committed against
the adversary's devices (``attested_<outcome>``). Counts start when the
adversary sends its first attack message (its :class:`AttackLog`); the time
to detect is from then to the first sample that shows one of its role's
codes. A role never adds to these records itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import trio

from depin_p2p import wire
from depin_p2p.clock import Clock
from depin_p2p.consensus.state import Certificate
from depin_p2p.consensus.value import EpochContent, coverage_anchors
from depin_p2p.ledger.genesis import parse_genesis
from depin_p2p.witness import compute, radio
from depin_p2p.witness.rewards import BeaconProof, anchored_beacons
from devnet.adversaries.base import AttackLog, Role

SAMPLE_MS = 100
# Codes that name the adversary itself (its key, its peer, its devices): no baseline to subtract.
_NAMED = frozenset(
    {
        "conflicting_votes", "duplicate_vote_evidence", "peer_banned", "unanchored_coverage",
        "missed_proposal_slot", "sybils_pruned",
    }
)


class _Watch:
    def __init__(self, node: Any) -> None:
        self.node = node
        self.sightings = Sightings()
        self.banned_by: set[int] = set()
        self.attested: dict[bytes, compute.Outcome] = {}  # failed attestations by content id
        self.scanned: dict[int, int] = {}  # honest node -> commits already scanned
        self.unanchored: set[bytes] = set()  # its ring's committed beacons, found unanchored
        self.sybil_links: set[tuple[int, str]] = set()  # (honest node, sybil peer) once connected
        self.sybils_pruned: set[tuple[int, str]] = set()  # ... and closed since
        self.honest_links_lost = 0  # most honest running peers a victim was cut from at once


class Detector:
    """Samples the honest nodes' records for each adversary among ``nodes`` (SimNodes)."""

    def __init__(self, nodes: Sequence[Any], genesis_ms: int) -> None:
        self._nodes = nodes
        self._genesis_ms = genesis_ms
        self._watches = [_Watch(n) for n in nodes if n.role is not None]

    async def watch(self, clock: Clock) -> None:
        """Sample every SAMPLE_MS until cancelled."""
        while True:
            await clock.sleep_until_ms(clock.now_ms() + SAMPLE_MS)
            self.sample(clock.now_ms())
            await trio.lowlevel.checkpoint()

    def _totals(self, w: _Watch) -> dict[str, int]:
        adv = w.node
        key = adv.key.public_key
        devices = set(adv.devices.keys)
        out: dict[str, int] = {}

        def add(code: str, n: int) -> None:
            if n:
                out[code] = out.get(code, 0) + n

        peer = adv.transport.peer_id
        for n in self._nodes:
            if n.role is not None or n.services is None:
                continue
            # What this node's validators said of the messages the adversary's peer sent it
            # (rejects, ignores, items of its bundles ignored), not of everyone's.
            counters = n.transport.counters
            for code, k in counters.codes_by_peer.get(peer, {}).items():
                add(code, k)
            for code, k in n.services.gossip.counters.item_ignores_by_peer.get(peer, {}).items():
                add(f"ignored_{code}", k)
            add("rate_limited", counters.rate_limited_peers.get(peer, 0))
            add("excess_streams", counters.excess_streams_peers.get(peer, 0))
            for code, k in n.services.consensus.ledger.dropped_codes.items():
                add(code, k)  # left out of an honest proposal by the value builder's checks
            for (witness, code), k in n.services.pool.late_rejects.items():
                if witness in devices:  # its radio's report outran the beacon, refused when it came
                    add(code, k)
            c = n.services.consensus
            add("conflicting_votes", int(key in c.conflicting_signers))
            add("duplicate_vote_evidence", int(key in c.evidence_offenders))
            add("missed_proposal_slot", c.counters.proposals_missed.get(key, 0))
            for signer, code in n.ledger.tx_failures:
                if signer == key:  # its own transactions the ledger skipped
                    add(code, 1)
            if n.transport.is_banned(adv.transport.peer_id):
                w.banned_by.add(n.index)
            self._watch_sybils(w, n)
            self._scan_attestations(w, n, devices | {key})
        # Distinct attestations by outcome, however many honest ledgers hold them.
        for outcome in w.attested.values():
            add(f"attested_{outcome.name.lower()}", 1)
        add("unanchored_coverage", len(w.unanchored))
        add("peer_banned", len(w.banned_by))
        add("sybils_pruned", len(w.sybils_pruned))
        add("honest_links_lost", w.honest_links_lost)
        return out

    def _watch_sybils(self, w: _Watch, n: Any) -> None:
        """Links from the adversary's sybil peer ids to ``n``, and those ``n`` has closed since."""
        sybils: set[str] = getattr(w.node, "sybil_peers", set())
        if not sybils:
            return
        peers = n.transport.peers()
        for s in sybils:
            if s in peers:
                w.sybil_links.add((n.index, s))
            elif (n.index, s) in w.sybil_links:
                w.sybils_pruned.add((n.index, s))
        if any(i == n.index for i, _ in w.sybil_links):  # an eclipse victim: its honest links held?
            others = (m for m in self._nodes if m is not n and m.role is None)
            up = {m.transport.peer_id for m in others if m.state == "up"}
            w.honest_links_lost = max(w.honest_links_lost, len(up - peers))

    def _scan_attestations(self, w: _Watch, n: Any, theirs: set[bytes]) -> None:
        """Note the failed attestations on the adversary's devices in ``n``'s new commits."""
        commits = n.ledger.commits
        for commit in commits[w.scanned.get(n.index, 0) :]:
            cert = wire.decode_as(commit[5], Certificate)
            content = wire.decode_as(cert.candidate.value, EpochContent)
            for env in content.attestations:
                att = wire.decode_as(env.body, compute.Attestation)
                failed = att.outcome is not compute.Outcome.PASSED
                if failed and att.provider in theirs and env.signer not in theirs:
                    w.attested[wire.content_id(env.body)] = att.outcome
            ring: frozenset[bytes] = getattr(w.node, "ring_ids", frozenset())
            if ring:
                self._scan_ring(w, n, content, ring)
        w.scanned[n.index] = len(commits)

    def _scan_ring(self, w: _Watch, n: Any, content: EpochContent, ring: frozenset[bytes]) -> None:
        """Ring beacons ``n`` committed that its consensus found unanchored (and paid nothing)."""
        witnesses: dict[bytes, list[bytes]] = {}
        for env in content.reports:
            report = wire.decode_as(env.body, radio.WitnessReport)
            witnesses.setdefault(report.beacon_id, []).append(report.witness)
        proofs = [
            BeaconProof(radio.beacon_id(env), env.signer, tuple(witnesses.get(radio.beacon_id(env), ())))
            for env in content.beacons
        ]
        _, unanchored = n.ledger.read(lambda v: anchored_beacons(proofs, v, coverage_anchors(v)))
        for proof in unanchored:
            if proof.beaconer in ring:
                w.unanchored.add(proof.beacon_id)

    def sample(self, now_ms: int) -> None:
        for w in self._watches:
            w.sightings.sample(now_ms, self._totals(w), w.node.attack.first_ms)

    def rows(self, genesis_text: str) -> tuple[dict[str, Any], ...]:
        """One row per adversary: what it did, what caught it, how fast, what it cost it."""
        genesis = parse_genesis(genesis_text)
        stake0 = dict(genesis.validators)
        honest = [n for n in self._nodes if n.role is None]
        out = []
        for w in self._watches:
            adv = w.node
            key = adv.key.public_key
            slashed = 0
            ref = max(honest, key=lambda n: n.ledger.last_epoch(), default=None)
            if ref is not None and key in stake0:
                v = ref.ledger.get_validator(key)
                now_stake = 0 if v is None else v.stake + v.unbonding_total
                slashed = max(0, stake0[key] - now_stake)
            chain = [commit[5] for commit in ref.ledger.commits] if ref is not None else []
            rewards = chain_rewards(chain, adv.from_epoch)
            ring_owners = {
                d.owner
                for d in (adv.ledger.get_device(r) for r in getattr(adv, "ring_ids", frozenset()))
                if d is not None
            }
            # A ring role claims for its ring's accounts, any other for the node's own account.
            mine = sum(rewards.get(o, 0) for o in ring_owners) if ring_owners else rewards.get(key, 0)
            others = sorted(rewards.get(n.key.public_key, 0) for n in honest)
            # Its proposer slots an honest node waited out (each node times a slot out once).
            skipped = max(
                (n.services.consensus.counters.proposals_missed.get(key, 0) for n in honest if n.services),
                default=0,
            )
            out.append(
                attack_row(
                    adv.role, adv.index, adv.from_epoch, adv.attack, w.sightings,
                    banned_by=len(w.banned_by), slashed_micro=slashed, reward_micro=mine,
                    honest_rewards=others, rounds_skipped=skipped,
                    connections_pruned=len(w.sybils_pruned),
                )
            )
        return tuple(out)


class Sightings:
    """The codes honest records show since an adversary's first attack message.

    Fed, in time order, the cumulative totals (code -> count over the honest
    nodes) of each sample; the last sample before the first attack message is
    the baseline (what honest traffic had cost), except for codes that name the
    adversary itself, which count whole.
    """

    def __init__(self) -> None:
        self.baseline: dict[str, int] | None = None
        self.seen: dict[str, int] = {}  # code -> count since the first attack message
        self.first_ms: dict[str, int] = {}  # code -> when a sample first showed it

    def sample(self, now_ms: int, totals: dict[str, int], first_attack_ms: int | None) -> None:
        if first_attack_ms is None or now_ms < first_attack_ms:
            self.baseline = {
                c: k for c, k in totals.items() if c not in _NAMED and not c.startswith("attested_")
            }
            return
        if self.baseline is None:
            self.baseline = {}
        for code, v in totals.items():
            delta = v - self.baseline.get(code, 0)
            if delta > 0:
                self.seen[code] = delta
                self.first_ms.setdefault(code, now_ms)

    def note(self, code: str, count: int, at_ms: int) -> None:
        """A code whose own record says when it happened (a ban in an honest node's log)."""
        if count > 0:
            self.seen[code] = count
            self.first_ms[code] = min(at_ms, self.first_ms.get(code, at_ms))


def attack_row(
    role: Role,
    node: int,
    from_epoch: int,
    attack: AttackLog,
    sightings: Sightings,
    *,
    banned_by: int,
    slashed_micro: int,
    reward_micro: int,
    honest_rewards: Sequence[int],
    rounds_skipped: int = 0,
    connections_pruned: int = 0,
) -> dict[str, Any]:
    """The report's row for one adversary (the same fields in the simulator and on processes)."""
    seen = sightings.seen
    caught = {c: k for c, k in seen.items() if c in role.codes}
    first = min((sightings.first_ms[c] for c in caught), default=None)
    start = attack.first_ms
    others = sorted(honest_rewards)
    return {
        "role": role.name,
        "family": role.family,
        "node": node,
        "from_epoch": from_epoch,
        "did": dict(sorted(attack.counts.items())),
        "detected": bool(caught),
        "detection_codes": sorted(caught),
        "other_codes": dict(sorted((c, k) for c, k in seen.items() if c not in role.codes)),
        "time_to_detect_ms": None if first is None or start is None else max(0, first - start),
        "penalty": {
            "rejected": sum(
                k for c, k in caught.items() if c not in _NAMED and not c.startswith("attested_")
            ),
            "attested_failed": sum(k for c, k in seen.items() if c.startswith("attested_")),
            "banned_by": banned_by,
            "slashed_micro": slashed_micro,
            "rounds_skipped": rounds_skipped,
            "connections_pruned": connections_pruned,
            "reward_micro": reward_micro,
            "honest_median_reward_micro": others[len(others) // 2] if others else 0,
        },
    }


def chain_rewards(chain: Sequence[bytes], from_epoch: int) -> dict[bytes, int]:
    """Rewards per account committed at or after ``from_epoch`` in a chain of certificates."""
    out: dict[bytes, int] = {}
    for raw in chain:
        cert = wire.decode_as(raw, Certificate)
        if cert.epoch < from_epoch:
            continue
        content = wire.decode_as(cert.candidate.value, EpochContent)
        for r in content.ledger.rewards:
            out[bytes(r.account)] = out.get(bytes(r.account), 0) + r.amount
    return out


def failed_attestations(
    chain: Sequence[bytes], theirs: set[bytes]
) -> dict[bytes, tuple[int, compute.Outcome]]:
    """Failed attestations on ``theirs`` (an adversary's key and devices) signed by others, in a
    chain of certificates: content id -> (epoch committed, outcome)."""
    out: dict[bytes, tuple[int, compute.Outcome]] = {}
    for raw in chain:
        cert = wire.decode_as(raw, Certificate)
        content = wire.decode_as(cert.candidate.value, EpochContent)
        for env in content.attestations:
            att = wire.decode_as(env.body, compute.Attestation)
            failed = att.outcome is not compute.Outcome.PASSED
            if failed and att.provider in theirs and env.signer not in theirs:
                out.setdefault(wire.content_id(env.body), (cert.epoch, att.outcome))
    return out


def status_totals(doc: dict[str, Any], adversary_key_hex: str, adversary_peer: str) -> dict[str, int]:
    """From one honest node's ``/status``: the cumulative counts the :class:`Detector` reads in the
    simulator, as far as ``/status`` shows them. As there, what the node's validators said of the
    messages the adversary's peer sent it (reject codes, ``ignored_<code>``, the items of its
    bundles ignored, rate-limited messages, streams reset; malformed pubsub frames as
    ``malformed_rpc``), not of everyone's, plus the node's consensus ignores, duplicate items and
    the conflicting signers and evidence naming the adversary."""
    out: dict[str, int] = {}

    def add(code: str, n: int) -> None:
        if n:
            out[code] = out.get(code, 0) + int(n)

    gossip = doc.get("gossip_counters", {})
    transport = doc.get("transport_counters", {})
    for code, k in transport.get("codes_by_peer", {}).get(adversary_peer, {}).items():
        add(str(code), k)
    for code, k in gossip.get("item_ignores_by_peer", {}).get(adversary_peer, {}).items():
        add(f"ignored_{code}", k)
    add("rate_limited", transport.get("rate_limited_peers", {}).get(adversary_peer, 0))
    add("excess_streams", transport.get("excess_streams_peers", {}).get(adversary_peer, 0))
    add("duplicate_items", gossip.get("items_duplicate", 0))
    consensus = doc.get("consensus", {})
    for code, k in consensus.get("ignore_codes", {}).items():
        add(f"ignored_{code}", k)
    add("conflicting_votes", int(adversary_key_hex in consensus.get("conflicting_signers", {})))
    add("duplicate_vote_evidence", int(adversary_key_hex in consensus.get("evidence_offenders", {})))
    return out


def add_totals(parts: Sequence[dict[str, int]]) -> dict[str, int]:
    """The honest nodes' totals summed (named codes count each node that holds them)."""
    out: dict[str, int] = {}
    for part in parts:
        for code, k in part.items():
            out[code] = out.get(code, 0) + k
    return out

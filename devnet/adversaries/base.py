"""What every role is: a name, a family, the detection codes that catch it, and its hooks.

A role replaces one behaviour of an honest node and nothing else. In the
simulator its hooks are called by ``devnet/sim.py`` around the node's own
assembly: :meth:`Role.withholds` before each message the node publishes (True:
it is not sent), :meth:`Role.on_publish` after each one it sends (the extra
messages it returns are published too), :meth:`Role.devices` on the
node's device drivers before assembly, and :meth:`Role.run` as one more task
beside the node's services. What it did is counted in its node's
:class:`AttackLog`; whether it was caught is never said by the role but
counted on the honest nodes (:mod:`devnet.adversaries.detect`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from depin_p2p import wire
    from depin_p2p.assemble import Devices
    from depin_p2p.clock import Clock
    from depin_p2p.crypto import KeyPair
    from depin_p2p.schedule import EpochSchedule

FAMILIES = ("consensus", "radio", "compute", "network")


@dataclass
class AttackLog:
    """What an adversary did: counts by kind of attack message, and when it sent the first one."""

    counts: dict[str, int] = field(default_factory=dict)
    first_ms: int | None = None

    def note(self, what: str, now_ms: int, n: int = 1) -> None:
        self.counts[what] = self.counts.get(what, 0) + n
        if self.first_ms is None:
            self.first_ms = now_ms


class Host(Protocol):
    """What a role sees of the node it runs in (a ``SimNode`` in the simulator)."""

    @property
    def key(self) -> KeyPair: ...
    @property
    def network_id(self) -> str: ...
    @property
    def consensus_topic(self) -> str: ...
    @property
    def clock(self) -> Clock: ...
    @property
    def schedule(self) -> EpochSchedule: ...
    @property
    def from_epoch(self) -> int: ...
    @property
    def attack(self) -> AttackLog: ...

    async def publish_raw(self, topic_name: str, data: bytes) -> None:
        """Publish ``data`` on ``topic_name`` through the node's own transport (no hook)."""
        ...

    def submit_proof(self, envelope: bytes) -> None:
        """Queue an encoded proof envelope in the node's own gossip outbox, as its witness service does."""
        ...

    def beacons_held(self, epoch: int) -> tuple[wire.Envelope, ...]:
        """The beacons of ``epoch`` the node's proof pool holds (heard or its own)."""
        ...

    def registered_location(self, device_id: bytes) -> int | None:
        """The cell a device is registered at in the node's ledger (None: not registered)."""
        ...

    async def submit_tx(self, envelope: bytes) -> None:
        """Submit an encoded transaction through the node's own pool (gossiped as its own)."""
        ...

    def next_nonce(self) -> int:
        """The nonce of the node's account's next transaction (its pool's pending ones counted)."""
        ...

    def restart_forgetting_sign_state(self) -> None:
        """Crash the node and start it again at once on its ledger with its sign-state (its
        signed votes, its lock) forgotten (the simulator only)."""
        ...

    async def open_streams(self) -> tuple[int, int]:
        """Open one more stream to every connected peer and hold it, sending nothing (the
        simulator only): how many were (held, reset by the peer)."""
        ...

    async def hold_sybil_connections(self, count: int, victim: int) -> None:
        """Open ``count`` connections to node ``victim`` from as many fresh peer ids and hold them
        until cancelled (the simulator only: the memory network makes peer ids for nothing)."""
        ...

    def current_epoch(self) -> int: ...

    async def send_frames(self, frames: Sequence[bytes]) -> int:
        """Write ``frames`` (raw pubsub RPC frames, below our gossip layer) to every connected
        peer, each on a new pubsub stream; return how many were written. Processes only: the
        simulator's memory network carries payloads, not frames, and writes none (0)."""
        ...


class Role:
    """An honest node with one behaviour replaced. Subclasses override one or more hooks."""

    name: str = ""
    family: str = ""
    summary: str = ""
    # Codes counted on honest nodes (reject codes, evidence, attestations) that mean "caught".
    codes: frozenset[str] = frozenset()
    validator_only: bool = False
    ring: int = 0  # radios of as many other accounts the node runs (genesis entries: devnet/sim.py)
    claims_near: bool = False  # its radios registered next to another node's radio (devnet/sim.py)

    def active(self, host: Host) -> bool:
        return host.current_epoch() >= host.from_epoch

    def withholds(self, host: Host, topic_name: str, data: bytes) -> bool:
        """Whether the node keeps ``data`` to itself instead of publishing it (default: never)."""
        return False

    async def on_publish(self, host: Host, topic_name: str, data: bytes) -> Sequence[bytes]:
        """Extra messages to publish on ``topic_name`` after ``data`` (default: none)."""
        return ()

    def devices(self, host: Host, devices: Devices) -> Devices:
        """The node's device drivers as this role runs them (default: unchanged)."""
        return devices

    async def run(self, host: Host) -> None:
        """One more task beside the node's services (default: none); cancelled with the node."""
        return

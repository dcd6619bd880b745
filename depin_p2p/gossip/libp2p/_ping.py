"""Liveness of the libp2p transport's peers: our own loop lag, pings, dropping frozen peers.

The policy (timeouts scaled by our lag, rounds that judge nobody, misses in
a row) is pure, in :mod:`depin_p2p.gossip.liveness`; this is its trio shell.
"""

from __future__ import annotations

from typing import Any

import structlog
import trio

from depin_p2p.clock import Clock
from depin_p2p.errors import TransportError
from depin_p2p.gossip.libp2p._peers import Peers
from depin_p2p.gossip.libp2p._streams import Streams
from depin_p2p.gossip.liveness import LivenessPolicy, LoopLag, MissedPings
from depin_p2p.gossip.transport import PeerId, TransportCounters

log = structlog.get_logger(__package__)

PING_PAYLOAD_BYTES = 8


class Ping:
    """Pings quiet peers over ``ping_protocol`` and kicks the ones that stop answering.

    ``heard`` maps a peer to when it last sent us gossip (trio time): a peer
    that talks is alive and is not pinged.
    """

    def __init__(
        self,
        *,
        ping_protocol: str,
        policy: LivenessPolicy,
        lag_sample_interval: float,
        clock: Clock,
        counters: TransportCounters,
        peers: Peers,
        streams: Streams,
        heard: dict[PeerId, float],
    ) -> None:
        self._ping_protocol = ping_protocol
        self._policy = policy
        self._lag_sample_interval = lag_sample_interval
        self._clock = clock
        self._counters = counters
        self._peers = peers
        self._streams = streams
        self._heard = heard
        self._lag = LoopLag(policy)

    @staticmethod
    def _now_ms() -> int:
        return int(trio.current_time() * 1000)

    async def lag_loop(self) -> None:
        """Measure how late our own event loop runs: the ping loop's yardstick."""
        period = self._lag_sample_interval
        while True:
            before = trio.current_time()
            await trio.sleep(period)
            after = trio.current_time()
            self._lag.record(int(after * 1000), int((after - before - period) * 1000))

    async def ping_loop(self) -> None:
        policy = self._policy
        missed = MissedPings(policy)
        interval = policy.interval_ms / 1000
        while True:
            await trio.sleep(interval)
            started = self._now_ms()
            timeout_ms = self._lag.timeout_ms(started)
            now = trio.current_time()
            quiet = [p for p in self._peers.connected if now - self._heard.get(p, -1e9) > interval]
            results: dict[PeerId, bool] = {}
            async with trio.open_nursery() as nursery:
                for peer in quiet:
                    nursery.start_soon(self._ping_one, peer, results, timeout_ms / 1000)
            judgeable = self._lag.round_is_judgeable(started, self._now_ms(), timeout_ms)
            if not judgeable and quiet:
                log.info("gossip.ping.round_skipped", lag_ms=self._lag.recent_ms(self._now_ms()))
            for peer in quiet:
                if results.get(peer, False) or trio.current_time() - self._heard.get(peer, -1e9) < 1:
                    missed.answered(peer)
                    continue
                if not judgeable:
                    continue  # our loop stalled: the round proves nothing about the peer
                if missed.missed(peer):
                    self._counters.peers_dropped_unresponsive += 1
                    log.warning(
                        "gossip.peer.unresponsive", peer=peer, timeout_ms=timeout_ms, missed=policy.failures
                    )
                    self._peers.kick(peer)
            missed.forget_except(frozenset(self._peers.connected))
            for peer in [p for p in self._heard if p not in self._peers.connected]:
                del self._heard[peer]

    async def _ping_one(self, peer: PeerId, results: dict[PeerId, bool], timeout: float) -> None:
        payload = self._clock.now_ms().to_bytes(PING_PAYLOAD_BYTES, "big")
        try:
            answer = await self._streams.exchange(peer, self._ping_protocol, payload, timeout, 64)
        except TransportError:
            results[peer] = False
        else:
            results[peer] = answer == payload
            if results[peer]:
                self._heard[peer] = trio.current_time()

    async def serve_ping(self, stream: Any) -> None:
        async def echo(peer: PeerId, data: bytes) -> bytes:
            await trio.lowlevel.checkpoint()
            return data

        await self._streams.serve(stream, echo, PING_PAYLOAD_BYTES)

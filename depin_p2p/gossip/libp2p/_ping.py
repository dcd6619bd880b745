"""Liveness of the libp2p transport's peers: our own loop lag, pings, dropping frozen peers.

The policy (timeouts scaled by our lag, rounds that judge nobody, misses in
a row) is pure, in :mod:`depin_p2p.gossip.liveness`; this is its trio shell.

Pings are yamux's own: a PING frame with SYN, which the peer's muxer answers
with an ACK from its read loop (every yamux implementation must; a frozen
process cannot). No stream is opened, so there is no multistream negotiation
each way: at 32 idle processes, pinging each quiet peer every 1.5 s on a
fresh ``/ipfs/ping/1.0.0`` stream took 0.62 of the machine's 2 cores, most of
their idle CPU. Any ACK the connection receives while we wait counts (py-libp2p's
own RTT probe, every 30 s, shares the muxer's one pending-ping event). A
connection with another muxer gets the standard libp2p ping on a fresh
stream; a peer that refuses that protocol during negotiation has answered:
it is alive, is never pinged again and is never dropped for it (a peer is
never dropped for not speaking a protocol it need not speak).
"""

from __future__ import annotations

import contextlib
import os
import struct
from typing import Any

import structlog
import trio
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.protocol_muxer.exceptions import MultiselectClientError
from libp2p.stream_muxer.yamux.yamux import FLAG_SYN, TYPE_PING, YAMUX_HEADER_FORMAT, Yamux

from depin_p2p.gossip.libp2p._peers import Peers
from depin_p2p.gossip.libp2p._streams import read_exactly
from depin_p2p.gossip.liveness import LivenessPolicy, LoopLag, MissedPings
from depin_p2p.gossip.transport import PeerId, TransportCounters

log = structlog.get_logger(__package__)

PING_PROTOCOL = "/ipfs/ping/1.0.0"
PING_PAYLOAD_BYTES = 32


def _refused_protocol(exc: BaseException) -> bool:
    """Did the peer answer the negotiation with "na" (it is alive, it just does not speak ping)?

    py-libp2p's ``new_stream`` raises ``StreamFailure`` from a
    ``MultiselectClientError``; only the one for protocols explicitly refused
    says "protocols not supported" (a timeout or a broken stream says otherwise).
    """
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, MultiselectClientError) and str(seen).startswith("protocols not supported"):
            return True
        seen = seen.__cause__
    return False


class Ping:
    """Pings quiet peers of ``host`` and kicks the ones that stop answering.

    ``heard`` maps a peer to when it last sent us gossip (trio time): a peer
    that talks is alive and is not pinged.
    """

    def __init__(
        self,
        host: Any,
        *,
        lag: LoopLag,
        policy: LivenessPolicy,
        lag_sample_interval: float,
        counters: TransportCounters,
        peers: Peers,
        heard: dict[PeerId, float],
    ) -> None:
        self._host = host
        self._policy = policy
        self._lag_sample_interval = lag_sample_interval
        self._counters = counters
        self._peers = peers
        self._heard = heard
        self._lag = lag  # also the frame reader's yardstick
        # Peers that refused the ping protocol: alive when asked, never pinged again.
        self._no_ping: set[PeerId] = set()

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
        # Rounds start every ``interval`` from the previous start, not after it: a round that
        # waited out a frozen peer's timeout is followed by the next one at once, so a frozen
        # peer goes after about ``failures * max(interval, timeout)``, not ``* (interval + timeout)``.
        next_round = trio.current_time() + interval
        while True:
            await trio.sleep_until(next_round)
            next_round = trio.current_time() + interval
            started = self._now_ms()
            timeout_ms = self._lag.timeout_ms(started)
            now = trio.current_time()
            quiet = [
                p
                for p in self._peers.connected
                if now - self._heard.get(p, -1e9) > interval and p not in self._no_ping
            ]
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
            self._no_ping &= self._peers.connected

    async def _ping_one(self, peer: PeerId, results: dict[PeerId, bool], timeout: float) -> None:
        """One ping: ``results[peer]`` says whether ``peer`` answered in time."""
        muxer = self._yamux_of(peer)
        if muxer is not None:
            answered = await _yamux_ping(muxer, timeout)
            results[peer] = answered
            if answered:
                self._heard[peer] = trio.current_time()
            return
        await self._stream_ping(peer, results, timeout)

    def _yamux_of(self, peer: PeerId) -> Yamux | None:
        """The yamux muxer of a live connection to ``peer``, if it has one."""
        try:
            conns = self._host.get_network().get_connections(ID.from_base58(peer))
        except Exception:  # noqa: BLE001 -- a bad id or a closing network: no muxer
            return None
        for conn in conns:
            muxer = getattr(conn, "muxed_conn", None)
            if isinstance(muxer, Yamux) and not muxer.event_shutting_down.is_set():
                return muxer
        return None

    async def _stream_ping(self, peer: PeerId, results: dict[PeerId, bool], timeout: float) -> None:
        """One standard ping on a fresh stream: ``results[peer]`` says whether ``peer`` answered in time."""
        payload = os.urandom(PING_PAYLOAD_BYTES)
        stream: Any = None
        answered = False
        try:
            with trio.fail_after(timeout):
                stream = await self._host.new_stream(ID.from_base58(peer), [TProtocol(PING_PROTOCOL)])
                await stream.write(payload)
                answered = await read_exactly(stream, PING_PAYLOAD_BYTES) == payload
        except trio.TooSlowError:
            pass
        except Exception as exc:  # noqa: BLE001 -- libp2p raises many unrelated types for a failed stream
            if _refused_protocol(exc):
                self._no_ping.add(peer)
                answered = True
                log.info("gossip.ping.unsupported", peer=peer)
            else:
                log.debug("gossip.ping.failed", peer=peer, error=repr(exc)[:200])
        finally:
            if stream is not None:
                with trio.CancelScope(shield=True), trio.move_on_after(1), contextlib.suppress(Exception):
                    await (stream.close() if answered else stream.reset())
        results[peer] = answered
        if answered:
            self._heard[peer] = trio.current_time()


async def _yamux_ping(muxer: Yamux, timeout: float) -> bool:
    """Send a yamux PING (SYN) on ``muxer``; True if an ACK arrives within ``timeout`` seconds.

    The muxer sets its one pending-ping event on any ACK (py-libp2p 0.8.1), so ours is
    installed before the frame goes out, with the send time its RTT estimate reads.
    """
    event = trio.Event()
    try:
        with trio.fail_after(timeout):
            muxer._ping_event = event
            muxer._ping_id = (muxer._ping_id + 1) & 0xFFFFFFFF
            frame = struct.pack(YAMUX_HEADER_FORMAT, 0, TYPE_PING, FLAG_SYN, 0, muxer._ping_id)
            await muxer._write_frame(frame)
            muxer._ping_sent_time = trio.current_time()
            await event.wait()
    except trio.TooSlowError:
        pass
    except Exception as exc:  # noqa: BLE001 -- a closing connection raises many types
        log.debug("gossip.ping.failed", error=repr(exc)[:200])
    return event.is_set()

"""Issue 12 item 4: liveness needs only libp2p itself; an optional protocol is never a reason to drop.

A peer of another libp2p implementation speaks none of our own protocols:
before the fix it missed our ``/depin/<net>/ping/1`` and was dropped as
unresponsive within about three ping rounds. Pings are now yamux PING frames,
which every yamux muxer answers (issue 13: a fresh ``/ipfs/ping/1.0.0`` stream
per ping was most of an idle node's CPU), so a peer without the standard ping
protocol is pinged all the same, and one whose muxer stops answering is
dropped. Driven through real py-libp2p hosts on 127.0.0.1, with a fast
liveness policy so that three rounds take about two seconds.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import structlog
import trio
from libp2p import new_host
from libp2p.crypto import ed25519, x25519
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE
from libp2p.security.noise.transport import Transport as Noise
from libp2p.stream_muxer.yamux.yamux import FLAG_ACK, TYPE_PING, Yamux
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX
from multiaddr import Multiaddr

from depin_p2p.clock import Clock
from depin_p2p.crypto import KeyPair
from depin_p2p.gossip.libp2p import Libp2pConfig, Libp2pTransport
from depin_p2p.gossip.liveness import LivenessPolicy
from depin_p2p.gossip.transport import PeerId
from tests.unit.gossip.cluster import collect_libp2p_garbage, wait_until

STANDARD_PING = TProtocol("/ipfs/ping/1.0.0")
FAST = LivenessPolicy(interval_ms=300, timeout_ms=500, failures=3)
# Three missed rounds take about 3 * (0.3 + 0.5) s; watch for twice that and more.
WATCH_S = 6.0


@pytest.fixture(autouse=True)
def _collect_libp2p_sockets() -> Iterator[None]:
    yield
    collect_libp2p_garbage()


@asynccontextmanager
async def our_node() -> AsyncIterator[Libp2pTransport]:
    node = Libp2pTransport(
        KeyPair.from_seed(b"L" * 32),
        network_id="live-net",
        clock=Clock(),
        config=Libp2pConfig(liveness=FAST),
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        yield node
        nursery.cancel_scope.cancel()


class _DeafYamux(Yamux):
    """A muxer whose read loop never answers a PING: what a frozen process's looks like from outside."""

    async def _write_frame(self, data: bytes) -> None:
        if len(data) >= 4 and data[1] == TYPE_PING and int.from_bytes(data[2:4], "big") & FLAG_ACK:
            return
        await super()._write_frame(data)


@asynccontextmanager
async def foreign_peer(
    seed: int, node: Libp2pTransport, ping_handler: Any = "default", muxer: type[Yamux] = Yamux
) -> AsyncIterator[PeerId]:
    """A bare py-libp2p host (no pubsub, none of our protocols) connected to ``node``.

    ``ping_handler``: the standard one ``new_host`` installs, ``None`` for a
    host that does not speak ping at all, or a replacement handler; ``muxer``: the
    class its connection's muxer behaves as.
    """
    kp = ed25519.create_new_key_pair(bytes([seed]) * 32)
    host = new_host(
        key_pair=kp,
        sec_opt={NOISE: Noise(kp, noise_privkey=x25519.create_new_key_pair().private_key)},
        muxer_opt={YAMUX: Yamux},
    )
    if ping_handler is None:
        host.remove_stream_handler(STANDARD_PING)
    elif ping_handler != "default":
        host.set_stream_handler(STANDARD_PING, ping_handler)
    async with host.run([Multiaddr("/ip4/127.0.0.1/tcp/0")]):
        with trio.fail_after(10):
            await host.connect(info_from_p2p_addr(Multiaddr(node.listen_addrs()[0])))
        peer = PeerId(ID.from_pubkey(kp.public_key).to_base58())
        await wait_until(lambda: peer in node.peers())
        # py-libp2p 0.8.1 builds every yamux connection as ``Yamux`` whatever ``muxer_opt`` names:
        # this connection's muxer takes the other class's behaviour here.
        for conn in host.get_network().get_connections():
            conn.muxed_conn.__class__ = muxer
        yield peer


async def test_a_quiet_standard_libp2p_peer_is_kept() -> None:
    async with our_node() as node, foreign_peer(21, node) as peer:
        with structlog.testing.capture_logs() as logs:
            await trio.sleep(WATCH_S)
        assert peer in node.peers()
        assert node.counters.peers_dropped_unresponsive == 0
        assert not [e for e in logs if e["event"] == "gossip.peer.unresponsive"]


async def test_a_peer_that_does_not_speak_ping_is_not_dropped_for_it() -> None:
    async with our_node() as node, foreign_peer(22, node, ping_handler=None) as peer:
        await trio.sleep(WATCH_S)
        assert peer in node.peers()
        assert node.counters.peers_dropped_unresponsive == 0


async def test_a_peer_that_stops_answering_pings_is_still_dropped() -> None:
    async with our_node() as node, foreign_peer(23, node, muxer=_DeafYamux) as peer:
        await wait_until(lambda: peer not in node.peers(), timeout=WATCH_S * 2)
        assert node.counters.peers_dropped_unresponsive == 1


async def test_pings_open_no_ping_stream_and_keep_a_quiet_peer() -> None:
    opened: list[Any] = []

    async def counting(stream: Any) -> None:
        opened.append(stream)
        await stream.reset()

    async with our_node() as node, foreign_peer(24, node, ping_handler=counting) as peer:
        with structlog.testing.capture_logs() as logs:
            await trio.sleep(WATCH_S)
        assert peer in node.peers()
        assert opened == []  # rounds of yamux PINGs (every 0.3 s here), no /ipfs/ping/1.0.0 stream
        assert not [e for e in logs if e["event"] in ("gossip.ping.unsupported", "gossip.peer.unresponsive")]

"""Issue 12 item 2: partial pubsub frames must not exhaust a node's memory.

The attack, through real py-libp2p on 127.0.0.1: three identities each open
255 ``/meshsub`` streams to the target (a node in its own OS process, so its
RSS is its own) and on each send ~1 MiB of a frame declared at the 1.06 MiB
cap, then hold it. Before the fix the target read every partial frame into
memory with no deadline and no penalty (RSS grew by hundreds of MB). After
it the target's RSS grows by less than 50 MB, every attacker is penalised
and disconnected, and an honest peer's proofs keep arriving meanwhile.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
import trio
from libp2p import new_host
from libp2p.crypto import ed25519, x25519
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.pubsub.pb import rpc_pb2
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE
from libp2p.security.noise.transport import Transport as Noise
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX
from libp2p.stream_muxer.yamux.yamux import Yamux
from libp2p.utils.varint import encode_uvarint
from multiaddr import Multiaddr

from depin_p2p import wire
from depin_p2p.clock import Clock
from depin_p2p.crypto import KeyPair
from depin_p2p.gossip.libp2p import Libp2pConfig, Libp2pTransport
from depin_p2p.gossip.libp2p._frames import FrameLimits
from tests.adversarial.test_gossip_crash_frames import raw_peer
from tests.integration.gossip_proc import Proc, wait_for
from tests.unit.gossip.cluster import collect_libp2p_garbage

pytestmark = pytest.mark.slow

MESHSUB = TProtocol("/meshsub/1.1.0")
IDENTITIES = 3
STREAMS = 255
DECLARED = wire.MAX_MESSAGE_BYTES + 64 * 1024  # the inbound RPC cap: a frame we must accept
SENT = wire.MAX_MESSAGE_BYTES  # ~1 MiB of it, then nothing
ATTACK_S = 25.0  # past the target's deadline for such a frame (10 s + 1.06 MiB at 128 KiB/s)
HONEST_PROOFS = 60
MAX_GROWTH_MB = 50.0


@pytest.fixture(autouse=True)
def _collect_libp2p_sockets() -> Iterator[None]:
    yield
    collect_libp2p_garbage()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


async def one_stream(host: Any, target: Any, tally: dict[str, int]) -> None:
    try:
        stream = await host.new_stream(target, [MESHSUB])
        await stream.write(encode_uvarint(DECLARED))
        chunk = b"\0" * 65536
        for _ in range(SENT // len(chunk)):
            await stream.write(chunk)
        tally["sent_whole"] += 1
        await trio.sleep_forever()  # hold the partial frame
    except Exception:  # noqa: BLE001 -- the target resets streams and connections: that is the defence
        tally["cut"] += 1


async def attacker(seed: int, target_addr: str, tally: dict[str, int], peers: list[str]) -> None:
    kp = ed25519.create_new_key_pair(bytes([seed]) * 32)
    host = new_host(
        key_pair=kp,
        sec_opt={NOISE: Noise(kp, noise_privkey=x25519.create_new_key_pair().private_key)},
        muxer_opt={YAMUX: Yamux},
    )
    peers.append(ID.from_pubkey(kp.public_key).to_base58())
    async with host.run([Multiaddr("/ip4/127.0.0.1/tcp/0")]):
        info = info_from_p2p_addr(Multiaddr(target_addr))
        with trio.fail_after(10):
            await host.connect(info)
        async with trio.open_nursery() as nursery:
            for _ in range(STREAMS):
                nursery.start_soon(one_stream, host, info.peer_id, tally)


async def call(proc: Proc, cmd: dict[str, Any]) -> dict[str, Any]:
    return await trio.to_thread.run_sync(proc.call, cmd)


async def attack(target: Proc, honest: Proc) -> dict[str, Any]:
    tally = {"sent_whole": 0, "cut": 0}
    peers: list[str] = []
    before = rss_mb(target.pid)
    peak = before
    received_before = (await call(target, {"cmd": "count"}))["received"]
    async with trio.open_nursery() as nursery:
        for i in range(IDENTITIES):
            nursery.start_soon(attacker, 60 + i, target.addr, tally, peers)
        await trio.sleep(2.0)
        assert (await call(honest, {"cmd": "publish", "count": HONEST_PROOFS, "rate": 10, "size": 300}))["ok"]
        end = trio.current_time() + ATTACK_S
        while trio.current_time() < end:
            peak = max(peak, rss_mb(target.pid))
            await trio.sleep(0.25)
        stats = await call(target, {"cmd": "stats"})
        nursery.cancel_scope.cancel()
    return {
        "rss_before_mb": before,
        "rss_peak_mb": peak,
        "tally": tally,
        "attackers": peers,
        "stats": stats,
        "received_during": stats["received"] - received_before,
    }


def test_partial_frames_from_three_identities_cost_them_not_our_memory() -> None:
    target = honest = None
    try:
        target = Proc(1)
        honest = Proc(2)
        target.wait_ready()
        honest.wait_ready()
        assert honest.call({"cmd": "connect", "addr": target.addr})["ok"]
        wait_for(lambda: len(target.call({"cmd": "stats"})["mesh"]) == 1, 30, "target's mesh")
        result = trio.run(attack, target, honest)
        growth = result["rss_peak_mb"] - result["rss_before_mb"]
        stats = result["stats"]
        print(
            f"\npartial frames, {IDENTITIES} identities x {STREAMS} streams: target RSS "
            f"{result['rss_before_mb']:.0f} -> peak {result['rss_peak_mb']:.0f} MB (+{growth:.1f} MB); "
            f"streams cut {result['tally']['cut']}, fully sent {result['tally']['sent_whole']}; "
            f"honest proofs received during the attack {result['received_during']}/{HONEST_PROOFS}; "
            f"penalised {stats['transport']['peers_banned']} banned"
        )
        assert growth < MAX_GROWTH_MB
        assert result["received_during"] == HONEST_PROOFS
        assert honest.peer in stats["peers"]
        assert not set(result["attackers"]) & set(stats["peers"])
        assert stats["transport"]["peers_banned"] >= IDENTITIES
    finally:
        for proc in (target, honest):
            if proc is not None:
                with contextlib.suppress(Exception):
                    proc.kill()


# ---------------------------------------------------------------- one stream at a time, in-process


@contextlib.asynccontextmanager
async def _victim(limits: FrameLimits) -> AsyncIterator[Libp2pTransport]:
    node = Libp2pTransport(
        KeyPair.from_seed(b"V" * 32), network_id="frames", clock=Clock(), config=Libp2pConfig(frames=limits)
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        yield node
        nursery.cancel_scope.cancel()


def _penalties(logs: list[dict[str, Any]]) -> list[str]:
    return [e["code"] for e in logs if e["event"] == "gossip.peer.penalised"]


async def test_a_slow_honest_frame_is_read_a_stalled_one_is_dropped_an_absurd_one_bans() -> None:
    limits = FrameLimits(frame_timeout_s=1.0, min_rate_bytes_per_s=64 * 1024)
    async with _victim(limits) as victim:
        with structlog.testing.capture_logs() as logs:
            # A slow but honest sender: a 200 KiB frame over ~3 s (its deadline: 1 s + 200 KiB at 64 KiB/s).
            async with raw_peer(31, victim) as stream:
                peer = ID.from_pubkey(stream.key_pair.public_key).to_base58()
                # A valid RPC (200 subscriptions to topics we ignore), ~200 KiB.
                padded = rpc_pb2.RPC(
                    subscriptions=[rpc_pb2.RPC.SubOpts(subscribe=True, topicid="x" * 1000)] * 200
                ).SerializeToString()
                await stream.write(encode_uvarint(len(padded)))
                for i in range(0, len(padded), 8192):
                    await stream.write(padded[i : i + 8192])
                    await trio.sleep(0.1)
                await trio.sleep(0.5)
                assert peer in victim.peers()
                assert _penalties(logs) == []
                # The same sender stalls: half a frame, then nothing. The frame is dropped with
                # its stream, at no cost: a starved honest sender stalls too.
                await stream.write(encode_uvarint(len(padded)) + padded[: len(padded) // 2])
                with trio.fail_after(15):
                    while not any(e["event"] == "gossip.frame.stalled" for e in logs):
                        await trio.sleep(0.1)
                assert _penalties(logs) == []
                assert not victim.is_banned(peer)
            # An oversized declared length costs points; an absurd one bans at once.
            async with raw_peer(32, victim) as stream:
                peer = ID.from_pubkey(stream.key_pair.public_key).to_base58()
                await stream.write(encode_uvarint(limits.max_frame_bytes + 1))
                with trio.fail_after(10):
                    while "oversized_rpc" not in _penalties(logs):
                        await trio.sleep(0.05)
                assert not victim.is_banned(peer)
            async with raw_peer(33, victim) as stream:
                peer = ID.from_pubkey(stream.key_pair.public_key).to_base58()
                await stream.write(encode_uvarint(2**40))
                with trio.fail_after(10):
                    while not victim.is_banned(peer):
                        await trio.sleep(0.05)
        assert "absurd_frame_length" in _penalties(logs)

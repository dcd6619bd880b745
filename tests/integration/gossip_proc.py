"""One gossip node in its own OS process, driven over stdin/stdout with JSON lines.

Used by the multi-process tests and by ``bench/gossip.py``::

    python -m tests.integration.gossip_proc --seed 1 [--port 0] [--mode batch|bare] [--connect ADDR]...

Prints ``{"event": "ready", "addr": ..., "peer": ...}`` once listening, then
answers one JSON line per command line:

- ``{"cmd": "connect", "addr": A}``
- ``{"cmd": "publish", "count": N, "rate": R, "size": S}``: submit N proofs
  of ~S bytes at R proofs/s (in the background; answers at once)
- ``{"cmd": "stats"}``: received count, latencies (ms), counters, peers, mesh
- ``{"cmd": "count"}``: received count only (cheap enough to poll)
- ``{"cmd": "stall", "block_ms": B, "every_ms": E, "seconds": S}``: for S
  seconds, block this process's event loop for B ms out of every E ms (what
  CPU starvation does to a node; in the background, answers at once)
- ``{"cmd": "quit"}``

``batch`` mode gossips through :class:`ProofGossip` (bundles); ``bare`` mode
publishes one proof per gossip message through the same transport.
Latency is wall time from submit (carried in the proof) to acceptance.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import structlog
import trio

from depin_p2p import wire
from depin_p2p.clock import Clock
from depin_p2p.crypto import KeyPair
from depin_p2p.errors import TransportError
from depin_p2p.gossip.libp2p import Libp2pConfig, Libp2pTransport
from depin_p2p.gossip.service import BatchConfig, ProofGossip
from depin_p2p.gossip.transport import PROOFS, PeerId, topic
from depin_p2p.gossip.validation import validate_gossip_envelope
from depin_p2p.verifiers import ThreadVerifier
from tests.unit.gossip.messages import NETWORK, RULES, FakeProof, signed_proof


def gossipsub_params(args: argparse.Namespace) -> dict[str, Any]:
    """GossipSub's heartbeat and mesh degree when given (bench/gossip.py measures them); else the node's."""
    out: dict[str, Any] = {}
    if args.heartbeat is not None:
        out["heartbeat_interval"] = args.heartbeat
    if args.degree is not None:
        out.update(degree=args.degree, degree_low=max(1, args.degree - 2), degree_high=2 * args.degree)
    return out


class Node:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.clock = Clock()
        self.key = KeyPair.from_seed(bytes([args.seed]) * 32)
        self.device = KeyPair.from_seed(bytes([args.seed, 0xD]) * 16)
        self.transport = Libp2pTransport(
            self.key,
            network_id=NETWORK,
            clock=self.clock,
            config=Libp2pConfig(listen_addr=f"/ip4/127.0.0.1/tcp/{args.port}", **gossipsub_params(args)),
        )
        self.verifier = ThreadVerifier(args.verify_threads) if args.verify_threads else None
        self.service = ProofGossip(
            self.transport,
            network_id=NETWORK,
            clock=self.clock,
            rules=RULES,
            config=BatchConfig(flush_ms=args.flush_ms),
            verifier=self.verifier,
        )
        self.topic = topic(NETWORK, PROOFS)
        self.received = 0
        self.latencies_ms: list[float] = []
        self.seq = 0

    def on_proof(self, data: bytes, message: object) -> None:
        assert isinstance(message, FakeProof)
        sent_ns = int.from_bytes(message.payload[:8], "big")
        self.received += 1
        self.latencies_ms.append((time.time_ns() - sent_ns) / 1e6)

    def bare_validator(self, peer: PeerId, data: bytes) -> None:
        validate_gossip_envelope(data, network_id=NETWORK, rules=RULES, now_ms=self.clock.now_ms())

    async def consume_batch(self) -> None:
        async for proof in self.service.received:
            self.on_proof(proof.data, proof.verified.message)

    async def consume_bare(self, channel: Any) -> None:
        async for msg in channel:
            env = wire.decode_as(msg.data, wire.Envelope)
            self.on_proof(msg.data, wire.decode(env.body))

    def make_proof(self, size: int) -> bytes:
        self.seq += 1
        payload = time.time_ns().to_bytes(8, "big") + self.seq.to_bytes(8, "big")
        payload += b"\0" * max(0, size - 160 - len(payload))
        return signed_proof(self.device, self.clock.now_ms(), payload)

    async def publish(self, count: int, rate: float, size: int) -> None:
        # Submit in 10 ms ticks so high rates are not limited by timer resolution.
        tick = 0.01
        start = trio.current_time()
        done = 0
        while done < count:
            due = min(count, int((trio.current_time() - start) * rate) + 1)
            while done < due:
                data = self.make_proof(size)
                if self.args.mode == "batch":
                    self.service.submit(data)
                else:
                    await self.transport.publish(self.topic, data)
                done += 1
            await trio.sleep(tick)

    async def stall(self, block_ms: int, every_ms: int, seconds: float) -> None:
        end = trio.current_time() + seconds
        while trio.current_time() < end:
            time.sleep(block_ms / 1000)  # deliberately blocks the whole event loop
            await trio.sleep(max(0, every_ms - block_ms) / 1000)

    def stats(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "latencies_ms": self.latencies_ms,
            "peers": sorted(self.transport.peers()),
            "mesh": sorted(self.transport.topic_peers(self.topic)),
            "transport": dataclasses.asdict(self.transport.counters),
            "service": dataclasses.asdict(self.service.counters),
        }

    async def connect(self, addr: str) -> dict[str, Any]:
        try:
            peer = await self.transport.connect(addr)
        except TransportError as exc:
            return {"ok": False, "error": str(exc)}
        return {"ok": True, "peer": peer}

    async def run(self) -> None:
        stdin = trio.wrap_file(sys.stdin)
        async with trio.open_nursery() as nursery:
            await nursery.start(self.transport.run)
            if self.args.mode == "batch":
                await nursery.start(self.service.run)
                nursery.start_soon(self.consume_batch)
            else:
                channel = await self.transport.subscribe(self.topic, self.bare_validator, capacity=100_000)
                nursery.start_soon(self.consume_bare, channel)
            for addr in self.args.connect:
                await self.connect(addr)
            addr = self.transport.listen_addrs()[0]
            reply({"event": "ready", "addr": addr, "peer": self.transport.peer_id})
            while True:
                line = await stdin.readline()
                if not line:
                    break
                cmd = json.loads(line)
                if cmd["cmd"] == "connect":
                    reply(await self.connect(cmd["addr"]))
                elif cmd["cmd"] == "publish":
                    nursery.start_soon(self.publish, cmd["count"], cmd["rate"], cmd.get("size", 300))
                    reply({"ok": True})
                elif cmd["cmd"] == "stats":
                    reply(self.stats())
                elif cmd["cmd"] == "stall":
                    nursery.start_soon(self.stall, cmd["block_ms"], cmd["every_ms"], cmd["seconds"])
                    reply({"ok": True})
                elif cmd["cmd"] == "count":  # cheap progress poll: no latency list to serialise
                    reply({"received": self.received})
                elif cmd["cmd"] == "quit":
                    break
            nursery.cancel_scope.cancel()


async def run_node(args: argparse.Namespace) -> None:
    await Node(args).run()  # built inside trio: the Clock reads trio's clock


def reply(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


# ------------------------------------------------------------------ driver
# The parent side, used by the tests and the benchmark (plain threads and
# pipes: the parent only waits for answers, every wait has a deadline).

ROOT = Path(__file__).resolve().parents[2]


class Proc:
    """A child node process. Always end it with :meth:`kill` (the cluster helper does, in a finally)."""

    def __init__(
        self,
        seed: int,
        *,
        port: int = 0,
        mode: str = "batch",
        connect: tuple[str, ...] = (),
        flush_ms: int | None = None,
        verify_threads: int = 0,
        gossipsub: tuple[str, ...] = (),
    ) -> None:
        self.seed, self.port, self.mode = seed, port, mode
        cmd = [sys.executable, "-m", "tests.integration.gossip_proc"]
        cmd += ["--seed", str(seed), "--port", str(port), "--mode", mode]
        if flush_ms is not None:
            cmd += ["--flush-ms", str(flush_ms)]
        if verify_threads:
            cmd += ["--verify-threads", str(verify_threads)]
        cmd += gossipsub
        for addr in connect:
            cmd += ["--connect", addr]
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115 -- lives as long as the process; closed in kill()
        self.popen = subprocess.Popen(
            cmd, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, text=True
        )
        self.pid = self.popen.pid
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.addr = ""
        self.peer = ""

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self._lines.put(line)

    def _next(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                return dict(json.loads(self._lines.get(timeout=0.2)))
            except queue.Empty:
                if self.popen.poll() is not None:
                    raise RuntimeError(f"node {self.seed} exited:\n{self.stderr_text()[-3000:]}") from None
        raise TimeoutError(f"node {self.seed} (pid {self.pid}) did not answer in {timeout}s")

    def wait_ready(self, timeout: float = 30) -> None:
        ready = self._next(timeout)
        assert ready["event"] == "ready", ready
        self.addr, self.peer = ready["addr"], ready["peer"]
        self.port = int(self.addr.split("/tcp/")[1].split("/")[0])

    def call(self, cmd: dict[str, Any], timeout: float = 20) -> dict[str, Any]:
        assert self.popen.stdin is not None
        self.popen.stdin.write(json.dumps(cmd) + "\n")
        self.popen.stdin.flush()
        return self._next(timeout)

    def stderr_text(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")

    def kill(self) -> None:
        if self.popen.poll() is None:
            os.kill(self.pid, signal.SIGCONT)  # a stopped process cannot die until continued
            self.popen.kill()
        self.popen.wait(timeout=10)
        for stream in (self.popen.stdin, self.popen.stdout):
            if stream is not None:
                stream.close()
        self.stderr.close()


def wait_for(condition: Any, timeout: float, what: str, poll: float = 0.1) -> float:
    """Poll ``condition()`` until true; return the seconds it took. Raises TimeoutError with ``what``."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"{what} not reached in {timeout}s")
        time.sleep(poll)
    return time.monotonic() - start


@contextlib.contextmanager
def cluster(
    n: int,
    *,
    mode: str = "batch",
    first_seed: int = 1,
    flush_ms: int | None = None,
    verify_threads: int = 0,
    heartbeat: int | None = None,
    degree: int | None = None,
) -> Iterator[list[Proc]]:
    """``n`` node processes, fully connected, each with a full proofs mesh (or ``degree`` peers in it).

    Killed by PID on exit. ``heartbeat`` (s) and ``degree`` set GossipSub's (default: the node's).
    """
    gossipsub: tuple[str, ...] = ()
    if heartbeat is not None:
        gossipsub += ("--heartbeat", str(heartbeat))
    if degree is not None:
        gossipsub += ("--degree", str(degree))
    mesh = n - 1 if degree is None else min(n - 1, max(1, degree - 2))
    procs: list[Proc] = []
    try:
        procs = [
            Proc(
                first_seed + i,
                mode=mode,
                flush_ms=flush_ms,
                verify_threads=verify_threads,
                gossipsub=gossipsub,
            )
            for i in range(n)
        ]
        for p in procs:
            p.wait_ready()
        for i, p in enumerate(procs):
            for q in procs[:i]:
                assert p.call({"cmd": "connect", "addr": q.addr})["ok"]
        for p in procs:
            wait_for(lambda p=p: len(p.call({"cmd": "stats"})["mesh"]) >= mesh, 30, f"mesh of {p.seed}")
        yield procs
    finally:
        for p in procs:
            p.kill()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--mode", choices=("batch", "bare"), default="batch")
    parser.add_argument("--connect", action="append", default=[])
    parser.add_argument("--flush-ms", type=int, default=BatchConfig().flush_ms)
    parser.add_argument("--verify-threads", type=int, default=0, help="0: every signature checked inline")
    parser.add_argument("--heartbeat", type=int, help="GossipSub heartbeat, s (default: the node's)")
    parser.add_argument("--degree", type=int, help="GossipSub mesh degree D (low D-2, high 2D)")
    args = parser.parse_args()
    # stdout carries the JSON protocol: logs go to stderr.
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    trio.run(run_node, args)


if __name__ == "__main__":
    main()

"""Ed25519 checks in batches on worker threads, so a node verifies on every core.

PyNaCl releases the GIL inside ``crypto_sign_open`` (cffi calls do), so
threads verify in parallel with each other and with the trio loop, which
meanwhile decodes, screens and does py-libp2p's work. A batch goes to the
threads in one hop per thread (a hop costs about as much as one check),
never one hop per signature.

Not switched on in ``depin-p2p run`` yet (``AssemblyConfig.verifier`` is
None there and in the simulator, whose checks must stay inline and
deterministic): on this project's shared 2-core machine, saturated by other
work (load 5-17), every measurement had the threads lose - the 5-process
``bench/gossip.py --verify-threads 2`` delivered 94 proofs/s against 161
inline in the same run, and ``bench/witness.py``'s two-core path ran at 0.83
of the inline one. Each check hands the GIL back and forth, and a worker that
finishes a check waits up to the switch interval (5 ms) for a busy loop
thread to let go (measured: two threads beside a busy thread verified 2,794/s,
one thread alone 5,327/s). A process pool of the same size did better in
``bench/witness.py``'s ``radio.pools`` under that load. Switch it on from
measurements on idle cores.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import trio
from nacl.bindings import crypto_sign_open
from nacl.exceptions import CryptoError

from depin_p2p import wire

Item = tuple[bytes, bytes, bytes]
"""``(public key, signed bytes, signature)``, the arguments of a :data:`wire.Verifier`."""

DEFAULT_THREADS = 2
INLINE_BELOW = 4  # fewer checks than this run on the loop: a thread hop costs about one check


def check_batch(items: Sequence[Item]) -> list[bool]:
    """Check each signature; True where it is good. Thread-safe, pure: holds the GIL only between checks."""
    out = []
    for public_key, data, signature in items:
        try:
            crypto_sign_open(signature + data, public_key)
        except (CryptoError, ValueError, TypeError):
            out.append(False)
        else:
            out.append(True)
    return out


class BatchVerifier(Protocol):
    """Checks many signatures at once, possibly off the trio loop."""

    async def check(self, items: Sequence[Item]) -> list[bool]:
        """One verdict per item, in order. Cancellation: waits for running chunks (ms), drops the rest."""
        ...


class ThreadVerifier:
    """A :class:`BatchVerifier` on ``threads`` worker threads (trio's thread cache, a capacity limiter).

    A batch is split into one contiguous chunk per thread; batches from
    concurrent callers share the limiter, so at most ``threads`` chunks run
    at once whatever the number of callers.
    """

    def __init__(self, threads: int = DEFAULT_THREADS, inline_below: int = INLINE_BELOW) -> None:
        if threads < 1:
            raise ValueError("a thread verifier needs at least one thread")
        self.threads = threads
        self._inline_below = inline_below
        self._limiter = trio.CapacityLimiter(threads)
        self.batches = 0
        self.checked = 0

    async def check(self, items: Sequence[Item]) -> list[bool]:
        self.batches += 1
        self.checked += len(items)
        if len(items) < self._inline_below:
            return check_batch(items)
        parts = min(self.threads, len(items))
        size = -(-len(items) // parts)
        chunks = [items[i : i + size] for i in range(0, len(items), size)]
        results: list[list[bool]] = [[] for _ in chunks]

        async def run(i: int) -> None:
            results[i] = await trio.to_thread.run_sync(check_batch, chunks[i], limiter=self._limiter)

        async with trio.open_nursery() as nursery:
            for i in range(len(chunks)):
                nursery.start_soon(run, i)
        return [ok for part in results for ok in part]


async def warm(
    cache: wire.SignatureCache,
    verifier: BatchVerifier,
    items: Sequence[Item],
    tally: wire.SignatureTally | None = None,
) -> int:
    """Check the signatures ``cache`` does not remember yet in one batch, and enter the good ones.

    The inline checks that follow (``cache.verify`` / ``cache.verifier(...)``)
    then answer from memory; a bad signature is not entered, so its inline
    check fails as before. Returns how many checks ran (each counted in
    ``cache.verified`` and ``tally``).
    """
    todo: list[Item] = []
    keys: list[bytes] = []
    seen: set[bytes] = set()
    for item in items:
        key = cache.unchecked(*item)
        if key is not None and key not in seen:
            seen.add(key)
            keys.append(key)
            todo.append(item)
    if not todo:
        return 0
    verdicts = await verifier.check(todo)
    for key, good in zip(keys, verdicts, strict=True):
        cache.enter_checked(key, good, tally)
    return len(todo)

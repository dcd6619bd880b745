"""Catch-up: certificates by range over ``/depin/<network>/sync/1``.

The server answers a :class:`SyncRequest` with up to :data:`SYNC_BATCH`
encoded certificates from its ledger. The client only fetches and decodes:
every certificate it gets is handed to the consensus loop as an input, which
verifies it against its own validator set and chain link, re-checks the
value and commits it (one writer), so a lying peer can only waste our time
and pays for it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Protocol, TypeVar

import structlog
import trio

from depin_p2p import wire
from depin_p2p.consensus.state import Certificate
from depin_p2p.errors import CodecError, DepinError, Reject, TransportError
from depin_p2p.gossip.transport import Handler, PeerId, Transport
from depin_p2p.ledger.state import LedgerView

log = structlog.get_logger("depin_p2p.consensus")
T = TypeVar("T")

SYNC_BATCH = 4  # certificates per response (each may be ~900 kB)
SYNC_TIMEOUT_S = 10.0
MAX_SYNC_RESPONSE = 4 * 1024 * 1024
MAX_SYNC_REQUEST = 64


@wire.message(type_id=90)
@dataclass(frozen=True, slots=True)
class SyncRequest:
    """Ask a peer for the certificates of epochs ``first..last`` (inclusive)."""

    first: wire.U64
    last: wire.U64


@wire.message(type_id=91)
@dataclass(frozen=True, slots=True)
class SyncResponse:
    """Encoded certificates, in epoch order, starting at the requested first epoch."""

    certificates: Annotated[tuple[bytes, ...], wire.MaxLen(SYNC_BATCH)]


class ReadView(LedgerView, Protocol):
    def last_epoch(self) -> int: ...
    def get_certificate(self, epoch: int) -> bytes | None: ...


class CertificateSource(Protocol):
    def read(self, fn: Callable[[ReadView], T]) -> T: ...


def make_server(ledger: CertificateSource) -> Handler:
    """The ``/sync/1`` request handler over ``ledger`` (Reject on a malformed request)."""

    async def serve(peer: PeerId, data: bytes) -> bytes:
        try:
            req = wire.decode_as(data, SyncRequest)
        except CodecError as exc:
            raise Reject("malformed", str(exc)) from None
        last = min(req.last, req.first + SYNC_BATCH - 1)

        def read(view: ReadView) -> list[bytes]:
            certs: list[bytes] = []
            size = 0
            for epoch in range(req.first, last + 1):
                cert = view.get_certificate(epoch)
                if cert is None or size + len(cert) > MAX_SYNC_RESPONSE - 1024:
                    break
                certs.append(cert)
                size += len(cert)
            return certs

        return wire.encode(SyncResponse(tuple(ledger.read(read))))

    return serve


async def fetch_certificates(
    transport: Transport, protocol: str, peer: PeerId, first: int, last: int
) -> list[Certificate]:
    """Ask ``peer`` for the certificates of ``first..last``; an empty list when it has none.

    Raises:
        TransportError: the peer did not answer in time.
        Reject: the answer is malformed or not in order from ``first``.
    """
    data = await transport.request(
        peer,
        protocol,
        wire.encode(SyncRequest(first, last)),
        timeout=SYNC_TIMEOUT_S,
        max_response_bytes=MAX_SYNC_RESPONSE,
    )
    try:
        response = wire.decode_as(data, SyncResponse, MAX_SYNC_RESPONSE)
        certs = [wire.decode_as(raw, Certificate, wire.MAX_MESSAGE_BYTES) for raw in response.certificates]
    except CodecError as exc:
        raise Reject("malformed", str(exc)) from None
    for offset, cert in enumerate(certs):
        if cert.epoch != first + offset:
            raise Reject("wrong_epoch", f"sync sent epoch {cert.epoch}, expected {first + offset}")
    return certs


class CatchUp:
    """The sync client: fetches certificates by range and submits them to the consensus loop.

    Args:
        transport: where the peers are.
        protocol: the ``/sync/1`` protocol id.
        submit: hands certificates to the loop and returns once it has handled them.
        last_epoch: the ledger's last committed epoch.
    """

    def __init__(
        self,
        transport: Transport,
        protocol: str,
        submit: Callable[[Sequence[Certificate], PeerId], Awaitable[None]],
        last_epoch: Callable[[], int],
    ) -> None:
        self._transport = transport
        self._protocol = protocol
        self._submit = submit
        self._last_epoch = last_epoch
        self._chasing = False
        self._again: tuple[PeerId, int] | None = None  # the furthest request made while a chase ran
        self._waiting: set[int] = set()  # epochs a chase_after waits for

    async def chase(self, peer: PeerId, up_to: int) -> None:
        """Catch up to ``up_to``, from ``peer`` first, then the others; one chase at a time.

        The loop asks for this when a peer shows a certificate past our next epoch. A
        request made while a chase runs is remembered, the furthest one only, and run once
        the chase ends if it still asks for more: a flood of far certificates costs one more
        sync, and a notice from a peer that committed meanwhile is not lost (its sender may
        not have committed when the first chase asked it).
        """
        if self._chasing:
            if self._again is None or up_to >= self._again[1]:
                self._again = (peer, up_to)
            return
        self._chasing = True
        try:
            while True:
                others = sorted(p for p in self._transport.peers() if p != peer)
                applied = await self.from_any([peer, *others], up_to)
                log.info("consensus.sync.caught_up", applied=applied, last_epoch=self._last_epoch())
                again, self._again = self._again, None
                if again is None or again[1] <= self._last_epoch():
                    break
                peer, up_to = again
        finally:
            self._chasing = False

    async def chase_after(
        self, peer: PeerId, up_to: int, delay_s: float, settled: Callable[[], Awaitable[bool]]
    ) -> None:
        """:meth:`chase` after ``delay_s`` unless ``up_to`` committed or ``settled()`` by then.

        For a commit notice of a value this node lacks: the proposal may still be on its
        way or in its check. One wait per epoch, however many notices name it.
        """
        if up_to in self._waiting:
            return
        self._waiting.add(up_to)
        try:
            await trio.sleep(delay_s)
            if self._last_epoch() >= up_to or await settled():
                return
        finally:
            self._waiting.discard(up_to)
        await self.chase(peer, up_to)

    async def from_peer(self, peer: PeerId, up_to: int) -> int:
        """Catch up from ``peer`` until ``up_to``; return the epochs committed meanwhile.

        Raises:
            TransportError: the peer did not answer.
            Reject: the peer sent something malformed, or a certificate the loop refused.
        """
        start = self._last_epoch()
        while (first := self._last_epoch() + 1) <= up_to:
            certs = await fetch_certificates(self._transport, self._protocol, peer, first, up_to)
            if not certs:
                break
            await self._submit(certs, peer)
            if self._last_epoch() < certs[-1].epoch:
                raise Reject("refused", f"epoch {self._last_epoch() + 1} from {peer} did not commit")
        return self._last_epoch() - start

    async def from_any(self, peers: Sequence[PeerId], up_to: int) -> int:
        """Try :meth:`from_peer` with each peer in turn; peers that fail are skipped."""
        total = 0
        for peer in peers:
            try:
                total += await self.from_peer(peer, up_to)
            except (TransportError, DepinError) as exc:
                log.info("consensus.sync.peer_failed", peer=str(peer), error=str(exc))
                continue
            if self._last_epoch() >= up_to:
                break
        return total

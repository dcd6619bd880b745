"""An in-memory ledger: the same ``LedgerView`` as the LMDB store, in dicts.

For tests and the in-process simulator. It commits :class:`StateChanges`
exactly as the store does, so both backends give byte-identical roots.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TypeVar

import trio

from depin_p2p import wire
from depin_p2p.errors import InternalError
from depin_p2p.ledger import merkle
from depin_p2p.ledger.state import (
    META_KEY,
    NS_ACCOUNT,
    NS_DEVICE,
    NS_EVIDENCE,
    NS_VALIDATOR,
    ZERO_HASH,
    Account,
    DeviceRecord,
    LedgerMeta,
    StateChanges,
    UsedEvidence,
    ValidatorStake,
)
from depin_p2p.model import Device

T = TypeVar("T")


class MemoryLedger:
    """A mutable in-memory ledger state implementing ``state.LedgerView``.

    Starts empty (epoch 0, supply 0); apply the genesis changes with
    :meth:`commit` like any epoch.
    """

    def __init__(self) -> None:
        self.accounts: dict[bytes, Account] = {}
        self.devices: dict[bytes, Device] = {}
        self.validators: dict[bytes, ValidatorStake] = {}
        self.evidence: dict[bytes, UsedEvidence] = {}
        self.meta = LedgerMeta(0, 0, ZERO_HASH)
        self.commit_count = 0  # as LedgerStore.commit_count
        self.certificate_hash = ZERO_HASH
        self.certificates: dict[int, bytes] = {}
        # The Merkle tree's records by hash (``ledger.merkle``); stale ones are dropped at once.
        self._nodes: dict[bytes, bytes] = {}
        self._root = merkle.EMPTY_ROOT

    # LedgerView
    def get_account(self, account_id: bytes) -> Account | None:
        return self.accounts.get(account_id)

    def get_device(self, device_id: bytes) -> Device | None:
        return self.devices.get(device_id)

    def iter_devices(self) -> Iterator[Device]:
        return iter([self.devices[k] for k in sorted(self.devices)])

    def get_validator(self, address: bytes) -> ValidatorStake | None:
        return self.validators.get(address)

    def iter_validators(self) -> Iterator[tuple[bytes, ValidatorStake]]:
        return iter(sorted(self.validators.items()))

    def get_used_evidence(self, evidence_id: bytes) -> UsedEvidence | None:
        return self.evidence.get(evidence_id)

    def iter_used_evidence(self) -> Iterator[tuple[bytes, UsedEvidence]]:
        return iter(sorted(self.evidence.items()))

    def get_meta(self) -> LedgerMeta:
        return self.meta

    def last_certificate_hash(self) -> bytes:
        return self.certificate_hash

    def merkle_root(self) -> bytes:
        return self._root

    def merkle_node(self, node: bytes) -> bytes | None:
        return self._nodes.get(node)

    def merkle_value(self, key: bytes) -> bytes | None:
        ns, rest = key[:1], key[1:]
        record: object = None
        if key == META_KEY:
            record = self.meta
        elif ns == NS_ACCOUNT:
            record = self.accounts.get(rest)
        elif ns == NS_DEVICE:
            device = self.devices.get(rest)
            record = None if device is None else DeviceRecord(device)
        elif ns == NS_VALIDATOR:
            record = self.validators.get(rest)
        elif ns == NS_EVIDENCE:
            record = self.evidence.get(rest)
        return None if record is None else wire.encode(record)

    def state_root(self) -> bytes:
        return self._root

    def commit(
        self, changes: StateChanges, certificate: bytes, certificate_hash: bytes | None = None
    ) -> None:
        """Apply ``changes``; ``certificate`` is recorded and ``certificate_hash`` (by default
        ``content_id(certificate)``) becomes the last certificate hash, as in ``LedgerStore.commit_epoch``.

        For the genesis (epoch 0) ``certificate`` is ignored: the last
        certificate hash becomes the genesis hash (``changes.meta.prev_certificate_hash``).
        """
        if changes.prev_root != self.state_root():
            raise InternalError("state changes were computed against another state")
        for aid, acct in changes.accounts:
            self.accounts[aid] = acct
        for did, dev in changes.devices:
            self.devices[did] = dev
        for addr, vs in changes.validators:
            if vs is None:
                self.validators.pop(addr, None)
            else:
                self.validators[addr] = vs
        for eid, used in changes.evidence:
            if used is None:
                self.evidence.pop(eid, None)
            else:
                self.evidence[eid] = used
        self.meta = changes.meta
        nodes = self._nodes
        for stale in changes.merkle.stale:
            del nodes[stale]
        nodes.update(changes.merkle.nodes)
        self._root = changes.root
        self.commit_count += 1
        if changes.epoch == 0:
            self.certificate_hash = changes.meta.prev_certificate_hash
        else:
            self.certificates[changes.epoch] = certificate
            self.certificate_hash = (
                wire.content_id(certificate) if certificate_hash is None else certificate_hash
            )

    def entries(self) -> Iterator[tuple[bytes, bytes]]:
        """Every Merkle ``(key, value)`` pair of the state."""
        for aid, acct in self.accounts.items():
            yield NS_ACCOUNT + aid, wire.encode(acct)
        for did, dev in self.devices.items():
            yield NS_DEVICE + did, wire.encode(DeviceRecord(dev))
        for addr, vs in self.validators.items():
            yield NS_VALIDATOR + addr, wire.encode(vs)
        for eid, used in self.evidence.items():
            yield NS_EVIDENCE + eid, wire.encode(used)
        yield META_KEY, wire.encode(self.meta)

    # The parts of LedgerStore's API the node's services use, so a simulator can swap it in.
    def read(self, fn: Callable[[MemoryLedger], T]) -> T:
        """Run ``fn`` on this ledger (a consistent view: nothing else runs meanwhile)."""
        return fn(self)

    def last_epoch(self) -> int:
        return self.meta.epoch

    def get_certificate(self, epoch: int) -> bytes | None:
        return self.certificates.get(epoch)

    def commit_epoch(
        self,
        changes: StateChanges,
        certificate: bytes,
        *,
        certificate_hash: bytes | None = None,
    ) -> None:
        """As ``LedgerStore.commit_epoch``, in memory."""
        self.commit(changes, certificate, certificate_hash)

    async def commit_epoch_async(
        self,
        changes: StateChanges,
        certificate: bytes,
        *,
        certificate_hash: bytes | None = None,
    ) -> None:
        """As ``LedgerStore.commit_epoch_async``, in memory (no thread, so virtual time holds)."""
        self.commit_epoch(changes, certificate, certificate_hash=certificate_hash)
        await trio.lowlevel.checkpoint()

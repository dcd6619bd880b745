"""The ledger on LMDB: one environment, one writer, one write transaction per epoch.

Named databases: ``accounts``, ``devices``, ``validators``, ``evidence``
(wire bytes of the records, keyed by 32-byte id), ``certificates`` (opaque bytes keyed
by u64 big-endian epoch: consensus's encoded certificate, which carries the epoch's value,
so the value is stored once, there), ``sign_state`` (consensus's own
persisted vote state), ``meta`` (``state``: LedgerMeta, ``state_root``,
``last_epoch``, ``last_certificate_hash``, ``genesis_hash``, ``format``),
and the Merkle tree (see ``ledger.merkle``): ``merkle_nodes`` (the hash of a
leaf, or of a node heading a page -> its record), ``merkle_stale`` (``u64 version ‖ hash`` -> empty:
the records that left the tree in that version) and ``merkle_roots`` (``u64
version`` -> root) for the versions still kept.

Versions. Every epoch writes the new records of its tree; the records its
tree dropped stay for ``keep_versions`` more epochs (default
:data:`DEFAULT_KEEP_VERSIONS`), so a proof against any of the last few
roots can still be built (``prove(view, key, root=view.state_root_at(e))``).
Then they are pruned in a later commit: a record is deleted only if no
newer version wrote it again (its record's version is not newer than the
stale entry's). With ``keep_versions=0`` dropped records are deleted in the
commit that drops them.

:meth:`LedgerStore.commit_epoch` writes an epoch's state changes, Merkle
tree records, root, certificate and ``last_epoch`` in ONE write
transaction, so a reader or a restart after a crash sees the state after some whole
epoch, never half of one, with that epoch's tree. LMDB syncs each commit
(``sync=True``). The map is grown before a commit that may not fit it; should
one still fill it, the transaction is aborted, the map doubled and the write
retried. A second process opening the same store for writing gets a
StorageError (an exclusive ``flock`` on ``writer.lock``).

All methods block; trio code calls the ``*_async`` wrappers, which run them
in a worker thread with ``trio.to_thread.run_sync``, except where a short
call on the loop measured faster (the sign-state write, and the reads and
commit of a small epoch value: ``consensus/ledger_io.py``).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import threading
from collections.abc import Callable, Iterator
from operator import itemgetter
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import lmdb
import msgpack
import trio

from depin_p2p import wire
from depin_p2p.errors import CodecError, InternalError, StorageError
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
    EpochValue,
    LedgerMeta,
    StateChanges,
    UsedEvidence,
    ValidatorStake,
    account_key,
    apply_epoch,
)
from depin_p2p.model import Device

# Format 7: unbonding entries and used-evidence records (2), Merkle buckets as one row each
# (3), leaves bound to their keys (4), the sparse Merkle tree with path compression, its
# nodes stored by hash with pruned old versions (5: every root changed), no ``epoch_values``
# database: the certificate alone holds the epoch value (6), the tree's nodes stored as pages
# of four levels with their leaves' paths (7: the same roots, fewer and larger records).
# Older stores are refused: re-run `init`.
FORMAT = b"depin-p2p/ledger/7"
DEFAULT_KEEP_VERSIONS = 4
DEFAULT_MAP_SIZE = 64 << 20
MAX_MAP_SIZE = 1 << 40
_DB_NAMES = (
    "accounts",
    "devices",
    "validators",
    "certificates",
    "sign_state",
    "meta",
    "merkle_nodes",
    "merkle_stale",
    "merkle_roots",
    "evidence",
)
_K_STATE = b"state"
# The record database of each Merkle key namespace (``ledger.state``).
_NS_DBS = {NS_ACCOUNT: "accounts", NS_DEVICE: "devices", NS_VALIDATOR: "validators", NS_EVIDENCE: "evidence"}
_K_ROOT = b"state_root"
_K_LAST_EPOCH = b"last_epoch"
_K_LAST_CERT = b"last_certificate_hash"
_K_GENESIS = b"genesis_hash"
_K_FORMAT = b"format"
_K_SIGN_STATE = b"sign_state"

T = TypeVar("T")


def _u64(n: int) -> bytes:
    return n.to_bytes(8, "big")


def _decode(data: bytes, cls: type[T], what: str) -> T:
    """Decode a record we wrote ourselves: strict field checks, no canonical re-encode.

    Skipping the re-encode halves the cost of a read; the Merkle tree hashes
    re-encoded values, so even a non-canonical (corrupt) record cannot make
    two nodes disagree silently.
    """
    try:
        raw = msgpack.unpackb(data, use_list=False, raw=False, strict_map_key=True)
    except (ValueError, msgpack.UnpackException) as exc:
        raise StorageError(f"ledger store is corrupt: bad {what} record: {exc}") from None
    if type(raw) is not tuple or len(raw) < 2 or raw[0:2] != (wire.WIRE_VERSION, wire.info_of(cls).type_id):
        raise StorageError(f"ledger store is corrupt: bad {what} record: not a {cls.__name__}")
    try:
        return wire.schema_of(cls).from_raw_fields(raw[2:], cls.__name__)  # type: ignore[no-any-return]
    except CodecError as exc:
        raise StorageError(f"ledger store is corrupt: bad {what} record: {exc}") from None


_ACCOUNT_HEADER = (wire.WIRE_VERSION, wire.info_of(Account).type_id)
_unpackb = msgpack.unpackb


def _decode_account(data: bytes) -> Account:
    # The hot read of every epoch: a direct check of the 4-element array (msgpack
    # ints are never above u64, bools are not ints); anything unusual goes
    # through the generic decoder for a precise error.
    try:
        raw = _unpackb(data, use_list=False)
    except (ValueError, msgpack.UnpackException):
        raw = None
    if type(raw) is tuple and len(raw) == 4 and raw[0] == _ACCOUNT_HEADER[0] and raw[1] == _ACCOUNT_HEADER[1]:
        balance, nonce = raw[2], raw[3]
        if type(balance) is int and type(nonce) is int and balance >= 0 and nonce >= 0:
            return Account(balance, nonce)
    return _decode(data, Account, "account")


class LmdbView:
    """A consistent read-only view of the store (one LMDB read transaction).

    Implements ``state.LedgerView``; valid only inside ``LedgerStore.view()``.
    """

    def __init__(self, txn: lmdb.Transaction[bytes], dbs: dict[str, Any]) -> None:
        self._txn = txn
        self._dbs = dbs
        self._accounts = dbs["accounts"]
        self._devices = dbs["devices"]
        self._nodes = dbs["merkle_nodes"]
        # Decoded devices, for this view's life (one snapshot, so exact): a value check reads the
        # same few dozen devices hundreds of times (each report's witness, each reward's owner).
        self._device_memo: dict[bytes, Device | None] = {}
        # The tree update's hot read (one per node on a changed path), without a Python frame.
        self.merkle_record: Callable[[bytes], bytes | None] = functools.partial(txn.get, db=self._nodes)

    def _get(self, db: str, key: bytes) -> bytes | None:
        return self._txn.get(key, db=self._dbs[db])

    def get_account(self, account_id: bytes) -> Account | None:
        raw = self._txn.get(account_id, db=self._accounts)
        return None if raw is None else _decode_account(raw)

    def get_device(self, device_id: bytes) -> Device | None:
        memo = self._device_memo
        if device_id in memo:
            return memo[device_id]
        raw = self._txn.get(device_id, db=self._devices)
        device = None if raw is None else _decode(raw, DeviceRecord, "device").device
        memo[device_id] = device
        return device

    def iter_devices(self) -> Iterator[Device]:
        cursor = self._txn.cursor(db=self._dbs["devices"])
        rows = [_decode(bytes(v), DeviceRecord, "device").device for _, v in cursor]
        return iter(rows)

    def get_validator(self, address: bytes) -> ValidatorStake | None:
        raw = self._get("validators", address)
        return None if raw is None else _decode(raw, ValidatorStake, "validator")

    def iter_validators(self) -> Iterator[tuple[bytes, ValidatorStake]]:
        cursor = self._txn.cursor(db=self._dbs["validators"])
        rows = [(bytes(k), _decode(bytes(v), ValidatorStake, "validator")) for k, v in cursor]
        return iter(rows)

    def get_used_evidence(self, evidence_id: bytes) -> UsedEvidence | None:
        raw = self._get("evidence", evidence_id)
        return None if raw is None else _decode(raw, UsedEvidence, "evidence")

    def iter_used_evidence(self) -> Iterator[tuple[bytes, UsedEvidence]]:
        cursor = self._txn.cursor(db=self._dbs["evidence"])
        rows = [(bytes(k), _decode(bytes(v), UsedEvidence, "evidence")) for k, v in cursor]
        return iter(rows)

    def get_meta(self) -> LedgerMeta:
        raw = self._get("meta", _K_STATE)
        return LedgerMeta(0, 0, ZERO_HASH) if raw is None else _decode(raw, LedgerMeta, "meta")

    def last_certificate_hash(self) -> bytes:
        return self._get("meta", _K_LAST_CERT) or ZERO_HASH

    def last_epoch(self) -> int:
        raw = self._get("meta", _K_LAST_EPOCH)
        return -1 if raw is None else int.from_bytes(raw, "big")

    def merkle_value(self, key: bytes) -> bytes | None:
        if key == META_KEY:
            return self._get("meta", _K_STATE)
        db = _NS_DBS.get(key[:1])
        return None if db is None else self._get(db, key[1:])

    def merkle_root(self) -> bytes:
        return self.state_root()

    def account_proof_doc(self, account_id: bytes) -> dict[str, Any]:
        """An account's Merkle proof for a light client (JSON-able, hex): what ``/account?prove=1`` returns.

        ``{"key", "value" (null: absent), "state_root", "epoch", "proof", "bytes"}``;
        the client checks it with ``merkle.verify_proof_bytes`` against a root it trusts
        (a certificate's).
        """
        key = account_key(account_id)
        value, proof = self.merkle_value(key), wire.encode(merkle.prove(self, key))
        return {
            "key": key.hex(),
            "value": None if value is None else value.hex(),
            "state_root": self.state_root().hex(),
            "epoch": self.last_epoch(),
            "proof": proof.hex(),
            "bytes": len(proof),
        }

    def merkle_node(self, node: bytes) -> bytes | None:
        record = self._txn.get(node, db=self._nodes)
        if record is None:  # asked only for nodes its tree refers to
            raise StorageError(f"ledger store is corrupt: Merkle node {node.hex()} is missing")
        return record

    def state_root_at(self, epoch: int) -> bytes | None:
        """The root after ``epoch`` if its tree is still kept (see the module docstring), else None."""
        if epoch == self.last_epoch():
            return self.state_root()
        return self._get("merkle_roots", _u64(epoch))

    def state_root(self) -> bytes:
        return self._get("meta", _K_ROOT) or merkle.EMPTY_ROOT

    def get_certificate(self, epoch: int) -> bytes | None:
        return self._get("certificates", _u64(epoch))

    def entries(self) -> Iterator[tuple[bytes, bytes]]:
        """Every Merkle ``(key, value)`` pair of the state, read from the record databases."""
        namespaces = (
            ("accounts", NS_ACCOUNT),
            ("devices", NS_DEVICE),
            ("validators", NS_VALIDATOR),
            ("evidence", NS_EVIDENCE),
        )
        for db, ns in namespaces:
            for key, value in self._txn.cursor(db=self._dbs[db]):
                yield ns + bytes(key), bytes(value)
        raw = self._get("meta", _K_STATE)
        if raw is not None:
            yield META_KEY, raw


def _can_write_lock_table(path: Path) -> bool:
    """Whether this process may use LMDB's reader table (``lock.mdb``) in ``path``.

    A reader registers its snapshot there so that a writer does not reuse
    its pages. A user who may not write the file (a monitoring account, a
    home shared read-only) cannot; on a read-only file system LMDB already
    goes without it.
    """
    table = path / "lock.mdb"
    return os.access(table, os.R_OK | os.W_OK) if table.exists() else os.access(path, os.W_OK)


def _hold_off_writers(path: Path) -> int | None:
    """For a read without the reader table: make sure no node writes the ledger meanwhile.

    Takes a shared ``flock`` on ``writer.lock`` (a writer holds it
    exclusively for its lifetime), kept until the store is closed; a node
    starting during the read is told the ledger is in use. Returns the
    descriptor, or None for a store without ``writer.lock``.

    Raises:
        StorageError: a node is writing the ledger.
    """
    try:
        fd = os.open(path / "writer.lock", os.O_RDONLY)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StorageError(f"cannot read ledger at {path}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise StorageError(
            f"the ledger at {path} is being written by a running node and this user may not "
            "register as its reader (lock.mdb is not writable): ask the node (`balance` without "
            "--prove) or read as the home's owner"
        ) from None
    return fd


def _open_env(
    path: Path, *, readonly: bool, map_size: int
) -> tuple[lmdb.Environment, dict[str, Any], int | None]:
    """The environment, its databases and the writer lock of :meth:`LedgerStore.open`."""
    lock_fd = None
    lock_table = True
    if readonly:
        if not (path / "data.mdb").exists():
            raise StorageError(f"no ledger at {path} (run `depin-p2p init` first)")
        lock_table = _can_write_lock_table(path)
        if not lock_table:
            lock_fd = _hold_off_writers(path)
    else:
        try:
            path.mkdir(parents=True, exist_ok=True)
            lock_fd = os.open(path / "writer.lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StorageError(f"cannot create ledger at {path}: {exc.strerror}") from None
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(lock_fd)
            raise StorageError(f"ledger at {path} is in use by another process") from None
    env: lmdb.Environment | None = None
    dbs: dict[str, Any] = {}
    try:
        env = lmdb.open(
            str(path),
            map_size=map_size,
            max_dbs=len(_DB_NAMES) + 1,
            readonly=readonly,
            lock=lock_table,
            sync=True,
            metasync=True,
        )
        # The format is checked before any other database is created in an old store.
        with env.begin(db=env.open_db(b"meta", create=not readonly)) as txn:
            fmt = txn.get(_K_FORMAT)
        if fmt is None or fmt == FORMAT:
            dbs = {name: env.open_db(name.encode(), create=not readonly) for name in _DB_NAMES}
    except lmdb.Error as exc:
        error = f"cannot open ledger at {path}: {exc}"
    else:
        if not dbs:
            found = (fmt or b"").decode("ascii", "replace")
            error = (
                f"{path} holds ledger format {found!r}, this version needs {FORMAT.decode()!r}: "
                "re-run `depin-p2p init` (with --force) to recreate it"
            )
        else:
            return env, dbs, lock_fd
    if env is not None:
        env.close()
    if lock_fd is not None:
        os.close(lock_fd)
    raise StorageError(error)


def _put_tree(txn: lmdb.Transaction[bytes], db: dict[str, Any], changes: StateChanges, keep: int) -> None:
    # The epoch's new Merkle records; its dropped ones deleted now or kept and pruned later.
    # In key order: consecutive writes then land on the B-tree pages the previous ones
    # touched (random hashes in tree order: about a third more commit time at 10k changes).
    nodes = db["merkle_nodes"]
    update = changes.merkle
    txn.cursor(db=nodes).putmulti(sorted(update.nodes, key=itemgetter(0)))
    dropped = sorted(update.stale)
    if keep <= 0:
        for node in dropped:
            txn.delete(node, db=nodes)
        return
    version = _u64(changes.epoch)
    stale = db["merkle_stale"]
    txn.cursor(db=stale).putmulti([(version + node, b"") for node in dropped])
    txn.put(version, changes.root, db=db["merkle_roots"])
    _prune(txn, db, changes.epoch - keep)


def _prune(txn: lmdb.Transaction[bytes], db: dict[str, Any], oldest: int) -> None:
    # Keep the trees of versions ``oldest`` .. now: the records that left the tree in a
    # version <= ``oldest`` are in none of them; the roots before ``oldest`` go too.
    if oldest <= 0:
        return
    nodes, oldest_key = db["merkle_nodes"], _u64(oldest)
    cursor = txn.cursor(db=db["merkle_stale"])
    get, delete = txn.get, txn.delete
    more = cursor.first()
    while more:
        entry = cursor.key()
        if not entry or entry[:8] > oldest_key:
            break
        node = entry[8:]
        record = get(node, db=nodes)
        # Not if a newer version wrote the same record again (it is live there).
        if record is not None and record[1:9] <= entry[:8]:
            delete(node, db=nodes)
        more = cursor.delete()
    roots = txn.cursor(db=db["merkle_roots"])
    while roots.first() and roots.key() < oldest_key:
        roots.delete()


def _bytes_written(changes: StateChanges) -> int:
    # About what a commit of ``changes`` writes: records, tree records (pages are up to
    # about 2 KB), stale entries.
    update = changes.merkle
    tree = sum(len(record) for _, record in update.nodes) + 64 * len(update.nodes)
    return 128 * len(changes.records) + tree + 48 * len(update.stale) + 4096


class _Gate:
    """Shared by every open transaction of this process; held alone to grow the map.

    LMDB lets read transactions run beside each other and beside the one
    write transaction, but ``set_mapsize`` needs none open in this process.
    A waiting grower keeps new transactions out, so a stream of readers
    cannot hold it off.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._open = 0  # transactions in progress
        self._growing = 0  # growers waiting or at work
        self._held = False  # a grower at work (one at a time)

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            while self._growing:
                self._cond.wait()
            self._open += 1
        try:
            yield
        finally:
            with self._cond:
                self._open -= 1
                if not self._open:
                    self._cond.notify_all()

    @contextlib.contextmanager
    def alone(self) -> Iterator[None]:
        with self._cond:
            self._growing += 1
            while self._open or self._held:
                self._cond.wait()
            self._held = True
        try:
            yield
        finally:
            with self._cond:
                self._held = False
                self._growing -= 1
                self._cond.notify_all()


class LedgerStore:
    """The node's ledger in an LMDB directory. Open with :meth:`open`; close with :meth:`close`."""

    def __init__(
        self,
        path: Path,
        env: lmdb.Environment,
        dbs: dict[str, Any],
        lock_fd: int | None,
        readonly: bool,
        *,
        keep_versions: int = DEFAULT_KEEP_VERSIONS,
    ) -> None:
        self.path = path
        self._env = env
        self._dbs = dbs
        self._lock_fd = lock_fd
        self._readonly = readonly
        # Write transactions one at a time (this lock); read views beside them and beside each
        # other (LMDB's readers see a snapshot); growing the map with no transaction open in
        # this process at all (the gate, held alone).
        self._mutex = threading.Lock()
        self._gate = _Gate()
        self.keep_versions = keep_versions
        # Epochs (and the genesis) this object committed: a memo of committed state is good while
        # this is unchanged (this process is the store's only writer).
        self.commit_count = 0

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        readonly: bool = False,
        map_size: int = DEFAULT_MAP_SIZE,
        keep_versions: int = DEFAULT_KEEP_VERSIONS,
    ) -> LedgerStore:
        """Open (and for writing, create) the store at directory ``path``.

        Read-only needs no write access at all: when this user cannot write
        ``lock.mdb``, the store is read without LMDB's reader table, which is
        safe only while no node writes it, so a running writer is then an
        error (see :func:`_hold_off_writers`). ``keep_versions``: how many
        epochs before the last one keep their Merkle tree (their dropped
        records are pruned after that).

        Raises:
            StorageError: missing (read-only), locked by another writer,
                unreadable, or not a depin-p2p ledger.
        """
        env, dbs, lock_fd = _open_env(path, readonly=readonly, map_size=map_size)
        return cls(path, env, dbs, lock_fd, readonly, keep_versions=keep_versions)

    def close(self) -> None:
        """Close the environment and release the writer lock. Idempotent."""
        with self._mutex, self._gate.alone():
            self._env.close()
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    def __enter__(self) -> LedgerStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ reads

    @contextlib.contextmanager
    def view(self) -> Iterator[LmdbView]:
        """A consistent read view for the ``with`` block, beside other views and a commit.

        Never call another store method inside it (growing the map waits for it to end).
        """
        for attempt in (1, 2):
            with self._gate.shared():
                try:
                    txn = self._env.begin(write=False)
                except lmdb.MapResizedError:
                    if attempt == 2:
                        raise StorageError(f"cannot read ledger at {self.path}: map resized again") from None
                    txn = None
                except lmdb.Error as exc:
                    raise StorageError(f"cannot read ledger at {self.path}: {exc}") from None
                if txn is not None:
                    try:
                        yield LmdbView(txn, self._dbs)
                    finally:
                        txn.abort()
                    return
            with self._gate.alone():  # another process grew the map: adopt its size, no txn open here
                self._env.set_mapsize(0)

    def read(self, fn: Callable[[LmdbView], T]) -> T:
        """Run ``fn`` on a fresh read view and return its result."""
        with self.view() as view:
            return fn(view)

    def last_epoch(self) -> int:
        """The last committed epoch: 0 after genesis, -1 for an empty store."""
        return self.read(LmdbView.last_epoch)

    def state_root(self) -> bytes:
        return self.read(LmdbView.state_root)

    def apply(self, value: EpochValue, network_id: str) -> StateChanges:
        """``state.apply_epoch`` against the current committed state (raises its Reject)."""
        with self.view() as view:
            return apply_epoch(view, value, network_id)

    def load_sign_state(self) -> bytes | None:
        """Consensus's persisted sign state, or None if never saved."""
        return self.read(lambda v: v._get("sign_state", _K_SIGN_STATE))

    # ----------------------------------------------------------------- writes

    def _reserve(self, need: int) -> None:
        """Grow the map, before a write of about ``need`` bytes of records, so that it fits.

        A full map aborts the write transaction and :meth:`_write` redoes it
        whole (a 10k-change epoch over 100k accounts: its commit two to five
        times in a growing store). A transaction may copy every page it
        touches before the old ones are free, so room is kept for the used
        pages twice plus the new records with B-tree overhead. The map is
        only address space: the file grows with the data, not with it.
        """
        info = self._env.info()
        used = (info["last_pgno"] + 1) * self._env.stat()["psize"]
        size = target = info["map_size"]
        while target < 2 * used + 4 * need and target < MAX_MAP_SIZE:
            target *= 2
        if target != size:
            with self._gate.alone():
                self._env.set_mapsize(min(target, MAX_MAP_SIZE))

    def _write(
        self,
        fn: Callable[[lmdb.Transaction[bytes]], None],
        on_commit: Callable[[], None] | None = None,
        *,
        need: int = 0,
    ) -> None:
        """Run ``fn`` in one write transaction; if it committed, ``on_commit`` (still under the lock).

        ``need``: about how many bytes of records ``fn`` writes (see :meth:`_reserve`).
        """
        if self._readonly:
            raise InternalError("write to a read-only ledger store")
        with self._mutex:
            try:
                self._reserve(need)
            except lmdb.Error as exc:
                raise StorageError(f"cannot write ledger at {self.path}: {exc}") from None
            while True:
                try:
                    with self._gate.shared(), self._env.begin(write=True) as txn:
                        fn(txn)
                except lmdb.MapFullError:
                    # The failed txn was aborted by the context manager; grow and redo it all.
                    size = self._env.info()["map_size"] * 2
                    if size > MAX_MAP_SIZE:
                        msg = f"ledger at {self.path} would exceed {MAX_MAP_SIZE} bytes"
                        raise StorageError(msg) from None
                    with self._gate.alone():
                        self._env.set_mapsize(size)
                except lmdb.Error as exc:
                    raise StorageError(f"cannot write ledger at {self.path}: {exc}") from None
                else:
                    if on_commit is not None:
                        on_commit()
                    return

    def _put_changes(self, txn: lmdb.Transaction[bytes], changes: StateChanges) -> None:
        db = self._dbs
        by_db: dict[int, tuple[Any, list[tuple[bytes, bytes]]]] = {
            NS_ACCOUNT[0]: (db["accounts"], []),
            NS_DEVICE[0]: (db["devices"], []),
            NS_VALIDATOR[0]: (db["validators"], []),
            NS_EVIDENCE[0]: (db["evidence"], []),
        }
        for key, value in changes.records:
            if key == META_KEY:
                if value is None:
                    raise InternalError("state changes delete the meta record")
                txn.put(_K_STATE, value, db=db["meta"])
                continue
            target, puts = by_db[key[0]]
            if value is None:
                txn.delete(key[1:], db=target)
            else:
                puts.append((key[1:], value))
        for target, puts in by_db.values():
            txn.cursor(db=target).putmulti(puts)
        _put_tree(txn, db, changes, self.keep_versions)
        txn.put(_K_ROOT, changes.root, db=db["meta"])
        txn.put(_K_LAST_EPOCH, _u64(changes.epoch), db=db["meta"])

    def _check_base(self, txn: lmdb.Transaction[bytes], changes: StateChanges) -> None:
        view = LmdbView(txn, self._dbs)
        if changes.epoch != view.last_epoch() + 1:
            raise InternalError(f"commit of epoch {changes.epoch} onto epoch {view.last_epoch()}")
        if changes.prev_root != view.state_root():
            raise InternalError("state changes were computed against another state")

    def commit_genesis(self, changes: StateChanges) -> None:
        """Write the genesis state (epoch 0) into an empty store.

        Raises InternalError if the store is not empty.
        """

        def write(txn: lmdb.Transaction[bytes]) -> None:
            self._check_base(txn, changes)
            self._put_changes(txn, changes)
            meta = self._dbs["meta"]
            txn.put(_K_FORMAT, FORMAT, db=meta)
            txn.put(_K_GENESIS, changes.meta.prev_certificate_hash, db=meta)
            txn.put(_K_LAST_CERT, changes.meta.prev_certificate_hash, db=meta)

        self._write(write, self._note_commit, need=_bytes_written(changes))

    def _note_commit(self) -> None:
        self.commit_count += 1
    def commit_epoch(
        self,
        changes: StateChanges,
        certificate: bytes,
        *,
        certificate_hash: bytes | None = None,
    ) -> None:
        """Commit one epoch atomically: state changes, tree records, root, certificate, last_epoch.

        ``certificate`` is opaque bytes (consensus defines it; its encoded
        certificate carries the epoch value, stored nowhere else).
        ``certificate_hash`` is the chain link the next epoch value must
        build on; consensus passes its own (the decided value's id, the same on
        every node whatever signatures its certificate holds); by default
        ``content_id(certificate)``.

        Raises:
            InternalError: ``changes`` is not for last_epoch + 1 or was computed
                against another state.
            StorageError: the disk refused the write.
        """

        def write(txn: lmdb.Transaction[bytes]) -> None:
            self._check_base(txn, changes)
            self._put_changes(txn, changes)
            epoch = _u64(changes.epoch)
            txn.put(epoch, certificate, db=self._dbs["certificates"])
            link = wire.content_id(certificate) if certificate_hash is None else certificate_hash
            txn.put(_K_LAST_CERT, link, db=self._dbs["meta"])

        self._write(write, self._note_commit, need=_bytes_written(changes) + len(certificate))

    def save_sign_state(self, data: bytes) -> None:
        """Persist consensus's sign state; synced to disk when this returns (persist before send)."""

        def write(txn: lmdb.Transaction[bytes]) -> None:
            txn.put(_K_SIGN_STATE, data, db=self._dbs["sign_state"])

        # One synced write: the environment is opened with sync=True and metasync=True (never
        # map_async), so the commit returns after the data and meta pages are on disk.
        self._write(write)

    # ------------------------------------------------------------ async shell

    async def commit_epoch_async(
        self,
        changes: StateChanges,
        certificate: bytes,
        *,
        certificate_hash: bytes | None = None,
    ) -> None:
        """:meth:`commit_epoch` in a worker thread.

        Cancellation: the thread is not abandoned (``abandon_on_cancel=False``),
        so a cancelled caller still waits for the commit to finish or fail;
        an epoch is either fully committed or not at all.
        """
        commit = functools.partial(self.commit_epoch, certificate_hash=certificate_hash)
        await trio.to_thread.run_sync(commit, changes, certificate)

    async def apply_async(self, value: EpochValue, network_id: str) -> StateChanges:
        """:meth:`apply` in a worker thread; cancellation waits for it to finish (read only)."""
        return await trio.to_thread.run_sync(self.apply, value, network_id)

    async def save_sign_state_async(self, data: bytes) -> None:
        """:meth:`save_sign_state` in a worker thread; cancellation waits for the synced write."""
        await trio.to_thread.run_sync(self.save_sign_state, data)

    async def load_sign_state_async(self) -> bytes | None:
        """:meth:`load_sign_state` in a worker thread."""
        return await trio.to_thread.run_sync(self.load_sign_state)

    async def read_async(self, fn: Callable[[LmdbView], T]) -> T:
        """:meth:`read` in a worker thread."""
        return await trio.to_thread.run_sync(self.read, fn)

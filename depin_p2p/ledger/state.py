"""Ledger state and the epoch transition. [pure]

State: accounts (balance, nonce), devices (``model.Device``), validators
(bonded stake = voting power, plus stake unbonding), the evidence already
punished, and one meta record (epoch, total supply, previous certificate
hash). Amounts are integer micro-units; nothing here uses floats.

Transactions are wire messages in the TX domain, sealed in an envelope by
the account key (the envelope signer is the sending account), each carrying
that account's next nonce (``nonce == account.nonce``). A transaction whose
envelope opens, from an existing account, with the right nonce, consumes the
nonce (increments it) even when it then fails (``insufficient_balance``,
``bad_device_params``, ...): the chain has judged it, so the same envelope
can never execute later. Only ``not_a_transaction``, ``unknown_account``,
``bad_nonce`` and envelope errors (bad signature, wrong network) leave the
nonce untouched.

A registered device must satisfy :func:`depin_p2p.model.validate_device`
(radio: an H3 resolution-12 cell, 400 MHz - 6 GHz, tx power -10..36 dBm,
gain 0..15 dBi; compute: no radio fields, capacity 1..1024), else
``bad_device_params``.

Unbonding and evidence. Misbehaviour in epoch E's consensus is admissible
as evidence in the values of epochs E+1 .. E + :data:`EVIDENCE_MAX_AGE_EPOCHS`
(:func:`validate_evidence_age`; the content check refuses older evidence).
Stake unbonded by an ``Unstake`` in epoch V leaves voting power at once but
stays slashable until it is released in epoch V + :data:`UNBONDING_EPOCHS`,
after that epoch's slashes; ``UNBONDING_EPOCHS >= EVIDENCE_MAX_AGE_EPOCHS``,
so any stake that had power when a validator misbehaved can still be burned
by every value that may include the evidence. The id of every evidence that
slashed is kept (``UsedEvidence``) for ``EVIDENCE_MAX_AGE_EPOCHS`` epochs,
which outlives its admissibility, and a value repeating one burns nothing.

:func:`apply_epoch` consumes an :class:`EpochValue` in this order:

1. checks the value itself, raising ``Reject`` if it cannot apply at all:
   ``wrong_epoch`` (not last epoch + 1), ``wrong_prev_certificate`` (does not
   build on the last committed certificate), ``reward_sum_mismatch`` (the
   rewards do not add up to the declared emission exactly),
   ``supply_overflow`` (supply would leave u64);
2. applies the slashes: ``basis_points`` of the validator's stake plus
   still-unbonding stake is burned (stake first, then unbonding entries in
   release order); a slash is skipped, burning nothing, with
   ``duplicate_evidence`` (twice in this value), ``evidence_reused`` (its
   evidence already slashed in an earlier epoch) or ``not_a_validator``;
3. releases the unbonding entries due this epoch to their owners;
4. applies the transactions in order; an invalid one is skipped with a
   stable reason code in ``StateChanges.tx_results``, never fatal (a
   transfer that would create an account with less than
   :data:`MIN_NEW_ACCOUNT_TRANSFER`: ``below_new_account_minimum``, its
   nonce consumed);
5. credits the rewards (creating accounts as needed);
6. records the evidence that slashed and forgets records that are
   ``EVIDENCE_MAX_AGE_EPOCHS`` old;
7. sets meta: ``total_supply = old + emission - slashed`` exactly.

Merkle keys (see ``ledger.merkle``): ``0x01 ‖ account id``, ``0x02 ‖ device
id``, ``0x03 ‖ validator address``, ``0x04`` (meta), ``0x05 ‖ evidence id``;
values are the canonical wire bytes of :class:`Account`,
:class:`DeviceRecord`, :class:`ValidatorStake`, :class:`LedgerMeta` and
:class:`UsedEvidence`.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from dataclasses import dataclass, replace
from operator import itemgetter
from typing import Annotated, Protocol

import msgpack

from depin_p2p import wire
from depin_p2p.errors import InternalError, Reject, ValidationError
from depin_p2p.ledger import merkle
from depin_p2p.model import Device, DeviceKind, Validator, validate_device

MAX_TXS = 10_000
MAX_REWARDS = 200_000
MAX_SLASHES = 256
BASIS_POINTS = 10_000
ZERO_HASH = b"\0" * 32
# Evidence of epoch E's misbehaviour is admissible in epochs E+1 .. E+EVIDENCE_MAX_AGE_EPOCHS.
EVIDENCE_MAX_AGE_EPOCHS = 3
# Unstaked funds return this many epochs after the Unstake; must be >= the evidence max age.
UNBONDING_EPOCHS = 3
# The least a transfer that creates an account may carry (0.01 token): every account is a
# leaf of the state tree that every node stores and hashes, so a flood of dust accounts
# costs its sender real tokens.
MIN_NEW_ACCOUNT_TRANSFER = 10_000
if UNBONDING_EPOCHS < EVIDENCE_MAX_AGE_EPOCHS:
    raise InternalError("unbonding stake would be released before its evidence expires")

NS_ACCOUNT = b"\x01"
NS_DEVICE = b"\x02"
NS_VALIDATOR = b"\x03"
META_KEY = b"\x04"
NS_EVIDENCE = b"\x05"

# --------------------------------------------------------------------------
# Records (stored as their canonical wire bytes)


@wire.message(type_id=22)
@dataclass(frozen=True, slots=True)
class Account:
    balance: wire.U64
    nonce: wire.U64


@wire.struct
@dataclass(frozen=True, slots=True)
class Unbonding:
    """Unbonded stake that returns to the balance in epoch ``release_epoch`` (slashable until then)."""

    amount: wire.U64
    release_epoch: wire.U64


@wire.message(type_id=23)
@dataclass(frozen=True, slots=True)
class ValidatorStake:
    """A validator's bonded ``stake`` (its voting power) and its unbonding entries.

    ``unbonding`` is sorted by ``release_epoch``, one entry per epoch, every
    amount > 0; at most :data:`UNBONDING_EPOCHS` entries can be pending.
    """

    stake: wire.U64
    unbonding: Annotated[tuple[Unbonding, ...], wire.MaxLen(UNBONDING_EPOCHS)] = ()

    @property
    def unbonding_total(self) -> int:
        """The stake still unbonding (not voting, but slashable)."""
        return sum(u.amount for u in self.unbonding)


@wire.message(type_id=24)
@dataclass(frozen=True, slots=True)
class DeviceRecord:
    device: Device


@wire.message(type_id=25)
@dataclass(frozen=True, slots=True)
class LedgerMeta:
    """The last applied epoch, total supply, and the certificate hash that epoch built on."""

    epoch: wire.U64
    total_supply: wire.U64
    prev_certificate_hash: wire.Bytes32


@wire.message(type_id=27)
@dataclass(frozen=True, slots=True)
class UsedEvidence:
    """Evidence that slashed ``validator`` in ``epoch``; kept until it can no longer be admissible."""

    validator: wire.PublicKeyBytes
    epoch: wire.U64


# --------------------------------------------------------------------------
# Transactions


@wire.message(type_id=16, domain=wire.Domain.TX)
@dataclass(frozen=True, slots=True)
class Transfer:
    nonce: wire.U64
    to: wire.PublicKeyBytes
    amount: wire.U64


@wire.message(type_id=17, domain=wire.Domain.TX)
@dataclass(frozen=True, slots=True)
class RegisterDevice:
    """Register a device owned by the signing account.

    ``device_signature`` is the device key's signature over
    ``signing_bytes(network_id, TX, 20, encode(DeviceBinding(device_id, owner)))``
    (see :func:`sign_device_binding`): a device cannot be registered by an
    account that does not hold its key.
    """

    nonce: wire.U64
    device_id: wire.PublicKeyBytes
    kind: DeviceKind
    location: wire.U64
    frequency_hz: wire.U64
    tx_power_cdbm: Annotated[int, wire.Range(-100_000, 100_000)]
    gain_cdbi: Annotated[int, wire.Range(-100_000, 100_000)]
    capacity: wire.U64
    device_signature: wire.SignatureBytes


@wire.message(type_id=18, domain=wire.Domain.TX)
@dataclass(frozen=True, slots=True)
class Stake:
    """Bond ``amount`` from the balance; the voting power counts from the next epoch's validator set."""

    nonce: wire.U64
    amount: wire.U64


@wire.message(type_id=19, domain=wire.Domain.TX)
@dataclass(frozen=True, slots=True)
class Unstake:
    """Unbond ``amount``: power drops at once, the funds return :data:`UNBONDING_EPOCHS` epochs later.

    Until then they stay slashable, so unstaking cannot outrun evidence.
    """

    nonce: wire.U64
    amount: wire.U64


@wire.message(type_id=20, domain=wire.Domain.TX)
@dataclass(frozen=True, slots=True)
class DeviceBinding:
    """What a device signs to let ``owner`` register it (never sent on its own)."""

    device_id: wire.PublicKeyBytes
    owner: wire.PublicKeyBytes


Transaction = Transfer | RegisterDevice | Stake | Unstake
_TX_TYPES = (Transfer, RegisterDevice, Stake, Unstake)


def device_binding_bytes(device_id: bytes, owner: bytes, network_id: str) -> bytes:
    """The exact bytes a device signs for :class:`RegisterDevice`."""
    body = wire.encode(DeviceBinding(device_id, owner))
    return wire.signing_bytes(network_id, wire.Domain.TX, wire.info_of(DeviceBinding).type_id, body)


def sign_device_binding(device_key: wire.Signer, owner: bytes, network_id: str) -> bytes:
    """The ``device_signature`` for registering ``device_key``'s device to ``owner``."""
    return device_key.sign(device_binding_bytes(device_key.public_key, owner, network_id))


# --------------------------------------------------------------------------
# Epoch value


@wire.struct
@dataclass(frozen=True, slots=True)
class Reward:
    account: wire.PublicKeyBytes
    amount: wire.U64


@wire.struct
@dataclass(frozen=True, slots=True)
class Slash:
    """Burn ``basis_points`` / 10 000 of a validator's stake for the evidence ``evidence_id``."""

    validator: wire.PublicKeyBytes
    basis_points: Annotated[int, wire.Range(0, BASIS_POINTS)]
    evidence_id: wire.Bytes32


@wire.message(type_id=21)
@dataclass(frozen=True, slots=True)
class EpochValue:
    """Everything an epoch does to the ledger; what :func:`apply_epoch` consumes.

    Attributes:
        epoch: the epoch being applied (last applied + 1).
        prev_certificate_hash: ``content_id`` of the previous epoch's
            certificate bytes (for epoch 1: the genesis hash).
        txs: sealed transactions, applied in order.
        rewards: the epoch's emission split; must sum to ``emission`` exactly.
        slashes: stake to burn, from verified evidence.
        emission: the newly minted supply of this epoch.
    """

    epoch: wire.U64
    prev_certificate_hash: wire.Bytes32
    txs: Annotated[tuple[wire.Envelope, ...], wire.MaxLen(MAX_TXS)]
    rewards: Annotated[tuple[Reward, ...], wire.MaxLen(MAX_REWARDS)]
    slashes: Annotated[tuple[Slash, ...], wire.MaxLen(MAX_SLASHES)]
    emission: wire.U64


# --------------------------------------------------------------------------
# Read view and results


class LedgerView(merkle.MerkleSource, Protocol):
    """Read access to a committed ledger state (in memory or the LMDB store)."""

    def get_account(self, account_id: bytes) -> Account | None: ...
    def get_device(self, device_id: bytes) -> Device | None: ...
    def get_validator(self, address: bytes) -> ValidatorStake | None: ...
    def iter_validators(self) -> Iterator[tuple[bytes, ValidatorStake]]:
        """Every validator record, sorted by address."""
        ...

    def iter_devices(self) -> Iterator[Device]:
        """Every registered device, sorted by device id."""
        ...

    def get_used_evidence(self, evidence_id: bytes) -> UsedEvidence | None: ...
    def iter_used_evidence(self) -> Iterator[tuple[bytes, UsedEvidence]]:
        """Every used-evidence record, sorted by evidence id."""
        ...

    def get_meta(self) -> LedgerMeta: ...
    def last_certificate_hash(self) -> bytes:
        """``content_id`` of the last committed certificate (the genesis hash before epoch 1)."""
        ...


@dataclass(frozen=True, slots=True)
class TxResult:
    """The outcome of one transaction: ``code`` is None when applied, else why it was skipped."""

    index: int
    tx_id: bytes
    code: str | None


@dataclass(frozen=True, slots=True)
class SlashResult:
    validator: bytes
    evidence_id: bytes
    burned: int
    code: str | None


@dataclass(frozen=True, slots=True)
class StateChanges:
    """Everything an epoch changed, ready for ``LedgerStore.commit_epoch``.

    ``validators`` maps to None for a record deleted (no stake left),
    ``evidence`` to None for a used-evidence record forgotten.
    ``records`` holds the same changes as Merkle ``(key, encoded value or
    None)`` pairs, sorted by key: what the store writes, encoded once.
    """

    records: tuple[tuple[bytes, bytes | None], ...]
    epoch: int
    prev_root: bytes
    root: bytes
    accounts: tuple[tuple[bytes, Account], ...]
    devices: tuple[tuple[bytes, Device], ...]
    validators: tuple[tuple[bytes, ValidatorStake | None], ...]
    evidence: tuple[tuple[bytes, UsedEvidence | None], ...]
    meta: LedgerMeta
    merkle: merkle.MerkleUpdate
    tx_results: tuple[TxResult, ...]
    slash_results: tuple[SlashResult, ...]
    minted: int
    burned: int

    @property
    def change_count(self) -> int:
        """Number of state records written (accounts, devices, validators, evidence, meta)."""
        return len(self.accounts) + len(self.devices) + len(self.validators) + len(self.evidence) + 1


_ACCOUNT_HEADER = (wire.WIRE_VERSION, wire.info_of(Account).type_id)
_NO_ACCOUNT = Account(0, 0)


def encode_account(account: Account) -> bytes:
    """``wire.encode(account)``, without the generic schema walk (the hot path of every epoch)."""
    return msgpack.packb((*_ACCOUNT_HEADER, account.balance, account.nonce))  # type: ignore[no-any-return]


def account_key(account_id: bytes) -> bytes:
    return NS_ACCOUNT + account_id


def device_key(device_id: bytes) -> bytes:
    return NS_DEVICE + device_id


def validator_key(address: bytes) -> bytes:
    return NS_VALIDATOR + address


def evidence_key(evidence_id: bytes) -> bytes:
    return NS_EVIDENCE + evidence_id


def validate_evidence_age(misbehaviour_epoch: int, epoch: int) -> None:
    """Check that evidence of misbehaviour in ``misbehaviour_epoch`` may be included in ``epoch``'s value.

    Admissible: ``misbehaviour_epoch < epoch <= misbehaviour_epoch + EVIDENCE_MAX_AGE_EPOCHS``.
    Whoever judges evidence for a value must call this: the ledger holds
    unbonding stake and remembers used evidence only that long.

    Raises:
        Reject: ``evidence_too_old``, ``evidence_too_early``.
    """
    if misbehaviour_epoch >= epoch:
        raise Reject("evidence_too_early", f"evidence of epoch {misbehaviour_epoch} in the value of {epoch}")
    if epoch - misbehaviour_epoch > EVIDENCE_MAX_AGE_EPOCHS:
        limit = f"older than {EVIDENCE_MAX_AGE_EPOCHS} epochs"
        raise Reject("evidence_too_old", f"evidence of epoch {misbehaviour_epoch} is {limit} in {epoch}")


def validator_set(view: LedgerView) -> tuple[Validator, ...]:
    """Validators with non-zero bonded stake, power = stake, sorted by address."""
    return tuple(Validator(addr, v.stake) for addr, v in view.iter_validators() if v.stake > 0)


# --------------------------------------------------------------------------
# The transition


class _Overlay:
    """Pending writes over a view during one epoch (private to apply_epoch)."""

    __slots__ = ("accounts", "devices", "evidence", "validators", "view")

    def __init__(self, view: LedgerView) -> None:
        self.view = view
        self.accounts: dict[bytes, Account] = {}
        self.devices: dict[bytes, Device] = {}
        self.validators: dict[bytes, ValidatorStake] = {}
        self.evidence: dict[bytes, UsedEvidence | None] = {}

    def account(self, account_id: bytes) -> Account | None:
        got = self.accounts.get(account_id)
        return got if got is not None else self.view.get_account(account_id)

    def device(self, device_id: bytes) -> Device | None:
        got = self.devices.get(device_id)
        return got if got is not None else self.view.get_device(device_id)

    def validator(self, address: bytes) -> ValidatorStake | None:
        got = self.validators.get(address)
        return got if got is not None else self.view.get_validator(address)


def _apply_tx(ov: _Overlay, env: wire.Envelope, network_id: str, epoch: int) -> None:
    verified = wire.open_envelope(env, network_id=network_id, domain=wire.Domain.TX)
    tx = verified.message
    if not isinstance(tx, _TX_TYPES):
        raise Reject("not_a_transaction", type(tx).__name__)
    sender = verified.signer
    account = ov.account(sender)
    if account is None:
        raise Reject("unknown_account")
    if tx.nonce != account.nonce:
        raise Reject("bad_nonce", f"expected nonce {account.nonce}, got {tx.nonce}")
    # From here on the tx is judged: its nonce is consumed even if it fails, so a
    # failed tx can never be re-included and execute later.
    account = replace(account, nonce=account.nonce + 1)
    ov.accounts[sender] = account

    if isinstance(tx, Transfer):
        if tx.amount == 0:
            raise Reject("zero_amount")
        if tx.amount > account.balance:
            raise Reject("insufficient_balance")
        if tx.to == sender:
            return
        dest = ov.account(tx.to)
        if dest is None:
            if tx.amount < MIN_NEW_ACCOUNT_TRANSFER:
                least = f"creating an account takes at least {MIN_NEW_ACCOUNT_TRANSFER} micro-units"
                raise Reject("below_new_account_minimum", least)
            dest = _NO_ACCOUNT
        ov.accounts[sender] = replace(account, balance=account.balance - tx.amount)
        ov.accounts[tx.to] = replace(dest, balance=dest.balance + tx.amount)
    elif isinstance(tx, RegisterDevice):
        if ov.device(tx.device_id) is not None:
            raise Reject("device_exists")
        try:
            wire.verify_signature(
                tx.device_id, device_binding_bytes(tx.device_id, sender, network_id), tx.device_signature
            )
        except Reject:
            raise Reject("bad_device_signature") from None
        device = Device(
            device_id=tx.device_id,
            owner=sender,
            kind=tx.kind,
            location=tx.location,
            frequency_hz=tx.frequency_hz,
            tx_power_cdbm=tx.tx_power_cdbm,
            gain_cdbi=tx.gain_cdbi,
            capacity=tx.capacity,
            registered_epoch=epoch,
        )
        validate_device(device)
        ov.devices[tx.device_id] = device
    elif isinstance(tx, Stake):
        if tx.amount == 0:
            raise Reject("zero_amount")
        if tx.amount > account.balance:
            raise Reject("insufficient_balance")
        current = ov.validator(sender) or ValidatorStake(0)
        ov.accounts[sender] = replace(account, balance=account.balance - tx.amount)
        ov.validators[sender] = replace(current, stake=current.stake + tx.amount)
    else:
        _unstake(ov, sender, tx, epoch)


def _unstake(ov: _Overlay, sender: bytes, tx: Unstake, epoch: int) -> None:
    """Move ``tx.amount`` from stake to an entry released in ``epoch + UNBONDING_EPOCHS``."""
    if tx.amount == 0:
        raise Reject("zero_amount")
    stake = ov.validator(sender)
    if stake is None:
        raise Reject("not_a_validator")
    if tx.amount > stake.stake:
        raise Reject("insufficient_stake")
    release = epoch + UNBONDING_EPOCHS
    pending = [u for u in stake.unbonding if u.release_epoch != release]
    already = sum(u.amount for u in stake.unbonding if u.release_epoch == release)
    pending.append(Unbonding(already + tx.amount, release))
    unbonding = tuple(sorted(pending, key=lambda u: u.release_epoch))
    ov.validators[sender] = ValidatorStake(stake.stake - tx.amount, unbonding)


def validate_epoch_value(view: LedgerView, value: EpochValue) -> None:
    """Check that ``value`` can apply on top of ``view`` at all.

    Raises:
        Reject: ``wrong_epoch``, ``wrong_prev_certificate``,
            ``reward_sum_mismatch``, ``supply_overflow``.
    """
    meta = view.get_meta()
    if value.epoch != meta.epoch + 1:
        raise Reject("wrong_epoch", f"ledger is at epoch {meta.epoch}, value is for {value.epoch}")
    if value.prev_certificate_hash != view.last_certificate_hash():
        raise Reject("wrong_prev_certificate", "the value does not build on the last committed certificate")
    total = sum(r.amount for r in value.rewards)
    if total != value.emission:
        raise Reject("reward_sum_mismatch", f"rewards sum to {total}, declared emission is {value.emission}")
    if meta.total_supply + value.emission > wire.UINT64_MAX:
        raise Reject("supply_overflow", "total supply would exceed 2^64 - 1 micro-units")


def apply_epoch(view: LedgerView, value: EpochValue, network_id: str) -> StateChanges:
    """Apply one epoch value to ``view`` and return the changes with the new state root.

    Pure: reads ``view``, writes nothing. Transactions are opened with
    ``network_id``. See the module docstring for the order of effects.

    Raises:
        Reject: the value as a whole cannot apply (see :func:`validate_epoch_value`).
    """
    # An epoch allocates several tracked objects per change (records, tuples, tree steps),
    # which trigger the cyclic garbage collector's passes: about a tenth of an epoch of 10k
    # changes. It is paused meanwhile (process-wide, so only if it was on) and collects
    # whatever cycles there are on its next pass after.
    paused = gc.isenabled()
    if paused:
        gc.disable()
    try:
        return _apply_epoch(view, value, network_id)
    finally:
        if paused:
            gc.enable()


def _apply_epoch(view: LedgerView, value: EpochValue, network_id: str) -> StateChanges:
    validate_epoch_value(view, value)
    meta = view.get_meta()
    ov = _Overlay(view)

    # Slashes first, while this epoch's releases are still held: stake that had
    # power when the validator misbehaved is burned, however it was unstaked since.
    burned, slash_results = _apply_slashes(ov, value)

    # Unbonding entries due this epoch return to the balance now.
    for address, stake in view.iter_validators():
        current = ov.validator(address) or stake
        due = sum(u.amount for u in current.unbonding if u.release_epoch <= value.epoch)
        if due:
            owner = ov.account(address) or Account(0, 0)
            ov.accounts[address] = replace(owner, balance=owner.balance + due)
            kept = tuple(u for u in current.unbonding if u.release_epoch > value.epoch)
            ov.validators[address] = replace(current, unbonding=kept)

    tx_results = []
    for index, env in enumerate(value.txs):
        tx_id = wire.content_id(wire.encode(env))
        try:
            _apply_tx(ov, env, network_id, value.epoch)
        except ValidationError as exc:
            tx_results.append(TxResult(index, tx_id, exc.code))
        else:
            tx_results.append(TxResult(index, tx_id, None))

    # The hot loop of a reward-heavy epoch: ``ov.account`` inlined.
    pending, stored = ov.accounts, view.get_account
    for reward in value.rewards:
        aid = reward.account
        acct = pending.get(aid) or stored(aid) or _NO_ACCOUNT
        pending[aid] = Account(acct.balance + reward.amount, acct.nonce)

    # Forget evidence that can no longer be admissible: used in epoch U, it is of
    # an epoch <= U - 1, so validate_evidence_age refuses it from U + MAX_AGE on.
    for evidence_id, used in view.iter_used_evidence():
        if value.epoch >= used.epoch + EVIDENCE_MAX_AGE_EPOCHS:
            ov.evidence[evidence_id] = None

    supply = meta.total_supply + value.emission - burned
    new_meta = LedgerMeta(value.epoch, supply, value.prev_certificate_hash)
    return _finish(
        view,
        ov,
        new_meta,
        tx_results=tuple(tx_results),
        slash_results=tuple(slash_results),
        minted=value.emission,
        burned=burned,
    )


def _apply_slashes(ov: _Overlay, value: EpochValue) -> tuple[int, list[SlashResult]]:
    """Burn each slash's share of stake plus unbonding stake; record the evidence used."""
    burned = 0
    results = []
    seen: set[bytes] = set()
    for slash in value.slashes:
        vid, eid = slash.validator, slash.evidence_id
        if eid in seen:
            results.append(SlashResult(vid, eid, 0, "duplicate_evidence"))
            continue
        seen.add(eid)
        if ov.view.get_used_evidence(eid) is not None:
            results.append(SlashResult(vid, eid, 0, "evidence_reused"))
            continue
        target = ov.validator(vid)
        if target is None:
            results.append(SlashResult(vid, eid, 0, "not_a_validator"))
            continue
        ov.evidence[eid] = UsedEvidence(vid, value.epoch)
        amount = (target.stake + target.unbonding_total) * slash.basis_points // BASIS_POINTS
        from_stake = min(amount, target.stake)
        left = amount - from_stake
        unbonding = []
        for entry in target.unbonding:  # in release order: the soonest released is burned first
            cut = min(left, entry.amount)
            left -= cut
            if entry.amount > cut:
                unbonding.append(Unbonding(entry.amount - cut, entry.release_epoch))
        ov.validators[vid] = ValidatorStake(target.stake - from_stake, tuple(unbonding))
        burned += amount
        results.append(SlashResult(vid, eid, amount, None))
    return burned, results


def _finish(
    view: LedgerView,
    ov: _Overlay,
    meta: LedgerMeta,
    *,
    tx_results: tuple[TxResult, ...],
    slash_results: tuple[SlashResult, ...],
    minted: int,
    burned: int,
) -> StateChanges:
    updates: dict[bytes, bytes | None] = {}
    # Sorting on the key alone: comparing the (key, value) tuples costs about twice as much.
    accounts = tuple(sorted(ov.accounts.items(), key=itemgetter(0)))
    # encode_account with a Packer of our own: packb builds a new one per call,
    # which costs more than the packing (a shared one would not be thread-safe).
    pack = msgpack.Packer().pack
    version, type_id = _ACCOUNT_HEADER
    for aid, acct in accounts:
        updates[NS_ACCOUNT + aid] = pack((version, type_id, acct.balance, acct.nonce))
    devices = tuple(sorted(ov.devices.items()))
    for did, dev in devices:
        updates[NS_DEVICE + did] = wire.encode(DeviceRecord(dev))
    validators: list[tuple[bytes, ValidatorStake | None]] = []
    for addr, vs in sorted(ov.validators.items()):
        gone = vs.stake == 0 and not vs.unbonding
        validators.append((addr, None if gone else vs))
        updates[NS_VALIDATOR + addr] = None if gone else wire.encode(vs)
    evidence = tuple(sorted(ov.evidence.items()))
    for eid, used in evidence:
        updates[NS_EVIDENCE + eid] = None if used is None else wire.encode(used)
    updates[META_KEY] = wire.encode(meta)
    update = merkle.compute_update(view, updates, meta.epoch)
    return StateChanges(
        # Already sorted: the namespaces were added in key order, each one sorted.
        records=tuple(updates.items()),
        epoch=meta.epoch,
        prev_root=view.merkle_root(),
        root=update.root,
        accounts=accounts,
        devices=devices,
        validators=tuple(validators),
        evidence=evidence,
        meta=meta,
        merkle=update,
        tx_results=tx_results,
        slash_results=slash_results,
        minted=minted,
        burned=burned,
    )


@dataclass(frozen=True, slots=True)
class InitialState:
    """The state a genesis describes (built by ``ledger.genesis``)."""

    accounts: tuple[tuple[bytes, Account], ...]
    devices: tuple[Device, ...]
    validators: tuple[tuple[bytes, int], ...]  # (address, stake)
    genesis_hash: bytes


def compute_genesis_changes(view: LedgerView, initial: InitialState) -> StateChanges:
    """The changes that take an empty ``view`` to the genesis state (epoch 0)."""
    ov = _Overlay(view)
    supply = 0
    for aid, acct in initial.accounts:
        ov.accounts[aid] = acct
        supply += acct.balance
    for dev in initial.devices:
        ov.devices[dev.device_id] = dev
    for addr, stake in initial.validators:
        ov.validators[addr] = ValidatorStake(stake)
        supply += stake
    if supply > wire.UINT64_MAX:
        raise Reject("supply_overflow", "genesis supply exceeds 2^64 - 1 micro-units")
    meta = LedgerMeta(0, supply, initial.genesis_hash)
    return _finish(view, ov, meta, tx_results=(), slash_results=(), minted=0, burned=0)

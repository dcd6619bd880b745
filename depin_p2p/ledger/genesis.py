"""Genesis file: the devnet's initial state, as machine-written JSON.

Format (every field required; amounts are integer micro-units, 1 token = 10^6)::

    {
      "network_id": "depin-devnet",          # 1-128 chars; signatures are bound to it
      "genesis_time_ms": 1798761600000,      # Unix ms when epoch 1 starts
      "epoch_length_ms": 60000,              # 1 s .. 1 day
      "emission_per_epoch": 1000000000,      # micro-units minted per epoch (>= 0)
      "accounts": {"dp...": 5000000, ...},   # address -> balance (>= 0); no duplicates
      "validators": [{"address": "dp...", "stake": 1000000}, ...],   # at least one; stake > 0
      "devices": [{"device_id": "dp...", "owner": "dp...", "kind": "radio" | "compute",
                   "location": "8c2a100d2c49dff",   # H3 cell (hex string)
                   "frequency_hz": 868100000, "tx_power_cdbm": 1400, "gain_cdbi": 300,
                   "capacity": 0}, ...]
    }

Devices must satisfy :func:`depin_p2p.model.validate_device` (the same
bounds registration applies): a radio device has an H3 resolution-12
``location``, ``frequency_hz`` in [400 MHz, 6 GHz], ``tx_power_cdbm`` in
[-1000, 3600], ``gain_cdbi`` in [0, 1500] and ``capacity`` 0; a compute
device has ``location`` "0", zero radio fields and ``capacity`` in [1, 1024].

Addresses are ``depin-p2p`` account addresses (``dp`` + base58, as printed
by ``keygen``); a device id is the address form of the device's own key.
A genesis must be able to run: epochs of 1 s to 1 day (shorter ones cannot
hold a consensus round, the node would only fall behind), and at least one
validator (else no epoch ever commits).

Starting long after the genesis time (:func:`check_can_start`): a node
whose ledger holds no committed epoch and that has no bootstrap peers is
starting a new network; if the genesis time is more than
``MAX_START_LAG_EPOCHS`` epochs in the past it refuses, because it would
have to run every one of those epochs, each empty, before reaching the
present. A node with bootstrap peers fetches the certificates it lacks
from them, and a network that already committed epochs resumes where it
stopped.

Validator stake is bonded, not part of the balance; total supply is the sum
of balances and stakes. The genesis hash is BLAKE2b-256 of the file's
canonical JSON (keys sorted, no whitespace), so reformatting the file does
not change it; epoch 1 must build on it (``EpochValue.prev_certificate_hash``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from depin_p2p import wire
from depin_p2p.crypto import public_key_from_address
from depin_p2p.errors import ConfigError, Reject
from depin_p2p.ledger.state import Account, InitialState
from depin_p2p.model import Device, DeviceKind, validate_device

_TOP_FIELDS = (
    "network_id",
    "genesis_time_ms",
    "epoch_length_ms",
    "emission_per_epoch",
    "accounts",
    "validators",
    "devices",
)
_DEVICE_INT_FIELDS = ("frequency_hz", "tx_power_cdbm", "gain_cdbi", "capacity")
MIN_EPOCH_LENGTH_MS = 1_000
MAX_EPOCH_LENGTH_MS = 86_400_000
MAX_START_LAG_EPOCHS = 100  # a new network may start this many epochs after its genesis time


@dataclass(frozen=True, slots=True)
class Genesis:
    """A validated genesis file."""

    network_id: str
    genesis_time_ms: int
    epoch_length_ms: int
    emission_per_epoch: int
    accounts: tuple[tuple[bytes, int], ...]  # sorted by account id
    validators: tuple[tuple[bytes, int], ...]  # (address, stake), sorted
    devices: tuple[Device, ...]  # sorted by device id
    genesis_hash: bytes

    def initial_state(self) -> InitialState:
        """The ledger state this genesis describes."""
        return InitialState(
            accounts=tuple((aid, Account(bal, 0)) for aid, bal in self.accounts),
            devices=self.devices,
            validators=self.validators,
            genesis_hash=self.genesis_hash,
        )


class _Object(dict[str, Any]):
    """A JSON object that remembers keys it saw twice (json.loads keeps only the last)."""

    duplicates: list[str]


def _object(pairs: list[tuple[str, Any]]) -> _Object:
    obj = _Object()
    obj.duplicates = []
    for key, value in pairs:
        if key in obj:
            obj.duplicates.append(key)
        obj[key] = value
    return obj


def _check_duplicates(obj: Any, where: str, what: str = "appears twice") -> None:
    if isinstance(obj, _Object) and obj.duplicates:
        raise ConfigError(f"genesis field {where}{obj.duplicates[0]}: {what}")


def _int(value: Any, field: str, lo: int = 0, hi: int = wire.UINT64_MAX) -> int:
    if type(value) is not int:
        raise ConfigError(f"genesis field {field}: expected an integer, got {json.dumps(value)}")
    if not lo <= value <= hi:
        if value < 0 and lo == 0:
            raise ConfigError(f"genesis field {field}: must not be negative, got {value}")
        raise ConfigError(f"genesis field {field}: {value} is outside [{lo}, {hi}]")
    return value


def _address(value: Any, field: str) -> bytes:
    if not isinstance(value, str):
        raise ConfigError(f"genesis field {field}: expected an address string")
    try:
        return public_key_from_address(value)
    except ConfigError as exc:
        raise ConfigError(f"genesis field {field}: {exc}") from None


def _require(doc: dict[str, Any], name: str, where: str) -> Any:
    if name not in doc:
        raise ConfigError(f"genesis: missing field {where}{name}")
    return doc[name]


def _parse_accounts(doc: dict[str, Any]) -> dict[bytes, int]:
    raw_accounts = doc["accounts"]
    if not isinstance(raw_accounts, dict):
        raise ConfigError("genesis field accounts: expected an object of address -> balance")
    _check_duplicates(raw_accounts, "accounts.", "duplicate account")
    accounts: dict[bytes, int] = {}
    for address, balance in raw_accounts.items():
        aid = _address(address, f"accounts.{address}")
        if aid in accounts:
            raise ConfigError(f"genesis field accounts.{address}: duplicate account")
        accounts[aid] = _int(balance, f"accounts.{address}")
    return accounts


def _parse_validators(doc: dict[str, Any]) -> dict[bytes, int]:
    raw_validators = doc["validators"]
    if not isinstance(raw_validators, list):
        raise ConfigError("genesis field validators: expected a list")
    validators: dict[bytes, int] = {}
    for i, entry in enumerate(raw_validators):
        where = f"validators[{i}]."
        if not isinstance(entry, dict):
            raise ConfigError(f"genesis field validators[{i}]: expected an object")
        _check_duplicates(entry, where)
        addr = _address(_require(entry, "address", where), f"{where}address")
        if addr in validators:
            raise ConfigError(f"genesis field {where}address: duplicate validator")
        validators[addr] = _int(_require(entry, "stake", where), f"{where}stake", lo=1)
    return validators


def _parse_devices(doc: dict[str, Any]) -> dict[bytes, Device]:
    raw_devices = doc["devices"]
    if not isinstance(raw_devices, list):
        raise ConfigError("genesis field devices: expected a list")
    devices: dict[bytes, Device] = {}
    for i, entry in enumerate(raw_devices):
        where = f"devices[{i}]."
        if not isinstance(entry, dict):
            raise ConfigError(f"genesis field devices[{i}]: expected an object")
        _check_duplicates(entry, where)
        did = _address(_require(entry, "device_id", where), f"{where}device_id")
        if did in devices:
            raise ConfigError(f"genesis field {where}device_id: duplicate device")
        owner = _address(_require(entry, "owner", where), f"{where}owner")
        kind_name = _require(entry, "kind", where)
        try:
            kind = DeviceKind[str(kind_name).upper()]
        except KeyError:
            raise ConfigError(f"genesis field {where}kind: expected 'radio' or 'compute'") from None
        loc = _require(entry, "location", where)
        try:
            location = int(loc, 16) if isinstance(loc, str) else -1
        except ValueError:
            location = -1
        if not 0 <= location <= wire.UINT64_MAX:
            raise ConfigError(f"genesis field {where}location: expected an H3 cell as a hex string")
        ints = {}
        for name in _DEVICE_INT_FIELDS:
            value = _require(entry, name, where)
            if name in ("tx_power_cdbm", "gain_cdbi"):
                ints[name] = _int(value, f"{where}{name}", lo=-100_000, hi=100_000)
            else:
                ints[name] = _int(value, f"{where}{name}")
        device = Device(
            device_id=did,
            owner=owner,
            kind=kind,
            location=location,
            frequency_hz=ints["frequency_hz"],
            tx_power_cdbm=ints["tx_power_cdbm"],
            gain_cdbi=ints["gain_cdbi"],
            capacity=ints["capacity"],
            registered_epoch=0,
        )
        try:
            validate_device(device)
        except Reject as exc:  # the detail starts with the field at fault
            raise ConfigError(f"genesis field {where}{exc.detail}") from None
        devices[did] = device
    return devices


def parse_genesis(text: str) -> Genesis:
    """Parse and validate genesis JSON text.

    Raises:
        ConfigError: naming the field at fault (missing field, negative
            balance, duplicate account, bad address, wrong type...).
    """
    try:
        doc = json.loads(text, object_pairs_hook=_object)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"genesis is not valid JSON: {exc.msg} at line {exc.lineno}") from None
    if not isinstance(doc, dict):
        raise ConfigError("genesis: expected a JSON object at the top level")
    _check_duplicates(doc, "")
    for name in _TOP_FIELDS:
        _require(doc, name, "")
    unknown = sorted(set(doc) - set(_TOP_FIELDS))
    if unknown:
        raise ConfigError(f"genesis: unknown field {unknown[0]}")

    network_id = doc["network_id"]
    if not isinstance(network_id, str) or not 1 <= len(network_id) <= 128:
        raise ConfigError("genesis field network_id: expected a string of 1-128 characters")
    genesis_time_ms = _int(doc["genesis_time_ms"], "genesis_time_ms")
    epoch_length_ms = _int(
        doc["epoch_length_ms"], "epoch_length_ms", lo=MIN_EPOCH_LENGTH_MS, hi=MAX_EPOCH_LENGTH_MS
    )
    emission = _int(doc["emission_per_epoch"], "emission_per_epoch")

    accounts = _parse_accounts(doc)
    validators = _parse_validators(doc)
    devices = _parse_devices(doc)
    if not validators:  # checked after every field, so a bad field is named first
        raise ConfigError(
            "genesis field validators: needs at least one validator with stake > 0 "
            "(without validators no epoch ever commits)"
        )

    supply = sum(accounts.values()) + sum(validators.values())
    if supply > wire.UINT64_MAX:
        raise ConfigError("genesis field accounts: total supply exceeds 2^64 - 1 micro-units")
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return Genesis(
        network_id=network_id,
        genesis_time_ms=genesis_time_ms,
        epoch_length_ms=epoch_length_ms,
        emission_per_epoch=emission,
        accounts=tuple(sorted(accounts.items())),
        validators=tuple(sorted(validators.items())),
        devices=tuple(sorted(devices.values(), key=lambda d: d.device_id)),
        genesis_hash=hashlib.blake2b(canonical.encode(), digest_size=32).digest(),
    )


def epochs_since_genesis(genesis: Genesis, now_ms: int) -> int:
    """Whole epochs between the genesis time and ``now_ms`` (0 before the genesis time)."""
    return max(0, (now_ms - genesis.genesis_time_ms) // genesis.epoch_length_ms)


def check_can_start(genesis: Genesis, *, now_ms: int, last_epoch: int, bootstrap_peers: int) -> None:
    """Refuse to start a new network long after its genesis time (the rule in the module docstring).

    Args:
        genesis: the network's genesis.
        now_ms: the wall clock, Unix ms.
        last_epoch: the last epoch the node's ledger committed (0: only the genesis).
        bootstrap_peers: how many peers the node is configured to join.

    Raises:
        ConfigError: no epoch committed, no bootstrap peers, and the genesis
            time more than ``MAX_START_LAG_EPOCHS`` epochs ago.
    """
    lag = epochs_since_genesis(genesis, now_ms)
    if last_epoch > 0 or bootstrap_peers > 0 or lag <= MAX_START_LAG_EPOCHS:
        return
    raise ConfigError(
        f"genesis_time_ms {genesis.genesis_time_ms} is {lag} epochs in the past and this node has "
        "committed no epoch and has no bootstrap peers to catch up from: starting would replay "
        f"every epoch since, empty; give a new network a genesis time near its start (at most "
        f"{MAX_START_LAG_EPOCHS} epochs ago), or add bootstrap peers of the running network"
    )


def load_genesis(path: Path) -> Genesis:
    """Read and validate a genesis file; every problem is a ConfigError naming the file or field."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"genesis file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read genesis file {path}: {exc}") from None
    return parse_genesis(text)

"""A node bundle: one file with everything a node runner needs to join a devnet from their machine.

``depin-devnet export`` writes one per node; ``depin-p2p init --bundle FILE
--home DIR`` turns it into a node home. The file is JSON, mode 0600 (it holds
the node's and its devices' seeds in clear; ``init --passphrase-file`` stores
the home's key encrypted)::

    {"format": "depin-p2p/node-bundle", "version": 1,
     "network_id": ..., "address": ..., "peer_id": ...,
     "genesis": "<the genesis file, verbatim>",
     "node_toml": "<node.toml: listen, announce, bootstrap, api port, devices>",
     "key_seed": "<hex>", "device_seeds": {"devices/radio-....key": "<hex>", ...}}

Every problem reading one is a ConfigError naming the file and the field.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from depin_p2p.crypto import SEED_BYTES, KeyPair
from depin_p2p.errors import ConfigError

BUNDLE_FORMAT = "depin-p2p/node-bundle"
BUNDLE_VERSION = 1
MAX_BUNDLE_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Bundle:
    network_id: str
    genesis_text: str
    node_toml: str
    key: KeyPair
    device_keys: dict[str, KeyPair]  # path relative to the home -> key


def bundle_doc(bundle: Bundle) -> dict[str, object]:
    """The JSON document of ``bundle``."""
    return {
        "format": BUNDLE_FORMAT,
        "version": BUNDLE_VERSION,
        "network_id": bundle.network_id,
        "address": bundle.key.address,
        "peer_id": bundle.key.peer_id,
        "genesis": bundle.genesis_text,
        "node_toml": bundle.node_toml,
        "key_seed": bundle.key.seed.hex(),
        "device_seeds": {path: key.seed.hex() for path, key in sorted(bundle.device_keys.items())},
    }


def write_bundle(path: Path, bundle: Bundle) -> None:
    """Write ``bundle`` to ``path`` with mode 0600 (created so: never readable by others)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(bundle_doc(bundle), indent=2) + "\n")


def _seed(value: object, path: Path, field: str) -> KeyPair:
    try:
        seed = bytes.fromhex(value) if isinstance(value, str) else b""
    except ValueError:
        seed = b""
    if len(seed) != SEED_BYTES:
        raise ConfigError(f"bundle {path}: {field} is not a {SEED_BYTES}-byte seed in hex")
    return KeyPair.from_seed(seed)


def _device_path(name: object, path: Path) -> str:
    rel = PurePosixPath(name) if isinstance(name, str) else None
    if rel is None or rel.is_absolute() or ".." in rel.parts or not rel.parts or rel.parts[0] != "devices":
        raise ConfigError(f"bundle {path}: device key path {name!r} is not under devices/")
    return str(rel)


def read_bundle(path: Path) -> Bundle:
    """Read and check a bundle file; ConfigError naming the file on any problem."""
    try:
        if path.stat().st_size > MAX_BUNDLE_BYTES:
            raise ConfigError(f"bundle {path} is over {MAX_BUNDLE_BYTES} bytes")
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"bundle {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read bundle {path}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"bundle {path} is not JSON: {exc.msg} at line {exc.lineno}") from None
    if not isinstance(doc, dict) or doc.get("format") != BUNDLE_FORMAT:
        raise ConfigError(f"{path} is not a depin-p2p node bundle")
    if doc.get("version") != BUNDLE_VERSION:
        raise ConfigError(
            f"bundle {path} has version {doc.get('version')!r}; this build reads {BUNDLE_VERSION}"
        )
    genesis, toml, network = doc.get("genesis"), doc.get("node_toml"), doc.get("network_id")
    if not isinstance(genesis, str) or not isinstance(toml, str) or not isinstance(network, str):
        raise ConfigError(f"bundle {path} lacks its genesis, node_toml or network_id")
    key = _seed(doc.get("key_seed"), path, "key_seed")
    if doc.get("address") != key.address:
        raise ConfigError(f"bundle {path} is corrupt: its key_seed is not the key of {doc.get('address')!r}")
    devices = doc.get("device_seeds", {})
    if not isinstance(devices, dict):
        raise ConfigError(f"bundle {path}: device_seeds must be an object")
    device_keys = {
        _device_path(name, path): _seed(seed, path, f"device_seeds[{name!r}]")
        for name, seed in devices.items()
    }
    return Bundle(network, genesis, toml, key, device_keys)


def genesis_file_of(bundle: Bundle, directory: Path) -> Path:
    """The bundle's genesis written to a temporary file under ``directory`` (the caller removes it)."""
    fd, name = tempfile.mkstemp(prefix=".genesis-", suffix=".json", dir=directory)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(bundle.genesis_text)
    return Path(name)

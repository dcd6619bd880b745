"""The node home: ``node.toml``, ``node.key``, ``genesis.json`` and the LMDB ``data`` dir.

One implementation for ``depin-p2p init`` and for ``depin-devnet``.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from depin_p2p.config import CONFIG_FILE, DEFAULT_CONFIG_TOML
from depin_p2p.crypto import KeyPair, write_key_file
from depin_p2p.errors import ConfigError
from depin_p2p.ledger.genesis import load_genesis
from depin_p2p.ledger.state import compute_genesis_changes
from depin_p2p.ledger.store import LedgerStore

HOME_KEY = "node.key"
HOME_GENESIS = "genesis.json"
HOME_DATA = "data"


@dataclass(frozen=True, slots=True)
class InitResult:
    home: Path
    address: str
    peer_id: str
    network_id: str
    genesis_hash: bytes
    state_root: bytes


def init_home(
    home: Path,
    *,
    genesis_file: Path,
    key: KeyPair,
    force: bool = False,
    config_toml: str | None = None,
    passphrase: bytes | None = None,
) -> InitResult:
    """Create a node home whose ledger equals the genesis.

    Writes ``node.toml`` (``config_toml``, or the documented defaults; an
    existing one is kept unless ``config_toml`` is given), the key (mode
    0600; encrypted with ``passphrase`` when given), a copy of the genesis,
    and an initialised LMDB store.

    Raises:
        ConfigError: a bad genesis, a home that exists (without ``force``)
            or is not a directory, or a home that cannot be written.
    """
    genesis = load_genesis(genesis_file)
    if home.exists() and not home.is_dir():
        raise ConfigError(f"home {home} exists and is not a directory")
    if home.exists() and any(home.iterdir()):
        if not force:
            raise ConfigError(f"home {home} already exists; use --force to overwrite it")
        # Only what init itself creates is removed; other files in the home are left alone.
        shutil.rmtree(home / HOME_DATA, ignore_errors=True)
    try:
        home.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(genesis_file, home / HOME_GENESIS)
        config = home / CONFIG_FILE
        if config_toml is not None or not config.exists():
            config.write_text(config_toml if config_toml is not None else DEFAULT_CONFIG_TOML)
    except OSError as exc:
        raise ConfigError(f"cannot create home {home}: {exc.strerror}") from None
    write_key_file(home / HOME_KEY, key, force=True, passphrase=passphrase)
    with LedgerStore.open(home / HOME_DATA) as store:
        store.commit_genesis(store.read(lambda v: compute_genesis_changes(v, genesis.initial_state())))
        root = store.state_root()
    return InitResult(home, key.address, key.peer_id, genesis.network_id, genesis.genesis_hash, root)

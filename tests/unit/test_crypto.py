"""Keys, key files, addresses and the libp2p peer id."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID
from nacl.signing import VerifyKey

from depin_p2p import crypto
from depin_p2p.crypto import KeyPair, load_key_file, write_key_file
from depin_p2p.errors import ConfigError


@given(st.binary(min_size=32, max_size=32))
def test_peer_id_matches_libp2p_derivation(seed: bytes) -> None:
    ours = KeyPair.from_seed(seed).peer_id
    theirs = ID.from_pubkey(create_new_key_pair(seed).public_key).to_base58()
    assert ours == theirs


@given(st.binary(min_size=32, max_size=32))
def test_address_round_trip(seed: bytes) -> None:
    key = KeyPair.from_seed(seed)
    assert crypto.public_key_from_address(key.address) == key.public_key


def test_address_typo_is_caught() -> None:
    addr = KeyPair.from_seed(b"\x05" * 32).address
    typo = addr[:-1] + ("2" if addr[-1] != "2" else "3")
    with pytest.raises(ConfigError, match="checksum"):
        crypto.public_key_from_address(typo)
    with pytest.raises(ConfigError, match="start with"):
        crypto.public_key_from_address("xx" + addr[2:])
    with pytest.raises(ConfigError, match="base58"):
        crypto.public_key_from_address(addr[:-1] + "0")


@given(st.binary(max_size=40))
def test_base58_round_trip(data: bytes) -> None:
    assert crypto.b58decode(crypto.b58encode(data)) == data


def test_key_file_round_trip_and_mode(tmp_path: Path) -> None:
    key = KeyPair.generate()
    path = tmp_path / "node.key"
    write_key_file(path, key)
    assert (path.stat().st_mode & 0o777) == 0o600
    assert load_key_file(path).seed == key.seed
    assert [p.name for p in tmp_path.iterdir()] == ["node.key"]  # no temp file left behind


def test_key_file_refuses_overwrite_without_force(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    first = KeyPair.generate()
    write_key_file(path, first)
    with pytest.raises(ConfigError, match="already exists"):
        write_key_file(path, KeyPair.generate())
    assert load_key_file(path).seed == first.seed
    second = KeyPair.generate()
    write_key_file(path, second, force=True)
    assert load_key_file(path).seed == second.seed


def _written(tmp_path: Path) -> Path:
    path = tmp_path / "node.key"
    write_key_file(path, KeyPair.from_seed(b"\x01" * 32))
    return path


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: p.unlink(), "does not exist"),
        (lambda p: p.write_bytes(p.read_bytes()[:40]), "corrupt or truncated"),
        (lambda p: p.write_bytes(b""), "is empty"),
        (lambda p: p.write_bytes(b"\xff\xfe garbage"), "cannot read"),
        (lambda p: p.write_text(json.dumps({"format": "other"})), "not a depin-p2p key file"),
        (
            lambda p: p.write_text(p.read_text().replace('"version": 1', '"version": 9')),
            "has version 9",
        ),
        (
            lambda p: p.write_text(p.read_text().replace("01" * 32, "02" * 32, 1)),
            "does not match its public key",
        ),
        (lambda p: p.write_text(p.read_text().replace("01" * 32, "zz" * 32, 1)), "not hex"),
        (lambda p: p.write_text(p.read_text().replace("01" * 32, "01" * 16, 1)), "16-byte seed"),
        (lambda p: os.chmod(p, 0o644), "readable by others"),
    ],
)
def test_bad_key_files_raise_config_error_naming_the_file(tmp_path: Path, damage, message) -> None:  # type: ignore[no-untyped-def]
    path = _written(tmp_path)
    damage(path)
    with pytest.raises(ConfigError, match=message) as info:
        load_key_file(path)
    assert str(path) in str(info.value)


def test_directory_is_not_a_key_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a regular file"):
        load_key_file(tmp_path)


def test_sign_is_deterministic_ed25519() -> None:
    key = KeyPair.from_seed(b"\x09" * 32)
    sig = key.sign(b"hello")
    assert sig == key.sign(b"hello")
    VerifyKey(key.public_key).verify(b"hello", sig)

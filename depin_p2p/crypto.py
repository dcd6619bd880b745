"""Ed25519 keys (PyNaCl), key files, addresses and the libp2p peer id.

One 32-byte seed is a node's whole identity: it signs every message, and the
libp2p peer id is derived from the same key, so a node has one name on both
layers. Key files are JSON with a format tag and a version, written
atomically with mode 0600; loading checks everything and raises ConfigError
with a message that names the file and the problem.

An encrypted key file (``keygen --encrypt``) holds no ``seed``: its
``encryption`` object has the Argon2id salt and limits and the seed sealed
with ``nacl.secret.SecretBox`` (XSalsa20-Poly1305) under the key Argon2id
derives from the passphrase. A wrong passphrase and a modified box fail the
same authentication check; a modified public key fails the seed check.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nacl.signing import SigningKey

from depin_p2p.errors import ConfigError

SEED_BYTES = 32
KEY_FILE_FORMAT = "depin-p2p/ed25519-key"
KEY_FILE_VERSION = 1
ADDRESS_PREFIX = "dp"
_ADDRESS_CHECKSUM = 4

# Argon2id limits of new encrypted key files (libsodium's "interactive": 64 MiB, 2 passes), and the
# most a key file may ask for (its "sensitive": 1 GiB, 4 passes), so a hostile file cannot make
# `run` allocate without bound.
KDF_OPSLIMIT = 2
KDF_MEMLIMIT = 64 * 1024 * 1024
KDF_MAX_OPSLIMIT = 4
KDF_MAX_MEMLIMIT = 1024 * 1024 * 1024
KDF_NAME = "argon2id"
CIPHER_NAME = "xsalsa20poly1305"

Passphrase = Callable[[], bytes]  # asked only when the key file is encrypted

_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def b58encode(data: bytes) -> str:
    """Bitcoin-alphabet base58, as libp2p uses for peer ids."""
    n = int.from_bytes(data, "big")
    out = []
    while n:
        n, r = divmod(n, 58)
        out.append(_B58[r])
    zeros = len(data) - len(data.lstrip(b"\0"))
    return "1" * zeros + "".join(reversed(out))


def b58decode(text: str) -> bytes:
    """Inverse of :func:`b58encode`; raises ValueError on a bad character."""
    n = 0
    for ch in text:
        idx = _B58.find(ch)
        if idx < 0:
            raise ValueError(f"invalid base58 character {ch!r}")
        n = n * 58 + idx
    zeros = len(text) - len(text.lstrip("1"))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    return b"\0" * zeros + body


@dataclass(frozen=True, slots=True)
class KeyPair:
    """An Ed25519 key pair built from a 32-byte seed. Implements ``wire.Signer``."""

    seed: bytes = field(repr=False)
    _signing_key: SigningKey = field(repr=False, compare=False)
    public_key: bytes

    @classmethod
    def from_seed(cls, seed: bytes) -> KeyPair:
        if len(seed) != SEED_BYTES:
            raise ValueError(f"an Ed25519 seed is {SEED_BYTES} bytes, got {len(seed)}")
        sk = SigningKey(seed)
        return cls(bytes(seed), sk, bytes(sk.verify_key))

    @classmethod
    def generate(cls) -> KeyPair:
        """A fresh key from the OS random number generator."""
        return cls.from_seed(os.urandom(SEED_BYTES))

    def sign(self, data: bytes) -> bytes:
        return self._signing_key.sign(data).signature

    @property
    def address(self) -> str:
        return address_from_public_key(self.public_key)

    @property
    def peer_id(self) -> str:
        return peer_id_from_public_key(self.public_key)


def _address_checksum(public_key: bytes) -> bytes:
    return hashlib.blake2b(b"depin-p2p/address" + public_key, digest_size=_ADDRESS_CHECKSUM).digest()


def address_from_public_key(public_key: bytes) -> str:
    """Stable text form of a public key: ``dp`` + base58(key ‖ 4-byte checksum)."""
    return ADDRESS_PREFIX + b58encode(public_key + _address_checksum(public_key))


def public_key_from_address(address: str) -> bytes:
    """Parse an address; raises ConfigError on a typo (bad prefix, character or checksum)."""
    if not address.startswith(ADDRESS_PREFIX):
        raise ConfigError(f"address {address!r} does not start with {ADDRESS_PREFIX!r}")
    try:
        raw = b58decode(address[len(ADDRESS_PREFIX) :])
    except ValueError as exc:
        raise ConfigError(f"address {address!r}: {exc}") from None
    key, checksum = raw[:-_ADDRESS_CHECKSUM], raw[-_ADDRESS_CHECKSUM:]
    if len(key) != 32 or _address_checksum(key) != checksum:
        raise ConfigError(f"address {address!r} has a bad checksum (typo?)")
    return key


def peer_id_from_public_key(public_key: bytes) -> str:
    """The libp2p peer id of an Ed25519 key, computed without importing libp2p.

    libp2p serialises the key as protobuf ``PublicKey{Type=Ed25519(1), Data}``
    (``08 01 12 20 ‖ key``, 36 bytes) and, being at most 42 bytes, inlines it
    in an identity multihash (``00 24 ‖ …``), printed in base58.
    """
    proto = b"\x08\x01\x12\x20" + public_key
    return b58encode(b"\x00" + bytes([len(proto)]) + proto)


# --------------------------------------------------------------------------
# Key files


def write_key_file(path: Path, key: KeyPair, *, force: bool = False, passphrase: bytes | None = None) -> None:
    """Write ``key`` to ``path`` atomically with mode 0600; encrypted when ``passphrase`` is given.

    Raises ConfigError if the file exists and ``force`` is false, if the
    passphrase is empty, or if the directory cannot be written.
    """
    if path.exists() and not force:
        raise ConfigError(f"key file {path} already exists; use --force to overwrite it")
    doc: dict[str, Any] = {"format": KEY_FILE_FORMAT, "version": KEY_FILE_VERSION}
    if passphrase is None:
        doc["seed"] = key.seed.hex()
    else:
        doc["encryption"] = _encrypt_seed(key.seed, passphrase, path)
    doc.update(public_key=key.public_key.hex(), address=key.address, peer_id=key.peer_id)
    data = (json.dumps(doc, indent=2) + "\n").encode()
    directory = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise ConfigError(f"cannot write key file {path}: {exc.strerror}") from None
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(directory)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise ConfigError(f"cannot write key file {path}: {exc.strerror}") from None


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _encrypt_seed(seed: bytes, passphrase: bytes, path: Path) -> dict[str, Any]:
    from nacl import pwhash, secret, utils  # noqa: PLC0415 -- only encrypted key files need them

    if not passphrase:
        raise ConfigError(f"key file {path}: the passphrase is empty")
    salt = utils.random(pwhash.argon2id.SALTBYTES)
    box_key = pwhash.argon2id.kdf(
        secret.SecretBox.KEY_SIZE, passphrase, salt, opslimit=KDF_OPSLIMIT, memlimit=KDF_MEMLIMIT
    )
    sealed = bytes(secret.SecretBox(box_key).encrypt(seed))  # 24-byte nonce, then the sealed seed
    return {
        "kdf": KDF_NAME,
        "opslimit": KDF_OPSLIMIT,
        "memlimit": KDF_MEMLIMIT,
        "salt": salt.hex(),
        "cipher": CIPHER_NAME,
        "box": sealed.hex(),
    }


def _decrypt_seed(enc: object, passphrase: Passphrase | None, path: Path) -> bytes:
    from nacl import exceptions, pwhash, secret  # noqa: PLC0415

    if passphrase is None:
        raise ConfigError(
            f"key file {path} is encrypted: name its passphrase in node.toml "
            "([key] passphrase_file or passphrase_env) or pass --passphrase-file/--passphrase-env"
        )
    if not isinstance(enc, dict) or enc.get("kdf") != KDF_NAME or enc.get("cipher") != CIPHER_NAME:
        raise ConfigError(f"key file {path} is encrypted with a scheme this build does not know")
    ops, mem, salt_hex, box_hex = enc.get("opslimit"), enc.get("memlimit"), enc.get("salt"), enc.get("box")
    if not (
        isinstance(ops, int)
        and isinstance(mem, int)
        and isinstance(salt_hex, str)
        and isinstance(box_hex, str)
    ):
        raise ConfigError(f"key file {path} is corrupt: its encryption fields are missing or mistyped")
    if not (pwhash.argon2id.OPSLIMIT_MIN <= ops <= KDF_MAX_OPSLIMIT) or not (
        pwhash.argon2id.MEMLIMIT_MIN <= mem <= KDF_MAX_MEMLIMIT
    ):
        raise ConfigError(
            f"key file {path} asks for Argon2id limits out of bounds (opslimit {ops}, memlimit {mem})"
        )
    try:
        salt, box = bytes.fromhex(salt_hex), bytes.fromhex(box_hex)
    except ValueError:
        raise ConfigError(f"key file {path} is corrupt: its salt or box is not hex") from None
    if len(salt) != pwhash.argon2id.SALTBYTES:
        raise ConfigError(f"key file {path} is corrupt: a {len(salt)}-byte salt")
    secret_ = passphrase()
    box_key = pwhash.argon2id.kdf(secret.SecretBox.KEY_SIZE, secret_, salt, opslimit=ops, memlimit=mem)
    try:
        return bytes(secret.SecretBox(box_key).decrypt(box))
    except (exceptions.CryptoError, ValueError, TypeError):
        raise ConfigError(
            f"cannot decrypt key file {path}: wrong passphrase, or the file was modified"
        ) from None


def key_file_is_encrypted(path: Path) -> bool:
    """True when ``path`` is a readable key file of ours holding an encrypted seed."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and "encryption" in doc


def load_key_file(path: Path, passphrase: Passphrase | None = None) -> KeyPair:
    """Load a key file; every problem is a ConfigError naming the file.

    Checks: exists and is a regular file, not readable by group or others,
    valid JSON of our format and version, a 32-byte seed (decrypted with
    ``passphrase()`` when the file is encrypted) whose public key matches the
    recorded one (catches corruption and hand edits).
    """
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ConfigError(f"key file {path} does not exist (create one with `depin-p2p keygen`)") from None
    except OSError as exc:
        raise ConfigError(f"cannot read key file {path}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"key file {path} is not a regular file")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise ConfigError(f"key file {path} has mode {mode:04o}, readable by others; run `chmod 600 {path}`")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read key file {path}: {exc}") from None
    if not text.strip():
        raise ConfigError(f"key file {path} is empty")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        detail = f"{exc.msg} at line {exc.lineno}"
        raise ConfigError(f"key file {path} is corrupt or truncated: {detail}") from None
    if not isinstance(doc, dict) or doc.get("format") != KEY_FILE_FORMAT:
        raise ConfigError(f"key file {path} is not a depin-p2p key file")
    if doc.get("version") != KEY_FILE_VERSION:
        raise ConfigError(
            f"key file {path} has version {doc.get('version')!r}; this build reads version {KEY_FILE_VERSION}"
        )
    seed_hex, pk_hex = doc.get("seed"), doc.get("public_key")
    if "encryption" in doc and isinstance(pk_hex, str):
        seed_hex = _decrypt_seed(doc["encryption"], passphrase, path).hex()
    if not isinstance(seed_hex, str) or not isinstance(pk_hex, str):
        raise ConfigError(f"key file {path} lacks 'seed' or 'public_key'")
    try:
        seed, recorded_pk = bytes.fromhex(seed_hex), bytes.fromhex(pk_hex)
    except ValueError:
        raise ConfigError(f"key file {path} has a seed or public key that is not hex") from None
    if len(seed) != SEED_BYTES:
        raise ConfigError(f"key file {path} has a {len(seed)}-byte seed; expected {SEED_BYTES}")
    key = KeyPair.from_seed(seed)
    if key.public_key != recorded_pk:
        raise ConfigError(f"key file {path} is corrupt: its seed does not match its public key")
    return key

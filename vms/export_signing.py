"""Signing export manifests, and checking an export against its manifest.

Each instance has one Ed25519 key, made on first use and kept in ``data_dir``
(:data:`KEY_FILE`, PKCS #8 PEM, mode 0600). Its id is the first 16 hex digits of
the SHA-256 of the raw 32-byte public key. A manifest is signed over its
canonical JSON without ``signature`` (keys sorted, no spaces, UTF-8), and
carries the signature with the key id and the public key, so anyone can check
it; whether that key is to be trusted is a separate question that
:func:`verify_export` answers against a key the checker already holds.

Pure functions and small file reads; any thread.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

KEY_FILE = "export-signing-key.pem"
ALGORITHM = "ed25519"


def canonical(document: dict[str, Any]) -> bytes:
    """The bytes a signature covers: ``document`` without ``signature``, as canonical JSON."""
    unsigned = {key: value for key, value in document.items() if key != "signature"}
    return json.dumps(unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(key: Ed25519PublicKey) -> str:
    return hashlib.sha256(raw_public(key)).hexdigest()[:16]


def public_pem(key: Ed25519PublicKey) -> str:
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    return key.public_bytes(serialization.Encoding.PEM, spki).decode()


@dataclass(frozen=True)
class SigningKey:
    """This instance's key pair."""

    private: Ed25519PrivateKey

    @property
    def public(self) -> Ed25519PublicKey:
        return self.private.public_key()

    @property
    def id(self) -> str:
        return key_id(self.public)

    def sign(self, document: dict[str, Any]) -> dict[str, Any]:
        """``document`` with its ``signature`` member."""
        value = self.private.sign(canonical(document))
        return {
            **document,
            "signature": {
                "algorithm": ALGORITHM,
                "key_id": self.id,
                "public_key": public_pem(self.public),
                "value": base64.b64encode(value).decode(),
            },
        }


def load_or_create_key(data_dir: Path) -> SigningKey:
    """The key in ``data_dir``, made (readable by this user only) if there is none."""
    path = data_dir / KEY_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            pass  # made meanwhile by another process: use that one
        else:
            with os.fdopen(fd, "wb") as file:
                file.write(pem)
                file.flush()
                os.fsync(file.fileno())
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} does not hold an Ed25519 private key")
    return SigningKey(key)


def load_public_key(pem: bytes) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM: a public key, or the private key it belongs to."""
    if b"PRIVATE KEY" in pem:
        private = serialization.load_pem_private_key(pem, password=None)
        if isinstance(private, Ed25519PrivateKey):
            return private.public_key()
    else:
        public = serialization.load_pem_public_key(pem)
        if isinstance(public, Ed25519PublicKey):
            return public
    raise ValueError("not an Ed25519 key")


def _file_digest(path: Path) -> tuple[int, str]:
    with path.open("rb") as file:
        return os.fstat(file.fileno()).st_size, hashlib.file_digest(file, "sha256").hexdigest()


def verify_export(file: Path, manifest: dict[str, Any], trusted: Ed25519PublicKey) -> list[str]:
    """What is wrong with ``file`` and its ``manifest`` against the ``trusted`` key; empty if nothing."""
    problems: list[str] = []
    described = manifest.get("file") or {}
    size, digest = _file_digest(file)
    if size != described.get("bytes"):
        problems.append(f"file size: {size} bytes, the manifest says {described.get('bytes')}")
    if digest != described.get("sha256"):
        problems.append(f"file hash: SHA-256 {digest}, the manifest says {described.get('sha256')}")
    signature = manifest.get("signature") or {}
    try:
        signer = load_public_key(str(signature["public_key"]).encode())
        if signature.get("algorithm") != ALGORITHM:
            raise ValueError(f"algorithm {signature.get('algorithm')!r}")
        signer.verify(base64.b64decode(signature["value"], validate=True), canonical(manifest))
    except (KeyError, ValueError, TypeError, InvalidSignature):
        problems.append("signature: it does not match the manifest (the manifest was altered, or not signed)")
        return problems
    if signature.get("key_id") != key_id(signer):
        problems.append(f"signature: the key id {signature.get('key_id')} is not the id of its public key")
    if raw_public(signer) != raw_public(trusted):
        problems.append(f"untrusted key: signed by {key_id(signer)}, the trusted key is {key_id(trusted)}")
    return problems

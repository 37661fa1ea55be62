"""``hallwatch verify-export FILE MANIFEST``: is this the file the manifest describes, was the
manifest signed, and by the trusted key?

The trusted key is ``--key`` (a PEM public key, or the private key it belongs to),
else this instance's signing key in the configuration's ``data_dir``. Prints one
line starting ``OK`` and exits 0, or one ``FAILED`` line per check that fails
(file size, file hash, signature, untrusted key) and exits 1; 2 when the
configuration cannot be read.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from vms.config_loader import ConfigError, load_config
from vms.export_signing import KEY_FILE, key_id, load_public_key, verify_export


def _trusted(key: Path | None, config: Path | None) -> Ed25519PublicKey:
    """The trusted public key; ``ValueError`` or ``OSError`` saying why there is none."""
    if key is None:
        key = load_config(config).server.data_dir / KEY_FILE
        if not key.is_file():
            raise ValueError(f"this instance has no signing key ({key}); pass the trusted key with --key")
    return load_public_key(key.read_bytes())


def verify_command(file: Path, manifest_path: Path, key: Path | None, config: Path | None) -> int:
    try:
        trusted = _trusted(key, config)
    except ConfigError as err:
        print(err, file=sys.stderr)
        return 2
    except (OSError, ValueError) as err:
        print(f"FAILED: no trusted key: {err}")
        return 1
    try:
        manifest: dict[str, Any] = json.loads(manifest_path.read_text(encoding="utf-8"))
        if not isinstance(manifest, dict):
            raise ValueError("not a JSON object")
        problems = verify_export(file, manifest, trusted)
    except (OSError, ValueError) as err:
        print(f"FAILED: {err}")
        return 1
    if problems:
        for problem in problems:
            print(f"FAILED: {problem}")
        return 1
    camera = manifest.get("camera") or {}
    actual = manifest.get("actual") or {}
    print(
        f"OK: {file.name}: camera {camera.get('id')} ({camera.get('name')}), "
        f"{actual.get('start')} .. {actual.get('end')}, signed by key {key_id(trusted)}"
    )
    return 0

"""The hash of the configuration that must be equal on every instance of a cluster.

Instances sharing a database share the cameras, so they must agree on what the cameras,
halls, centres and access rules are and how cameras are pulled, recorded and analysed;
an instance whose shared configuration differs from the live instances' refuses to
start (:mod:`vms.cluster.membership`). What is hashed, section by section
(:data:`SHARED`):

* ``centres``, ``halls``, ``cameras`` (credentials included: a changed camera password
  is a difference);
* ``ingest``, ``pictures``, ``transcode``, ``analysis``: how every camera is pulled and
  what is made of it, wherever it is pulled;
* ``recording`` and ``exports``, except their ``directory`` (the shared mount may sit at
  another path on each machine);
* ``auth`` except ``bootstrap_secrets_file``, and ``audit``: one login policy and one
  retention for the one store;
* ``cluster`` except this instance's own ``instance_id``, ``http_url`` and ``rtsp_url``:
  the lease timing every instance relies on.

Not hashed, because they belong to one instance: ``server`` (address, port, data
directory, limits), ``database`` (the same database by definition; its password may
differ), ``webrtc`` (host addresses, ICE servers, per-process viewer limits),
``metrics``, ``rtsp_server`` and ``gb28181`` (this instance's own sockets).

Only SHA-256 digests leave the process. Pure functions; any thread.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, SecretStr

if TYPE_CHECKING:
    from vms.config import Config

SHARED: dict[str, frozenset[str]] = {
    "centres": frozenset(),
    "halls": frozenset(),
    "cameras": frozenset(),
    "ingest": frozenset(),
    "pictures": frozenset(),
    "transcode": frozenset(),
    "analysis": frozenset(),
    "recording": frozenset({"directory"}),
    "exports": frozenset({"directory"}),
    "auth": frozenset({"bootstrap_secrets_file"}),
    "audit": frozenset(),
    "cluster": frozenset({"instance_id", "http_url", "rtsp_url"}),
}
"""Each shared section, with the keys of it that belong to one instance (left out)."""


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return {key: _plain(getattr(value, key)) for key in type(value).model_fields}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _digest(data: Any) -> str:
    text = json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def section_hashes(config: Config) -> dict[str, str]:
    """The SHA-256 of each shared section, its instance's own keys left out."""
    hashes: dict[str, str] = {}
    for name, own in SHARED.items():
        data = _plain(getattr(config, name))
        if isinstance(data, dict):
            data = {key: item for key, item in data.items() if key not in own}
        hashes[name] = _digest(data)
    return hashes


def config_hash(sections: dict[str, str]) -> str:
    """One hash of all the shared sections."""
    return _digest(sections)


def differing(mine: dict[str, str], theirs: dict[str, str]) -> list[str]:
    """The sections whose hashes differ (or that only one side has), in :data:`SHARED` order."""
    names = [*SHARED, *sorted((mine.keys() | theirs.keys()) - SHARED.keys())]
    return [name for name in names if (name in mine or name in theirs) and mine.get(name) != theirs.get(name)]

"""Configuration of the GB/T 28181 cascade (``gb28181:``): the superior platforms we register with.

Hallwatch is the lower platform (下级平台); each entry of ``platforms`` is one superior
platform (上级平台), such as a centre's video platform, with its SIP identity and
address, our identity and password there, the timers, what it may see (halls and
cameras, never beyond what its ``centre`` may see) and how many live sessions it may
hold. Used by :mod:`vms.gb28181`. Same rules as every section: unknown keys are
errors, the password is ``SecretStr`` and never echoed. Pure data; any thread.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    SecretStr,
    StringConstraints,
    Tag,
    model_validator,
)

from vms.config_checks import Inconsistency, invalid
from vms.config_media import Seconds

if TYPE_CHECKING:
    from vms.config import Config

GbId = Annotated[str, StringConstraints(pattern=r"^\d{20}$")]
"""A GB/T 28181 identifier: 20 digits."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


def _selection_shape(value: Any) -> str:
    return "all" if isinstance(value, str) else "list"


Selection = Annotated[
    Annotated[list[str], Tag("list")] | Annotated[Literal["all"], Tag("all")],
    Discriminator(_selection_shape),
]


class PlatformSettings(_Model):
    """One superior platform and how we cascade to it."""

    name: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")] = Field(
        description="Short id of the platform: in logs, metrics and the audit trail (as 'platform <name>')."
    )
    server_id: GbId = Field(description="The superior platform's SIP server ID (20 digits).")
    domain: Annotated[str, StringConstraints(pattern=r"^[0-9A-Za-z.-]{1,64}$")] = Field(
        description="The superior's SIP domain, often the first 10 digits of its ID."
    )
    host: Annotated[str, StringConstraints(min_length=1, max_length=253)] = Field(
        description="Address of the superior's SIP server."
    )
    port: int = Field(default=5060, ge=1, le=65535, description="Its SIP port.")
    transport: Literal["udp", "tcp"] = Field(default="udp", description="SIP signalling over UDP or TCP.")
    local_id: GbId = Field(description="Our platform ID as the superior knows it (20 digits, type 200).")
    local_host: str = Field(default="0.0.0.0", description="Local address the signalling socket binds.")
    local_port: int = Field(
        default=5060,
        ge=0,
        le=65535,
        description="Local SIP port (UDP: where the superior sends); 0 picks one.",
    )
    contact_host: str | None = Field(
        default=None,
        description="Address the superior reaches us at (Via, Contact, SDP); empty: the socket's own "
        "address towards the superior.",
    )
    password: SecretStr = Field(description="Our password at the superior (digest authentication).")
    register_expiry: int = Field(
        default=3600, ge=2, le=86_400, description="Seconds a registration lasts; refreshed before it ends."
    )
    keepalive_interval: Seconds = Field(default=60.0, le=3600, description="Seconds between keepalives.")
    keepalive_misses: int = Field(
        default=3, ge=1, le=20, description="Keepalives in a row left unanswered before registering again."
    )
    transaction_timeout: Seconds = Field(
        default=8.0, le=64, description="Seconds a request waits for its final answer."
    )
    backoff_initial: Seconds = Field(default=2.0, le=600, description="Wait after a failed registration.")
    backoff_max: Seconds = Field(default=120.0, le=3600, description="Longest wait between registrations.")
    centre: str = Field(description="The centre whose permissions apply: the platform sees its halls only.")
    halls: Selection = Field(default="all", description="Halls shared: all, or a list of hall ids.")
    cameras: Selection = Field(
        default="all", description="Cameras shared within those halls: all, or a list of camera ids."
    )
    encoding: Literal["GB2312", "UTF-8"] = Field(
        default="GB2312", description="Encoding of the XML we send (what we receive may be either)."
    )
    catalog_batch: int = Field(default=20, ge=1, le=200, description="Items per Catalog message.")
    max_sessions: int = Field(
        default=16, ge=0, le=1024, description="Live sessions the platform may hold at once; beyond: 486."
    )

    @model_validator(mode="after")
    def _order(self) -> Self:
        if self.backoff_max < self.backoff_initial:
            raise invalid("gb28181_backoff", "backoff_max is shorter than backoff_initial")
        if self.keepalive_interval * self.keepalive_misses >= self.register_expiry:
            raise invalid(
                "gb28181_keepalive",
                "keepalive_interval × keepalive_misses must be shorter than register_expiry, "
                "or the registration lapses before a dead superior is noticed",
            )
        return self


class Gb28181Settings(_Model):
    """The cascade to superior platforms and the identity of what we share."""

    civil_code: Annotated[str, StringConstraints(pattern=r"^\d{6}(\d{2})?$")] = Field(
        default="441481",
        description="Administrative division (GB/T 2260) that begins every channel ID: 兴宁市 441481.",
    )
    industry: Annotated[str, StringConstraints(pattern=r"^\d{2}$")] = Field(
        default="00", description="Industry code (digits 9-10) of the channel IDs."
    )
    group_name: str = Field(
        default="兴宁市政务服务分厅", min_length=1, description="Name of the business group of all halls."
    )
    max_sessions_total: int = Field(
        default=64, ge=0, le=4096, description="Live cascade sessions of all platforms at once; beyond: 486."
    )
    rtcp_timeout: Seconds = Field(
        default=30.0,
        description=(
            "Seconds without RTCP after which a live UDP session ends, once its superior has sent "
            "RTCP (six report intervals); a superior that never sends RTCP is not held to it."
        ),
    )
    channel_ids: dict[str, GbId] = Field(
        default_factory=dict,
        description="Fixed channel IDs by camera or hall id, replacing the derived ones.",
    )
    platforms: list[PlatformSettings] = Field(default_factory=list, description="Superior platforms.")


def gb28181_problems(config: Config) -> list[Inconsistency]:
    """References of the cascade section to unknown centres, halls and cameras; duplicate names."""
    section = config.gb28181
    problems: list[Inconsistency] = []
    centres = {c.id for c in config.centres}
    halls = {h.id for h in config.halls}
    cameras = {c.id for c in config.cameras}
    seen: set[str] = set()
    for index, platform in enumerate(section.platforms):
        where: tuple[str | int, ...] = ("gb28181", "platforms", index)
        if platform.name in seen:
            problems.append(Inconsistency((*where, "name"), f"platform name {platform.name!r} is used twice"))
        seen.add(platform.name)
        if platform.centre not in centres:
            problems.append(
                Inconsistency(
                    (*where, "centre"), f"unknown centre {platform.centre!r}; known: {sorted(centres)}"
                )
            )
        for key, known in (("halls", halls), ("cameras", cameras)):
            chosen = getattr(platform, key)
            for item in chosen if isinstance(chosen, list) else ():
                if item not in known:
                    problems.append(Inconsistency((*where, key), f"unknown {key[:-1]} {item!r}"))
    for key in section.channel_ids:
        if key not in halls and key not in cameras:
            problems.append(
                Inconsistency(("gb28181", "channel_ids", key), f"{key!r} is neither a camera nor a hall")
            )
    return problems + _id_collisions(config) if section.platforms else problems


CAMERA_TYPE = "131"
"""GB/T 28181 type code of a camera channel."""
HALL_TYPE = "216"
"""Type code of a virtual organisation: each hall."""
GROUP_TYPE = "215"
"""Type code of a business group: all halls together."""
_SERIALS = 10_000_000


def channel_id(section: Gb28181Settings, type_code: str, key: str) -> str:
    """The stable 20-digit ID of a camera (``131``), a hall (``216``) or the group (``215``):
    division code padded to 8 digits, industry (2), type (3) and a 7-digit serial derived
    from the camera or hall id (SHA-256), so IDs survive reordering and additions; an entry
    of ``channel_ids`` replaces it."""
    fixed = section.channel_ids.get(key)
    if fixed is not None:
        return fixed
    serial = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") % _SERIALS
    return f"{section.civil_code.ljust(8, '0')}{section.industry}{type_code}{serial:07d}"


def _id_collisions(config: Config) -> list[Inconsistency]:
    section = config.gb28181
    owners = {channel_id(section, GROUP_TYPE, ""): "the group"}
    problems: list[Inconsistency] = []
    keyed = [(h.id, HALL_TYPE, "halls", i) for i, h in enumerate(config.halls)]
    keyed += [(c.id, CAMERA_TYPE, "cameras", i) for i, c in enumerate(config.cameras)]
    for key, type_code, where, index in keyed:
        gb_id = channel_id(section, type_code, key)
        if gb_id in owners:
            problems.append(
                Inconsistency(
                    (where, index, "id"),
                    f"the GB/T 28181 ID {gb_id} of {key!r} is also that of {owners[gb_id]}; "
                    f"give one of them a fixed ID under gb28181.channel_ids",
                )
            )
        owners[gb_id] = repr(key)
    return problems

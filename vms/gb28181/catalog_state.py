"""What a superior platform was told of our catalog, and what changed since.

Hallwatch's cameras, halls and shares change only with the configuration, that is across
a restart; a subscribed superior must still hear of it. :func:`snapshot` takes the
status-free content of every catalog item (the fields a Catalog answer carries, except
``Status``) and whether the camera is enabled; :func:`changes` compares a stored
snapshot with the current :class:`~vms.gb28181.channels.Directory`: items gone (DEL),
new (ADD), changed (UPDATE), and cameras disabled or enabled since. A disabled camera
stays in the catalog (a Catalog answer lists it, OFF), so disabling it is an OFF and
enabling it an ON, not DEL and ADD: the superior keeps what it set up for the channel.
Pure functions; any thread.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vms.gb28181.channels import Directory, Node
from vms.gb28181.queries import item_fields

_DELETION_ORDER = {"camera": 0, "hall": 1, "group": 2}
"""Children are deleted before their parents."""


@dataclass(frozen=True, slots=True)
class Announced:
    """One catalog item as announced: ``attributes`` are its fields but DeviceID, Name,
    ParentID and Status."""

    kind: str
    name: str
    parent_id: str
    attributes: dict[str, str]
    enabled: bool

    def same_item(self, other: Announced) -> bool:
        """Whether the two describe the item alike (enabled or not aside)."""
        return (self.kind, self.name, self.parent_id, self.attributes) == (
            other.kind,
            other.name,
            other.parent_id,
            other.attributes,
        )


Catalog = dict[str, Announced]
"""Announced items by channel ID."""


@dataclass(slots=True)
class Changes:
    """What a subscriber must be told, each list in the order to tell it."""

    deleted: list[str] = field(default_factory=list)
    added: list[Node] = field(default_factory=list)
    updated: list[Node] = field(default_factory=list)
    disabled: list[Node] = field(default_factory=list)
    enabled: list[Node] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.deleted or self.added or self.updated or self.disabled or self.enabled)

    def __str__(self) -> str:
        counts = (
            ("deleted", len(self.deleted)),
            ("added", len(self.added)),
            ("updated", len(self.updated)),
            ("disabled", len(self.disabled)),
            ("enabled", len(self.enabled)),
        )
        return ", ".join(f"{count} {word}" for word, count in counts if count) or "nothing"


def announced(directory: Directory, node: Node) -> Announced:
    fields = dict(item_fields(directory, node))
    del fields["DeviceID"]
    name = fields.pop("Name")
    parent_id = fields.pop("ParentID", "")
    return Announced(node.kind, name, parent_id, fields, node.enabled)


def snapshot(directory: Directory) -> Catalog:
    """The directory's items as a subscriber is told them, parents first."""
    return {node.gb_id: announced(directory, node) for node in directory.items()}


def changes(before: Catalog, directory: Directory) -> Changes:
    """From the ``before`` catalog to the directory's."""
    nodes = directory.items()
    now = {node.gb_id for node in nodes}
    found = Changes(
        deleted=sorted(
            (i for i in before if i not in now), key=lambda i: _DELETION_ORDER.get(before[i].kind, 0)
        )
    )
    for node in nodes:
        old = before.get(node.gb_id)
        if old is None:
            found.added.append(node)
            continue
        if not old.same_item(announced(directory, node)):
            found.updated.append(node)
        if old.enabled != node.enabled:
            (found.enabled if node.enabled else found.disabled).append(node)
    return found

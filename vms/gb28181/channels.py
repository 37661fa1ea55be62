"""What one superior platform sees: the business group, its halls and their cameras.

The catalog is a tree: one business group (type 215, the site's ``group_name``), each
shared hall a virtual organisation (216) in it, each shared camera a channel (131)
in its hall, all with the stable IDs of :func:`vms.config_gb28181.channel_id`. A
platform sees the halls its ``halls`` names *and* its centre may see, and within them
the cameras its ``cameras`` names. Pure data built from the configuration; any thread.
"""

from __future__ import annotations

from dataclasses import dataclass

from vms.config import Camera, Config
from vms.config_gb28181 import CAMERA_TYPE, GROUP_TYPE, HALL_TYPE, PlatformSettings, channel_id


@dataclass(frozen=True, slots=True)
class Node:
    """One catalog item: the group, a hall or a camera."""

    gb_id: str
    name: str
    kind: str
    """``group``, ``hall`` or ``camera``."""
    parent_id: str
    key: str
    """The camera or hall id in our configuration ('' for the group)."""
    address: str = ""
    group_id: str = ""
    enabled: bool = True
    """False for a camera disabled in the configuration: still listed, never ON."""


class Directory:
    """The catalog of one platform; lookups by GB ID and by camera id."""

    def __init__(self, config: Config, platform: PlatformSettings) -> None:
        section = config.gb28181
        self.civil_code = section.civil_code
        self.group = Node(channel_id(section, GROUP_TYPE, ""), section.group_name, "group", "", "")
        visible = {hall.id for hall in config.halls_for_centre(platform.centre)}
        chosen = platform.halls
        halls = [h for h in config.halls if h.id in visible and (chosen == "all" or h.id in chosen)]
        self.halls = [
            Node(channel_id(section, HALL_TYPE, h.id), h.name, "hall", self.group.gb_id, h.id, h.department)
            for h in halls
        ]
        hall_ids = {node.key: node for node in self.halls}
        self.cameras = [
            self._camera_node(config, camera, hall_ids[camera.hall])
            for camera in config.cameras
            if camera.hall in hall_ids and (platform.cameras == "all" or camera.id in platform.cameras)
        ]
        self._by_id = {node.gb_id: node for node in [self.group, *self.halls, *self.cameras]}
        self._by_camera = {node.key: node for node in self.cameras}

    def _camera_node(self, config: Config, camera: Camera, hall: Node) -> Node:
        return Node(
            channel_id(config.gb28181, CAMERA_TYPE, camera.id),
            camera.name,
            "camera",
            hall.gb_id,
            camera.id,
            address=hall.name,
            group_id=self.group.gb_id,
            enabled=camera.enabled,
        )

    def items(self) -> list[Node]:
        """Every catalog item, parents first."""
        return [self.group, *self.halls, *self.cameras]

    def node(self, gb_id: str) -> Node | None:
        return self._by_id.get(gb_id)

    def camera_node(self, camera_id: str) -> Node | None:
        return self._by_camera.get(camera_id)

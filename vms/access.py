"""Who is asking, and what they may do: principals, roles, permissions, visible halls.

A :class:`Principal` is built per request from a login session or an API token
(see :mod:`vms.auth`) and carried by the route dependencies in :mod:`vms.deps`.
Pure data and functions: no I/O, safe from any thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from vms.config import Config

Role = Literal["viewer", "operator", "admin"]
Permission = Literal["watch", "snapshot", "playback", "acknowledge", "audit", "admin"]

ROLES: tuple[Role, ...] = get_args(Role)
PERMISSIONS: tuple[Permission, ...] = get_args(Permission)

ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    "viewer": frozenset({"watch"}),
    "operator": frozenset({"watch", "snapshot", "playback", "acknowledge", "audit"}),
    "admin": frozenset(PERMISSIONS),
}
"""viewer watches live; operator also takes snapshots, lists and plays recordings,
acknowledges alarms and reads the audit trail; admin may do everything, including
managing users and cameras. A site may grant viewers snapshots and playback too
(``auth.viewer_permissions``)."""


def is_role(value: str) -> bool:
    return value in ROLE_PERMISSIONS


@dataclass(frozen=True)
class Principal:
    """An authenticated user, as one request sees them."""

    user_id: int
    username: str
    centre_id: str
    role: Role
    via: Literal["session", "token"]
    csrf_token: str | None
    """The session's CSRF token; ``None`` for API tokens (they are not sent by browsers)."""
    granted: frozenset[Permission] = frozenset()
    """Granted by the site's configuration on top of the role's."""

    def can(self, permission: Permission) -> bool:
        """Whether this principal's role, or the site's grant, gives ``permission``."""
        return permission in ROLE_PERMISSIONS.get(self.role, frozenset()) or permission in self.granted

    def permissions(self) -> list[Permission]:
        """The granted permissions, in the order of :data:`PERMISSIONS`."""
        return [p for p in PERMISSIONS if self.can(p)]

    def visible_hall_ids(self, config: Config) -> set[str]:
        """The halls this principal's centre may see; none if the centre left the config."""
        try:
            return {hall.id for hall in config.halls_for_centre(self.centre_id)}
        except KeyError:
            return set()

    def may_see_camera(self, config: Config, camera_id: str) -> bool:
        """Whether the camera exists and lies in a hall this principal's centre may see."""
        halls = self.visible_hall_ids(config)
        return any(cam.id == camera_id and cam.hall in halls for cam in config.cameras)

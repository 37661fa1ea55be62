"""GB/T 28181 cascade: Hallwatch as a lower platform (下级平台) of the centres' video platforms.

Control plane: SIP signalling (registration, keepalive, catalog, subscriptions, live
INVITE) on asyncio, the configured platforms' permissions and the audit of every
session. The PS-over-RTP media is the media plane's, reached through
:class:`~vms.gb28181.media.MediaStarter`.
"""

from vms.gb28181.media import MediaSession, MediaStarter, MediaTarget
from vms.gb28181.platform import PlatformClient, PlatformStatus
from vms.gb28181.service import Cascade

__all__ = ["Cascade", "MediaSession", "MediaStarter", "MediaTarget", "PlatformClient", "PlatformStatus"]

"""The database schema: users, login sessions, API tokens, the audit trail, saved layouts,
the store's own identity and heartbeat, the index of recorded segments, exports, reference
pictures, the superior platforms' catalog subscriptions with the catalog they were told,
the alarms shared by several instances on PostgreSQL, the instances of a cluster with
their camera leases and the secret they pull cameras from each other with, and the
failed-login counts that instances sharing a PostgreSQL database keep together.

Declarative SQLAlchemy models shared by SQLite and PostgreSQL. Migrations in
``vms/storage/migrations`` create exactly these tables; a test compares the two.
Times are timezone-aware UTC.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    ARRAY,
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    centre_id: Mapped[str] = mapped_column(String(64), index=True)
    role: Mapped[str] = mapped_column(String(16))
    """``viewer``, ``operator`` or ``admin``."""
    password_hash: Mapped[str] = mapped_column(String(255))
    """argon2id, encoded with its parameters."""
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    password_changed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class WebSession(Base):
    """A browser login. The cookie holds a random token; only its SHA-256 is stored."""

    __tablename__ = "web_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    """Hex SHA-256 of the cookie's token."""
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    source_addr: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ApiToken(Base):
    """A bearer token for scripts. Only its SHA-256 is stored; ``prefix`` identifies it to people."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(12))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    rtsp_ha1: Mapped[str | None] = mapped_column(String(32), nullable=True)
    """The RTSP Digest HA1 of the token (see :mod:`vms.rtsp_access`); None for older tokens."""


class AuditEvent(Base):
    """One line of the append-only audit trail. Rows are inserted, read, and deleted
    only by retention; nothing updates them."""

    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_centre_at", "centre_id", "at"),
        UniqueConstraint("record_id", name="uq_audit_events_record_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    action: Mapped[str] = mapped_column(String(32), index=True)
    """login_success, login_failure, login_locked, logout, view, snapshot, alarm_ack,
    admin_change, token_created, token_revoked."""
    user_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    username: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    centre_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    camera_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    protocol: Mapped[str | None] = mapped_column(String(16), nullable=True)
    """webrtc, mjpeg or snapshot, for viewing records."""
    source_addr: Mapped[str | None] = mapped_column(String(64), nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    duration_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)
    """A short human-readable note or JSON; never a secret."""
    record_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    """A random id given to the event when it was made: an event replayed from the local
    journal after a crash is inserted once, however often the replay runs."""


class SavedLayout(Base):
    """A user's video wall: how many tiles and which camera in each. One row per
    user and name; the dashboard keeps its wall under the name ``current``."""

    __tablename__ = "layouts"
    __table_args__ = (UniqueConstraint("user_id", "name", name="uq_layouts_user_id_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64), default="current")
    layout: Mapped[int] = mapped_column(Integer)
    """Tiles on the wall: 1, 4, 9 or 16."""
    tiles: Mapped[str] = mapped_column(Text)
    """A JSON list of ``layout`` entries, each a camera id or null (a free tile)."""
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class StoreState(Base):
    """One row (``id`` 1): which store this is and when a write last went through.

    ``store_id`` is random, written once when the store is first claimed and kept in
    marker files too (:mod:`vms.storage.identity`), so a store that vanished is noticed
    at the next start. ``heartbeat_at`` is rewritten by every health check, which is
    how the check proves that writes go through."""

    __tablename__ = "store_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    store_id: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class RecordingSegment(Base):
    """One closed segment file of a camera's recording: the index that playback, listing
    and retention read instead of walking directories. Written when the segment closes
    (or when start-up recovers one a crash left open); deleted with its file."""

    __tablename__ = "recording_segments"
    __table_args__ = (
        Index("ix_recording_segments_camera_start", "camera_id", "stream", "start_ms"),
        UniqueConstraint("path", name="uq_recording_segments_path"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    camera_id: Mapped[str] = mapped_column(String(64))
    stream: Mapped[str] = mapped_column(String(8))
    """``main`` or ``sub``."""
    path: Mapped[str] = mapped_column(String(512))
    """Relative to the recordings directory: ``<camera>/<date>/<time>.mp4``."""
    start_ms: Mapped[int] = mapped_column(BigInteger)
    """Wall clock of the first sample, milliseconds since the Unix epoch (UTC). Integers,
    not timestamps: listing a month of one camera reads 8,000 rows, and SQLite's
    timestamp parsing alone cost 50 ms of it."""
    end_ms: Mapped[int] = mapped_column(BigInteger, index=True)
    """End of the last sample, milliseconds since the Unix epoch."""
    bytes: Mapped[int] = mapped_column(BigInteger)
    codec: Mapped[str] = mapped_column(String(64))
    """RFC 6381 codec string of the video, for example ``avc1.64001f``."""
    audio: Mapped[str | None] = mapped_column(String(32), nullable=True)
    sha256: Mapped[str] = mapped_column(String(64))
    recovered: Mapped[bool] = mapped_column(Boolean, default=False)
    """Closed by start-up recovery after a crash, not by the recorder."""


class Export(Base):
    """One export: a recorded range of a camera copied into an MP4 file with a signed manifest.
    Made off the event loop; ``status`` goes ``pending``, ``running``, then ``ready`` or
    ``failed`` (with ``error``). Deleted, with its files, after the exports' retention."""

    __tablename__ = "exports"
    __table_args__ = (Index("ix_exports_centre_created", "centre_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    """Random: an id says nothing of how many exports other centres made."""
    camera_id: Mapped[str] = mapped_column(String(64))
    stream: Mapped[str] = mapped_column(String(8))
    centre_id: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_by: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(String(500), nullable=True)
    requested_start_ms: Mapped[int] = mapped_column(BigInteger)
    requested_end_ms: Mapped[int] = mapped_column(BigInteger)
    start_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    """Wall clock of the file's first frame, once made."""
    end_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    file_name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    """The MP4's name in the exports directory; the manifest is beside it."""
    bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)


class ReferencePicture(Base):
    """The view a camera should have, set by an operator from its live picture: the picture
    diagnosis tells a moved camera or changed scene against it."""

    __tablename__ = "reference_pictures"

    camera_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    jpeg: Mapped[bytes] = mapped_column(LargeBinary)
    set_by: Mapped[str] = mapped_column(String(64))
    set_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class CatalogSubscription(Base):
    """A superior platform's catalog subscription (a SIP dialog), kept so that it outlives a
    restart: the NOTIFYs owed to it go out in the same dialog (:mod:`vms.gb28181.subscriptions`)."""

    __tablename__ = "gb28181_subscriptions"

    platform: Mapped[str] = mapped_column(String(64), primary_key=True)
    call_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    local_tag: Mapped[str] = mapped_column(String(64))
    remote_tag: Mapped[str] = mapped_column(String(128))
    remote_uri: Mapped[str] = mapped_column(Text)
    """Where NOTIFYs go: the SUBSCRIBE's Contact."""
    route: Mapped[str] = mapped_column(Text)
    """The route set (the SUBSCRIBE's Record-Route values, in order), a JSON list."""
    sn: Mapped[int] = mapped_column(BigInteger)
    """The SN of the SUBSCRIBE's query, which every NOTIFY carries."""
    cseq: Mapped[int] = mapped_column(BigInteger)
    """The CSeq of our last NOTIFY in the dialog."""
    expires_ms: Mapped[int] = mapped_column(BigInteger)
    """When the subscription lapses, milliseconds since the Unix epoch."""


class AnnouncedChannel(Base):
    """One item of the catalog a superior platform was last told (the group, a hall or a
    camera), without its live status: what the next start compares the configuration with."""

    __tablename__ = "gb28181_catalog"

    platform: Mapped[str] = mapped_column(String(64), primary_key=True)
    channel_id: Mapped[str] = mapped_column(String(20), primary_key=True)
    kind: Mapped[str] = mapped_column(String(8))
    """``group``, ``hall`` or ``camera``."""
    name: Mapped[str] = mapped_column(Text)
    parent_id: Mapped[str] = mapped_column(String(20))
    attributes: Mapped[str] = mapped_column(Text)
    """The item's other fields as announced (a JSON object of tag to text)."""
    enabled: Mapped[bool] = mapped_column(Boolean)


class AlarmRow(Base):
    """One camera alarm shared by every instance on PostgreSQL (:mod:`vms.alarms_shared`).

    An alarm of a trouble (offline, stalled, a picture condition, a failed recording) stays
    open (``cleared_at`` null) until the event that resolves it, which names it in its own
    ``resolves``; at most one is open per camera and kind. Only the acknowledgement and
    ``cleared_at`` ever change, once each; ``picture`` is emptied when newer pictures need
    the space (:data:`vms.alarms.PICTURE_BUDGET`)."""

    __tablename__ = "alarms"
    __table_args__ = (Index("ix_alarms_camera_open", "camera_id", "kind", "cleared_at"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    camera_id: Mapped[str] = mapped_column(String(64))
    hall_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))
    raised_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    cleared_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    texts: Mapped[str] = mapped_column(Text)
    """The message by language, as JSON."""
    informational: Mapped[bool] = mapped_column(Boolean)
    resolves: Mapped[str] = mapped_column(Text, default="[]")
    """For an informational event: a JSON list of the alarm ids it resolves."""
    picture: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    acked_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    acked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class AlarmEventRow(Base):
    """One event of the shared alarms (a new alarm or an acknowledgement), numbered by the
    database in commit order: the SSE ``id`` every instance gives it. Only the newest are
    kept (:data:`vms.alarms_shared.KEEP_EVENTS`)."""

    __tablename__ = "alarm_events"

    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    type: Mapped[str] = mapped_column(String(8))
    """``alarm`` or ``ack``."""
    hall_id: Mapped[str] = mapped_column(String(64))
    data: Mapped[str] = mapped_column(Text)
    """The alarm as JSON, as it was at that moment."""
    origin: Mapped[str] = mapped_column(String(32))
    """The instance that wrote it (that instance alone posts it to webhooks)."""


class ClusterInstance(Base):
    """One instance of a cluster sharing this database (:mod:`vms.cluster`). Written by the
    instance at start and at every lease renewal; deleted when it stops cleanly, or by the
    others some time after its heartbeat stopped. Live while ``heartbeat_at`` is younger than
    the lease timeout, by the database's clock."""

    __tablename__ = "cluster_instances"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    http_url: Mapped[str] = mapped_column(String(512))
    """Base URL of the inter-instance path."""
    rtsp_url: Mapped[str | None] = mapped_column(String(512), nullable=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    config_hash: Mapped[str] = mapped_column(String(64))
    """SHA-256 of the configuration that must be equal on all instances."""
    config_sections: Mapped[str] = mapped_column(Text)
    """A JSON object: the hash of each shared section, to name the ones that differ."""
    ready: Mapped[bool] = mapped_column(Boolean, default=True)


class CameraLease(Base):
    """Which instance pulls a camera, until when. ``owner`` is None for a free camera; a lease
    whose ``expires_at`` has passed (database clock) is free too. ``epoch`` grows by one at every
    change of owner: the fencing token of the current holder."""

    __tablename__ = "camera_leases"

    camera_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str | None] = mapped_column(String(128), nullable=True, index=True)
    epoch: Mapped[int] = mapped_column(BigInteger, default=0)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    moving_to: Mapped[str | None] = mapped_column(String(128), nullable=True)
    """The instance the owner is handing the camera to, while it stops pulling it: counted
    as that instance's when the cameras are balanced, though not yet pulled by it."""


class ClusterSecret(Base):
    """One row (``id`` 1): the random secret of the instances sharing this database, written
    by the first instance of a cluster that starts and read by every other
    (:mod:`vms.cluster.peers`). An instance pulls a camera from its owner's RTSP re-serve
    under a reserved user whose Digest password it is."""

    __tablename__ = "cluster_secret"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    secret: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class LoginLimit(Base):
    """The recent failed logins of one key (``user:<name>`` or ``addr:<address>``) and its
    lockout, counted together by every instance on PostgreSQL (:mod:`vms.shared_limiter`).
    Times are the database's clock. A single instance on SQLite counts in memory and leaves
    this table empty."""

    __tablename__ = "login_limits"

    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    failures: Mapped[list[datetime]] = mapped_column(
        ARRAY(DateTime(timezone=True)).with_variant(JSON(), "sqlite")
    )
    """The failures within the window, oldest first: fewer than the limit."""
    locked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    """When the row stops mattering (its lockout ended and its failures left the window):
    rows past it are deleted in batches."""

"""Crash recovery: finishing the segments that a killed process or a power cut left open.

:func:`recover` runs at start-up, before the camera's recorder starts. Every
``.mp4.part`` file under a camera's recordings directory is cut back to its last
complete fragment (its top-level boxes are walked: ``ftyp``, ``moov``, the
metadata ``uuid`` box, then ``moof`` + ``mdat`` pairs; a trailing incomplete box,
or a ``moof`` without its whole ``mdat``, goes), hashed, given the end its last
video fragment says, and reported with ``recovered=True``. A ``.part`` with no
complete fragment, or that is not one of ours, is removed and logged.

The ``.part`` may still have a writer: in a cluster, an instance frozen while it
recorded wakes after another has taken its camera over. So the file is first
claimed (renamed ``.mp4.claimed``: its writer can no longer close it under the
segment's name), then what is kept is copied to a new ``.mp4``, and the claimed
file goes. Whatever the old writer still writes lands in a file nobody reads; the
recovered segment, its hash and its index row never change. A recovery cut short
starts again from the claimed file.

What survives a power cut is what reached the disk: the writer forces data out
at least every ``sync_interval`` (half a second by default).

A plain blocking function: call it from a thread (``asyncio.to_thread``) on a
running service.
"""

from __future__ import annotations

import hashlib
import logging
import os
from datetime import timedelta
from pathlib import Path
from typing import BinaryIO

from streams.formats.fmp4 import TRACK_ID
from streams.formats.fmp4_audio import AUDIO_TRACK_ID, FRAME_SAMPLES
from streams.packets import CLOCK_RATE
from streams.recording.boxes import fragment_timing, top_level_boxes
from streams.recording.events import SegmentInfo
from streams.recording.layout import PART_SUFFIX, SegmentMetadata, parse_metadata, to_millis
from streams.recording.writer import fsync_directory
from streams.specs import StreamName

__all__ = ["recover"]

log = logging.getLogger(__name__)

_CHUNK = 1024 * 1024
_CLAIMED_SUFFIX = ".claimed"
"""A ``.part`` is renamed to this before it is recovered: its writer, if it still runs (a
frozen instance woken after another took its camera over), can no longer close it."""
_COPY_SUFFIX = ".copying"
"""The recovered copy, until it is complete and takes the segment's name."""


def recover(directory: Path, camera_id: str, stream: StreamName) -> list[SegmentInfo]:
    """Finish every ``.part`` segment under ``directory``; the segments kept, oldest first."""
    found: list[SegmentInfo] = []
    if not directory.is_dir():
        return found
    for stale in directory.rglob(f"*.mp4{_COPY_SUFFIX}"):  # an earlier recovery's unfinished copy
        stale.unlink(missing_ok=True)
    unfinished = [*directory.rglob(f"*.mp4{PART_SUFFIX}"), *directory.rglob(f"*.mp4{_CLAIMED_SUFFIX}")]
    for path in sorted(unfinished):
        try:
            info = _recover_one(path, camera_id, stream)
        except OSError as err:
            log.error("%s: cannot recover %s: %s", camera_id, path, err)
            continue
        if info is not None:
            found.append(info)
    return found


def _recover_one(path: Path, camera_id: str, stream: StreamName) -> SegmentInfo | None:
    final = path.with_name(path.name.removesuffix(path.suffix))
    claimed = final.with_name(final.name + _CLAIMED_SUFFIX)
    if path != claimed:
        try:
            path.rename(claimed)
        except FileNotFoundError:  # its writer closed it meanwhile: not left open after all
            return None
    with claimed.open("rb") as file:
        length = os.fstat(file.fileno()).st_size
        meta, keep, end = _scan(file, length)
        if meta is None or end is None:
            file.close()
            claimed.unlink()
            log.warning("%s: removed %s: no complete fragment (%d bytes)", camera_id, path, length)
            return None
        if keep < length:
            log.info("%s: %s cut back from %d to %d bytes", camera_id, final.name, length, keep)
        copy = final.with_name(final.name + _COPY_SUFFIX)
        digest = _copy(file, keep, copy)
    copy.rename(final)
    fsync_directory(final.parent)
    claimed.unlink()
    fsync_directory(final.parent)
    stop = to_millis(meta.start + timedelta(seconds=(end - meta.media_start) / CLOCK_RATE))
    return SegmentInfo(
        camera_id, stream, final, meta.start, stop, keep, meta.codec, meta.audio, digest, recovered=True
    )


def _scan(file: BinaryIO, length: int) -> tuple[SegmentMetadata | None, int, int | None]:
    """(metadata, bytes to keep, end of the video track) of a segment file: what is kept ends
    with the last ``mdat`` that follows its ``moof``."""
    meta: SegmentMetadata | None = None
    keep = 0
    end: int | None = None
    moof: bytes | None = None
    for box in top_level_boxes(file, length):
        if box.kind in (b"ftyp", b"moov"):
            keep = box.end
        elif box.kind == b"uuid" and meta is None:
            file.seek(box.offset + box.header)
            meta = parse_metadata(file.read(box.size - box.header))
            keep = box.end
        elif box.kind == b"moof":
            file.seek(box.offset)
            moof = file.read(box.size)
        elif box.kind == b"mdat" and moof is not None:
            for run in fragment_timing(moof, {AUDIO_TRACK_ID: FRAME_SAMPLES}):
                if run.track_id == TRACK_ID:
                    end = run.end if end is None else max(end, run.end)
            moof = None
            keep = box.end
        else:
            break  # not a box of ours at this place: keep nothing from here on
    return meta, keep, end


def _copy(file: BinaryIO, length: int, to: Path) -> str:
    """Copy the first ``length`` bytes of ``file`` to a new file ``to``, synced; their sha256."""
    digest = hashlib.sha256()
    file.seek(0)
    remaining = length
    with to.open("wb") as out:
        while remaining > 0:
            chunk = file.read(min(_CHUNK, remaining))
            if not chunk:
                raise OSError(f"{to.name}: the file being recovered shrank while it was copied")
            digest.update(chunk)
            out.write(chunk)
            remaining -= len(chunk)
        out.flush()
        os.fsync(out.fileno())
    return digest.hexdigest()

"""Checks behind the configuration models: source URLs and cross-references.

:mod:`vms.config` calls these from its validators. Each problem is a
``PydanticCustomError`` (for one value) or an :class:`Inconsistency` (for a
reference between items), and its message says what is wrong and how to fix it,
without ever repeating a URL or a secret. Pure functions; any thread.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import SplitResult, urlsplit

from pydantic_core import PydanticCustomError

import streams

if TYPE_CHECKING:
    from vms.config import Config

SOURCE_SCHEMES = ("rtsp", "rtsps", "whep", "wheps", "file", "demo")
WHEP_SCHEMES = ("whep", "wheps")
_WHEP_EXAMPLE = "wheps://county.example:8443/api/v1/cameras/lobby/whep"


@dataclass(frozen=True, slots=True)
class Inconsistency:
    """One cross-reference problem, located at the item that has to change."""

    loc: tuple[str | int, ...]
    message: str
    related: tuple[str | int, ...] | None = None
    """Where the other half of the conflict is (the first of two duplicates), if anywhere."""


def invalid(kind: str, message: str) -> PydanticCustomError:
    """A validation error whose message is ``message`` verbatim (no template fields)."""
    return PydanticCustomError(kind, "{message}", {"message": message})


_CREDENTIALS_FIX = "credentials: {username: ..., password: ...} under this camera"
_TOKEN_FIX = "token: ... (the upstream's API token) under this camera"


def split_url(url: str, kind: str) -> tuple[SplitResult, int | None]:
    """The URL's parts and port; a ``PydanticCustomError`` of ``kind`` if it has spaces or cannot be
    parsed. Never echoes the URL."""
    if any(ch.isspace() for ch in url):
        raise invalid(kind, "the URL contains spaces; percent-encode a space inside it as %20")
    try:
        parts = urlsplit(url)
        return parts, parts.port
    except ValueError:
        # The reason is not quoted: it can contain a password mistaken for a port.
        raise invalid(
            kind,
            "the URL cannot be parsed: the port must be a number from 1 to 65535 and an IPv6 host "
            "goes in [brackets]",
        ) from None


def check_source_url(url: str) -> None:
    """Raise a ``PydanticCustomError`` naming what is wrong with a source URL. Never echoes the URL."""
    parts, port = split_url(url, "source_url")
    scheme = parts.scheme.lower()
    if not scheme:
        raise invalid(
            "source_url",
            "the URL has no scheme; write rtsp://host/path, rtsps://host/path, file:///absolute/path "
            "or demo://name",
        )
    if scheme in ("http", "https") and parts.path.rstrip("/").endswith("/whep"):
        whep = "wheps" if scheme == "https" else "whep"
        raise invalid(
            "source_url",
            f"a camera URL names its protocol: for a WHEP endpoint write {whep}://host:port/path "
            f"instead of {scheme}:// (wheps for HTTPS, whep for plain HTTP), "
            f"e.g. {_WHEP_EXAMPLE}",
        )
    if scheme not in SOURCE_SCHEMES:
        raise invalid(
            "source_url",
            f"unsupported URL scheme '{parts.scheme}'; use rtsp://, rtsps://, whep://, wheps://, file:/// "
            "or demo://",
        )
    fix = _TOKEN_FIX if scheme in WHEP_SCHEMES else _CREDENTIALS_FIX
    if parts.password is not None:
        raise invalid(
            "url_credentials",
            f"the URL contains a password; remove 'user:password@' from the url and write {fix}",
        )
    if parts.username is not None:
        raise invalid(
            "url_credentials", f"the URL contains a user name; remove 'user@' from the url and write {fix}"
        )
    if scheme in ("rtsp", "rtsps"):
        _check_rtsp(parts, port)
    elif scheme in WHEP_SCHEMES:
        _check_whep(parts, port)
    elif scheme == "file":
        _check_file(parts)
    else:
        _check_demo(url)


def _check_rtsp(parts: SplitResult, port: int | None) -> None:
    if not parts.hostname:
        example = f"{parts.scheme.lower()}://192.168.1.64:554/stream1"
        raise invalid("source_url", f"the {parts.scheme.lower()} URL has no host; write it like {example}")
    if port == 0:
        raise invalid("source_url", "port 0 is not a camera port; use the camera's port (554 if unsure)")


def _check_whep(parts: SplitResult, port: int | None) -> None:
    if not parts.hostname:
        raise invalid(
            "source_url", f"the {parts.scheme.lower()} URL has no host; write it like {_WHEP_EXAMPLE}"
        )
    if port == 0:
        raise invalid("source_url", "port 0 is not a WHEP server's port; use the port of its HTTP(S) service")


def _check_demo(url: str) -> None:
    try:
        streams.check_source_url(url)
    except ValueError as err:
        raise invalid("source_url", f"{err}; for example demo://lobby?size=640x360&fps=25&gop=50") from None


def _check_file(parts: SplitResult) -> None:
    if parts.netloc not in ("", "localhost"):
        raise invalid(
            "source_url",
            f"'{parts.netloc}' was read as a host name; a file URL takes an absolute path after "
            "three slashes, e.g. file:///srv/video/lobby.mp4",
        )
    if not parts.path.startswith("/") or parts.path == "/":
        raise invalid(
            "source_url", "the file URL needs an absolute path to a video, e.g. file:///srv/video/lobby.mp4"
        )


def inconsistencies(config: Config) -> list[Inconsistency]:
    """Every cross-reference problem in ``config``: duplicate ids, unknown halls, ingest overrides,
    a cluster without the RTSP re-serve."""
    problems = reference_problems(
        [hall.id for hall in config.halls],
        [(camera.id, camera.hall) for camera in config.cameras],
        [(centre.id, centre.halls) for centre in config.centres],
    )
    for index, camera in enumerate(config.cameras):
        if camera.ingest is not None:
            merged = config.ingest.model_dump() | camera.ingest.model_dump(exclude_none=True)
            problem = ingest_order_problem(merged, " once this camera's overrides apply")
            if problem:
                problems.append(Inconsistency(("cameras", index, "ingest"), problem))
    if config.cluster is not None and not config.rtsp_server.enabled:
        problems.append(
            Inconsistency(
                ("cluster",),
                "an instance of a cluster serves the cameras it owns to the other instances over its "
                "RTSP re-serve: enable it with rtsp_server: {enabled: true} (and set cluster.rtsp_url "
                "to the address the other instances reach it at)",
            )
        )
    return problems


def reference_problems(
    hall_ids: Sequence[object],
    cameras: Sequence[tuple[object, object]],
    centres: Sequence[tuple[object, object]],
) -> list[Inconsistency]:
    """Duplicate ids and references to unknown halls.

    Takes ids and references by position (hall ids; camera id and hall; centre id and
    halls) so that it also works on data that is not yet valid: anything that is not a
    string there is skipped, since validation reports it already.
    """
    problems: list[Inconsistency] = []
    problems += _duplicates("halls", "hall", hall_ids)
    problems += _duplicates("centres", "centre", [centre_id for centre_id, _ in centres])
    problems += _duplicates("cameras", "camera", [camera_id for camera_id, _ in cameras])
    known = list(dict.fromkeys(hall_id for hall_id in hall_ids if isinstance(hall_id, str)))
    for index, (_, hall_id) in enumerate(cameras):
        if isinstance(hall_id, str) and hall_id not in known:
            problems.append(Inconsistency(("cameras", index, "hall"), _unknown_hall(hall_id, known)))
    for index, (_, selection) in enumerate(centres):
        if isinstance(selection, list):
            problems += _centre_hall_problems(index, selection, known)
    return problems


def ingest_order_problem(values: dict[str, Any], when: str = "") -> str | None:
    """What is out of order among ingest timings, or None."""
    if values["offline_after"] < values["stall_timeout"]:
        return (
            f"offline_after ({values['offline_after']:g}) is shorter than stall_timeout "
            f"({values['stall_timeout']:g}){when}; a camera stalls before it goes offline, "
            f"so make offline_after at least stall_timeout"
        )
    if values["backoff_max"] < values["backoff_initial"]:
        return (
            f"backoff_max ({values['backoff_max']:g}) is shorter than backoff_initial "
            f"({values['backoff_initial']:g}){when}; make backoff_max at least backoff_initial"
        )
    return None


def loc_text(loc: Sequence[str | int]) -> str:
    """``('cameras', 2, 'hall')`` as ``cameras[2].hall``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def _duplicates(section: str, noun: str, ids: Sequence[object]) -> list[Inconsistency]:
    first: dict[str, int] = {}
    problems: list[Inconsistency] = []
    for index, item_id in enumerate(ids):
        if not isinstance(item_id, str):
            continue
        if item_id not in first:
            first[item_id] = index
            continue
        problems.append(
            Inconsistency(
                (section, index, "id"),
                f"duplicate {noun} id {item_id!r}, already used by {section}[{first[item_id]}]; "
                f"ids must be unique, so rename or remove one of them",
                (section, first[item_id]),
            )
        )
    return problems


def _centre_hall_problems(
    index: int, selection: Sequence[object], hall_ids: list[str]
) -> list[Inconsistency]:
    problems: list[Inconsistency] = []
    seen: dict[str, int] = {}
    for position, hall_id in enumerate(selection):
        if not isinstance(hall_id, str):
            continue
        loc = ("centres", index, "halls", position)
        if hall_id not in hall_ids:
            problems.append(Inconsistency(loc, _unknown_hall(hall_id, hall_ids)))
        elif hall_id in seen:
            related = ("centres", index, "halls", seen[hall_id])
            message = f"hall {hall_id!r} is listed twice, also as {loc_text(related)}; remove one"
            problems.append(Inconsistency(loc, message, related))
        seen.setdefault(hall_id, position)
    return problems


def _unknown_hall(hall_id: str, hall_ids: list[str]) -> str:
    if not hall_ids:
        return f"unknown hall {hall_id!r}; no halls are defined, add it under halls:"
    close = difflib.get_close_matches(hall_id, hall_ids, n=1)
    guess = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown hall {hall_id!r}; {guess}use one of: {', '.join(hall_ids)} (or add it under halls:)"

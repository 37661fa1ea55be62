"""What a camera stream feeds besides its viewer sessions, and how such outputs are added.

A :class:`StreamOutput` consumes one pulled stream (its video hub, and its audio
hub if the camera relays sound): the frame source that decodes pictures for
everyone who needs pixels, the picture output (snapshots and MJPEG), the H.264 and
Opus transcoders, the recorder. Each camera stream of the
:class:`~streams.manager.StreamManager` holds a list of them, built from
:data:`OUTPUTS`, and starts, stops and reports them all alike. A new kind of
output registers a factory here and is added to every stream it applies to; the
manager is not edited for it.

An output registered as ``owner_only`` (the picture analysis, the recorder) does its
work once for the whole deployment: it runs only on the instance that owns the
camera, where the camera is pulled from its own source, and the manager starts and
stops it as the camera is repointed (:mod:`streams.upstream`). The others run
wherever the camera's stream is, and mostly wait for a consumer.

Viewer sessions (WebRTC, MSE) are not stream outputs: they come and go per
viewer and are owned by their protocol's output, shared by all cameras.

Event loop only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar

from streams.hub import Hub

if TYPE_CHECKING:
    from streams.specs import CameraSpec, RelaySettings, StreamName

__all__ = [
    "OUTPUTS",
    "OutputFactory",
    "OutputRegistry",
    "Statistic",
    "StreamContext",
    "StreamOutput",
    "output_of",
]

Statistic = int | float | bool | str | None


class StreamOutput(Protocol):
    """One consumer of a camera stream; see the module docstring."""

    @property
    def name(self) -> str:
        """The stream's name and the output's kind, for logs (``tax-1/h264``)."""
        ...

    async def start(self) -> None:
        """Begin work that does not wait for a viewer (a recorder); on-demand outputs
        (pictures, transcoders) start with their first consumer and do nothing here."""
        ...

    async def stop(self) -> None:
        """Stop and free everything; idempotent."""
        ...

    def statistics(self) -> dict[str, Statistic]:
        """Counters and state for metrics and the API, keyed by short snake_case names."""
        ...


@dataclass(frozen=True, slots=True)
class StreamContext:
    """What an output factory may build on: one stream of one camera."""

    name: str
    """The stream's name: the camera id, with ``/sub`` for a sub-stream."""
    stream: StreamName
    hub: Hub
    audio_hub: Hub | None
    spec: CameraSpec
    settings: RelaySettings
    emit: Callable[[object], None] = lambda event: None
    """Tells the manager's output listeners (:meth:`~streams.manager.StreamManager.add_output_listener`)
    of an event of this output, such as a recorded segment closed; on the event loop."""
    holds: Callable[[], bool] = lambda: True
    """Whether this instance may still write what it records of the camera now (in a
    cluster: it holds the camera's lease); see :attr:`streams.manager.StreamManager.holds`."""
    outputs: Mapping[str, StreamOutput] = dataclasses.field(default_factory=dict)
    """The outputs of this stream built before this one, by kind: an output that builds
    on another (pictures on the stream's frame source) finds it here."""


OutputFactory = Callable[[StreamContext], StreamOutput | None]
"""Builds an output for a stream, or ``None`` when it does not apply to that stream."""

T = TypeVar("T")


class OutputRegistry:
    """Named output factories, applied in the order they were registered."""

    def __init__(self) -> None:
        self._factories: dict[str, OutputFactory] = {}
        self._owner_only: set[str] = set()

    def register(self, kind: str, *, owner_only: bool = False) -> Callable[[OutputFactory], OutputFactory]:
        """Decorator: add ``factory`` under ``kind`` (a kind is registered once). ``owner_only``:
        the output runs only while this instance owns the camera (see the module docstring)."""

        def add(factory: OutputFactory) -> OutputFactory:
            if kind in self._factories:
                raise ValueError(f"an output of kind {kind!r} is registered already")
            self._factories[kind] = factory
            if owner_only:
                self._owner_only.add(kind)
            return factory

        return add

    def owner_only(self, kind: str) -> bool:
        """Whether outputs of ``kind`` run only on the camera's owner."""
        return kind in self._owner_only

    def copy(self) -> OutputRegistry:
        """A registry with the same factories, to which more may be added."""
        other = OutputRegistry()
        other._factories = dict(self._factories)
        other._owner_only = set(self._owner_only)
        return other

    def __iter__(self) -> Iterator[str]:
        return iter(self._factories)

    def build(self, context: StreamContext) -> dict[str, StreamOutput]:
        """Every registered output that applies to ``context``'s stream, by kind."""
        built: dict[str, StreamOutput] = {}
        context = dataclasses.replace(context, outputs=built)
        for kind, factory in self._factories.items():
            output = factory(context)
            if output is not None:
                built[kind] = output
        return built


OUTPUTS = OutputRegistry()
"""The outputs every camera stream gets; modules defining outputs register here."""


def output_of(outputs: Mapping[str, StreamOutput], kind: str, cls: type[T]) -> T | None:
    """The output of ``kind`` if the stream has one, checked to be a ``cls``."""
    output = outputs.get(kind)
    if output is None:
        return None
    if not isinstance(output, cls):  # a registration mistake, not a runtime condition
        raise TypeError(f"the {kind!r} output is a {type(output).__name__}, not a {cls.__name__}")
    return output

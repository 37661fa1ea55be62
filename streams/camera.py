"""One camera of the :class:`~streams.manager.StreamManager`: its streams and where they are pulled from.

A :class:`Camera` has a main stream and, if it has one, a smaller sub-stream; each
:class:`CameraStream` is a hub fed by its own ingest, with the outputs registered
in :data:`~streams.outputs.base.OUTPUTS` (pictures, transcoders, and the owner-only
analysis and recorder). The camera's :class:`~streams.upstream.CameraPull` says
where both streams are pulled from and switches them.

Event loop only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from streams.hub import Hub
from streams.ingest import Ingest, StateListener
from streams.outputs.base import OutputRegistry, StreamContext, StreamOutput, output_of
from streams.outputs.pictures import PictureOutput
from streams.sources import SourceOptions, open_source
from streams.specs import CameraSpec, RelaySettings, StreamName
from streams.transcoding.audio_transcoder import AudioTranscoder
from streams.transcoding.transcoder import Transcoder
from streams.upstream import CameraPull

__all__ = ["Camera", "CameraStream"]

T = TypeVar("T")


class CameraStream:
    """One pulled source of a camera: hub, ingest, and the outputs registered in
    :data:`~streams.outputs.base.OUTPUTS` (pictures and transcoders used on demand)."""

    def __init__(
        self,
        name: str,
        kind: StreamName,
        options: SourceOptions,
        spec: CameraSpec,
        settings: RelaySettings,
        listener: StateListener | None,
        outputs: OutputRegistry,
        emit: Callable[[object], None],
        holds: Callable[[], bool],
    ) -> None:
        self.kind = kind
        self.hub = Hub(name)
        self.audio_hub = Hub(f"{name}/audio", timeline_of=self.hub) if options.audio else None
        secrets = [options.password] if options.password else []
        self.ingest = Ingest(
            name,
            open_source(options),
            self.hub,
            spec.policy,
            enabled=spec.enabled,
            listener=listener,
            secrets=secrets,
            audio_hub=self.audio_hub,
        )
        context = StreamContext(
            name=name,
            stream=kind,
            hub=self.hub,
            audio_hub=self.audio_hub,
            spec=spec,
            settings=settings,
            emit=emit,
            holds=holds,
        )
        self.outputs = outputs.build(context)
        """Every output of this stream by kind, in the order they were registered."""
        self.owner_outputs = [output for kind, output in self.outputs.items() if outputs.owner_only(kind)]
        """Those that run only while this instance owns the camera (started by its :class:`CameraPull`)."""
        self.pictures = _required(self.outputs, "pictures", PictureOutput)
        self.transcoder = _required(self.outputs, "h264", Transcoder)
        self.audio_transcoder = output_of(self.outputs, "opus", AudioTranscoder)

    @property
    def transcoders(self) -> list[Transcoder | AudioTranscoder]:
        return (
            [self.transcoder] if self.audio_transcoder is None else [self.transcoder, self.audio_transcoder]
        )

    def webrtc_audio(self) -> Hub | None:
        """The audio a WebRTC viewer gets: Opus or G.711 as it is, AAC transcoded to Opus."""
        if self.audio_hub is None or self.audio_hub.audio is None:
            return None
        if self.audio_hub.audio.codec == "aac" and self.audio_transcoder is not None:
            return self.audio_transcoder.output
        return self.audio_hub

    async def start(self) -> None:
        for output in self.outputs.values():
            if output not in self.owner_outputs:
                await output.start()
        self.ingest.start()

    async def stop(self) -> None:
        for output in reversed(self.outputs.values()):
            await output.stop()
        await self.ingest.stop()
        self.hub.close()
        if self.audio_hub is not None:
            self.audio_hub.close()


class Camera:
    def __init__(
        self,
        spec: CameraSpec,
        settings: RelaySettings,
        listener: StateListener,
        outputs: OutputRegistry,
        emit: Callable[[str, object], None],
        holds: Callable[[str], bool],
    ) -> None:
        self.spec = spec

        def emitter(event: object) -> None:
            emit(spec.id, event)

        def held() -> bool:
            return holds(spec.id)

        self.main = CameraStream(
            spec.id, "main", spec.source, spec, settings, listener, outputs, emitter, held
        )
        self.sub = (
            CameraStream(
                f"{spec.id}/sub", "sub", spec.sub_source, spec, settings, None, outputs, emitter, held
            )
            if spec.sub_source is not None
            else None
        )
        self.pull = CameraPull(spec, self.streams, answer_within=settings.info_timeout)

    @property
    def streams(self) -> list[CameraStream]:
        return [self.main] if self.sub is None else [self.main, self.sub]

    def stream(self, name: StreamName) -> CameraStream:
        """The named stream; a camera without a sub-stream serves its main stream for both."""
        return self.sub if name == "sub" and self.sub is not None else self.main


def _required(outputs: dict[str, StreamOutput], kind: str, cls: type[T]) -> T:
    output = output_of(outputs, kind, cls)
    if output is None:
        raise LookupError(f"no {kind!r} output registered")  # its module was not imported
    return output

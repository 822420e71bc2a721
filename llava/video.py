"""Video decoding for LLaVA-OneVision: uniform frame sampling with decord first and PyAV as the fallback.

The sampling rule is the one behind every published OneVision number (LLaVA-NeXT's video demo, lmms-eval's
`Llava_OneVision.load_video`): ``np.linspace(0, total - 1, num_frames, dtype=int)`` over the decodable frames,
returned as RGB uint8 ``(F, H, W, 3)``. Videos shorter than ``num_frames`` repeat indices, as decord's
``get_batch`` does in those pipelines, and the result says so.

decord is what the ecosystem uses, but it is unmaintained and has known failure modes, guarded here:

* Over-reported frame counts (dmlc/decord#373): asking ``get_batch`` for an index past the last decodable
  frame can hang forever in native code while holding the GIL, so no Python-side timeout can stop it. Before
  calling ``get_batch`` we cross-check ``len(vr)`` against a PyAV demux pass (packets are counted, not decoded:
  cheap) and sample within the smaller count, so no index past the demuxed packets is ever requested.
  Residual risk, not guarded: packets that demux but that the decoder drops without an error. Callers who
  cannot afford a hang at all should pass backend="pyav" (pure sequential decoding, no seeking).
* Decoder errors (corrupt packets, truncated files) surface as ``DECORDError`` / ``RuntimeError``; with
  ``backend="auto"`` we fall back to PyAV, which skips undecodable packets and counts frames by decoding.
* Memory growth over many videos (dmlc/decord#208): ``num_threads=1``, ``vr.seek(0)`` after ``get_batch`` and
  the reader is deleted before returning.

The container's own frame count (``nb_frames``) is recorded as ``reported_frames`` but never trusted for
sampling: it lies for edit-listed mp4s and is 0 for mkv/webm.
"""
from __future__ import annotations

import logging
import re
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import av
import numpy as np

logger = logging.getLogger(__name__)

Backend = Literal["auto", "decord", "pyav"]
BACKENDS: tuple[str, ...] = typing.get_args(Backend)
_NATIVE_PREFIX = re.compile(r"^(\[[0-9:]+\] \S+:\d+: )+")


class VideoDecodeError(ValueError):
    """A video cannot be decoded; the message names the file and the reason."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


@dataclass
class VideoFrames:
    """Sampled frames plus what a caller needs to know about how they were obtained.

    `total_frames` is the decodable count the indices were sampled from; `reported_frames` is the container's
    metadata count (0 when the container has none), kept so a disagreement is visible rather than silent.
    """

    frames: np.ndarray  # (F, H, W, 3) uint8 RGB
    indices: np.ndarray  # (F,) int64, sampled frame indices into the decodable frames
    total_frames: int
    reported_frames: int
    backend: Literal["decord", "pyav"]
    fps: float
    duration_s: float
    repeated_frames: bool
    notes: list[str] = field(default_factory=list)

    @property
    def note(self) -> str:
        """All notes as one line ('' when decoding was uneventful)."""
        return "; ".join(self.notes)


@dataclass
class _Probe:
    """What a PyAV demux pass (no decoding) learns about the first video stream."""

    packet_count: int  # non-empty, non-discarded video packets that could be read
    reported_frames: int  # container metadata (stream nb_frames); 0 when absent
    fps: float
    demux_error: str | None  # set when demuxing stopped on an error before EOF


def sample_indices(total: int, num_frames: int) -> np.ndarray:
    """Uniform indices ``linspace(0, total - 1, num_frames)`` as int64; repeats indices when total < num_frames."""
    if total < 1 or num_frames < 1:
        raise ValueError(f"need total >= 1 and num_frames >= 1, got total={total}, num_frames={num_frames}")
    return np.linspace(0, total - 1, num_frames, dtype=int).astype(np.int64)


def _check_file(path: Path, num_frames: int) -> None:
    """Reject inputs with a clear reason before any decoder sees them (decoders give opaque messages)."""
    if isinstance(num_frames, bool) or not isinstance(num_frames, int | np.integer) or num_frames < 1:
        raise VideoDecodeError(path, f"num_frames must be an integer >= 1, got {num_frames!r}")
    if not path.exists():
        raise VideoDecodeError(path, "file not found")
    if not path.is_file():
        raise VideoDecodeError(path, "not a regular file")
    if path.stat().st_size == 0:
        raise VideoDecodeError(path, "file is empty (0 bytes)")


def _open_container(path: Path) -> av.container.InputContainer:
    try:
        return av.open(str(path), mode="r")
    except av.FFmpegError as exc:
        raise VideoDecodeError(path, f"not a readable video container (truncated or not a video?): {exc}") from exc


def _video_stream(path: Path, container: av.container.InputContainer) -> av.VideoStream:
    if not container.streams.video:
        raise VideoDecodeError(path, "container has no video stream")
    return container.streams.video[0]


def _stream_fps(stream: av.VideoStream) -> float:
    rate = stream.average_rate or stream.guessed_rate
    return float(rate) if rate else 0.0


def _probe_pyav(path: Path) -> _Probe:
    """Count readable video packets without decoding: the bound that keeps decord's get_batch away from EOF."""
    with _open_container(path) as container:
        stream = _video_stream(path, container)
        count, error = 0, None
        try:
            for packet in container.demux(stream):
                count += packet.size > 0 and not packet.is_discard  # the demuxer's flush packets are empty
        except av.FFmpegError as exc:
            error = str(exc)
        return _Probe(count, int(stream.frames or 0), _stream_fps(stream), error)


@dataclass
class _DecodeStats:
    decoded: int = 0  # frames the decoder produced so far (= index of the next frame)
    skipped: int = 0  # packets the decoder rejected


def _demux_tolerant(container: av.container.InputContainer, stream: av.VideoStream) -> Iterator[av.Packet | None]:
    """Yield the stream's packets, then None to flush the decoder, also when demuxing stops on an error."""
    try:
        for packet in container.demux(stream):
            if packet.size > 0:
                yield packet
    except av.FFmpegError as exc:
        logger.warning("demuxing stopped early: %s", exc)
    yield None


def _decoded_frames(container: av.container.InputContainer, stats: _DecodeStats) -> Iterator[av.VideoFrame]:
    """Frames in presentation order; packets the decoder rejects are skipped and counted, not fatal."""
    stream = container.streams.video[0]
    for packet in _demux_tolerant(container, stream):
        try:
            frames = stream.codec_context.decode(packet)
        except av.EOFError:
            return
        except av.FFmpegError:
            stats.skipped += 1
            continue
        for frame in frames:
            yield frame
            stats.decoded += 1


def _decode_pyav_at(path: Path, wanted: set[int]) -> tuple[dict[int, np.ndarray], _DecodeStats]:
    """Decode sequentially, converting only the wanted frame indices to RGB (never all frames in memory).

    Stops after the largest wanted index; with nothing wanted, decodes to the end (counting frames).
    """
    kept: dict[int, np.ndarray] = {}
    stats = _DecodeStats()
    last = max(wanted) if wanted else None
    with _open_container(path) as container:
        _video_stream(path, container)
        for frame in _decoded_frames(container, stats):
            if stats.decoded in wanted:
                kept[stats.decoded] = frame.to_ndarray(format="rgb24")  # (H, W, 3)
            if stats.decoded == last:
                stats.decoded += 1  # the generator is abandoned before it counts this frame
                break
    return kept, stats


def _load_pyav(path: Path, num_frames: int, probe: _Probe) -> VideoFrames:
    """Sample from the demuxed packet count; if the sampled tail does not decode, resample from a decoded count."""
    notes: list[str] = []
    total = probe.packet_count
    if total > 0:
        indices = sample_indices(total, num_frames)
        kept, stats = _decode_pyav_at(path, set(indices.tolist()))
        if stats.decoded > int(indices[-1]):
            return _pyav_result(kept, indices, total, probe, stats, notes)
    _, stats = _decode_pyav_at(path, set())  # count decodable frames
    if stats.decoded == 0:
        raise VideoDecodeError(path, "zero decodable video frames")
    notes.append(f"{total} video packets but {stats.decoded} frames decode; sampled from {stats.decoded}")
    total = stats.decoded
    indices = sample_indices(total, num_frames)
    kept, stats = _decode_pyav_at(path, set(indices.tolist()))
    return _pyav_result(kept, indices, total, probe, stats, notes)


def _pyav_result(kept: dict[int, np.ndarray], indices: np.ndarray, total: int, probe: _Probe, stats: _DecodeStats,
                 notes: list[str]) -> VideoFrames:
    if stats.skipped:
        notes.append(f"decoder rejected {stats.skipped} packet(s); they were skipped")
    frames = np.stack([kept[i] for i in indices.tolist()])  # (F, H, W, 3)
    return _result(frames, indices, total, probe, "pyav", probe.fps, notes)


def _import_decord():
    """decord is optional (no wheels off x86_64 Linux, and its native library is heavy): import on first use."""
    try:
        import decord
    except (ImportError, OSError):  # not installed, or its native library fails to load
        return None
    return decord


def _load_decord(path: Path, num_frames: int, probe: _Probe, decord) -> VideoFrames:
    """Decode with decord, sampling only within indices that PyAV could demux (the hang guard, see module doc)."""
    notes: list[str] = []
    vr = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    try:
        total = min(len(vr), probe.packet_count)
        if total != len(vr):
            notes.append(f"decord reports {len(vr)} frames but only {probe.packet_count} packets demux; clamped")
        if total < 1:
            raise VideoDecodeError(path, "zero decodable video frames")
        indices = sample_indices(total, num_frames)
        frames = vr.get_batch(indices.tolist()).asnumpy()  # (F, H, W, 3)
        vr.seek(0)  # releases decoder buffers (dmlc/decord#208)
        fps = float(vr.get_avg_fps())
    finally:
        del vr
    return _result(frames, indices, total, probe, "decord", fps, notes)


def _result(frames: np.ndarray, indices: np.ndarray, total: int, probe: _Probe, backend: Literal["decord", "pyav"],
            fps: float, notes: list[str]) -> VideoFrames:
    repeated = total < len(indices)
    if repeated:
        notes.append(f"video has {total} frames, fewer than the {len(indices)} requested; indices repeat")
    if probe.reported_frames and probe.reported_frames != total:
        notes.append(f"container metadata says {probe.reported_frames} frames, {total} are decodable")
    if probe.demux_error:
        notes.append(f"demuxing stopped early: {probe.demux_error}")
    return VideoFrames(
        frames=np.ascontiguousarray(frames, dtype=np.uint8),
        indices=indices,
        total_frames=int(total),
        reported_frames=probe.reported_frames,
        backend=backend,
        fps=fps,
        duration_s=total / fps if fps > 0 else 0.0,
        repeated_frames=repeated,
        notes=notes,
    )


def load_video(path: str | Path, num_frames: int, backend: Backend = "auto") -> VideoFrames:
    """Sample `num_frames` frames uniformly (the OneVision convention) as RGB uint8 ``(F, H, W, 3)``.

    backend="auto" uses decord when importable (the ecosystem's reader, for parity with published numbers) and
    falls back to PyAV when decord is missing or fails on this file; "decord" / "pyav" force one reader.
    Raises VideoDecodeError (a ValueError) naming the file for missing, empty, truncated, non-video or
    undecodable files and for num_frames < 1.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown video backend {backend!r}; valid: {', '.join(BACKENDS)}")
    path = Path(path)
    _check_file(path, num_frames)
    num_frames = int(num_frames)
    probe = _probe_pyav(path)
    if probe.demux_error:
        logger.warning("%s: demuxing stopped early (%s); using the %d packets read", path, probe.demux_error,
                       probe.packet_count)
    if backend == "pyav":
        return _load_pyav(path, num_frames, probe)
    decord = _import_decord()
    if decord is None:
        if backend == "decord":
            raise ImportError("backend='decord' requested but decord cannot be imported; use backend='pyav'")
        return _load_pyav(path, num_frames, probe)
    try:
        return _load_decord(path, num_frames, probe, decord)
    except (decord.DECORDError, RuntimeError, AssertionError, IndexError) as exc:
        # decord raises DECORDError for decoder failures, RuntimeError when it cannot open the file and
        # AssertionError / IndexError for counts it cannot use.
        if backend == "decord":
            raise VideoDecodeError(path, f"decord failed: {_first_line(exc)}") from exc
        logger.warning("%s: decord failed (%s); falling back to PyAV", path, _first_line(exc))
        result = _load_pyav(path, num_frames, probe)
        result.notes.insert(0, f"decord failed ({_first_line(exc)}); decoded with PyAV")
        return result


def _first_line(exc: BaseException) -> str:
    """decord's messages carry a native stack trace and '[time] file.cc:line:' prefixes; keep the reason."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return _NATIVE_PREFIX.sub("", line) or line

"""Tests for llava.video (frame sampling, decord/PyAV parity, decord guards, errors) and llava.demo_clip.

Test videos are written with PyAV into tmp_path. Frame i is uniform grey with value 8*i (grey is carried by
luma alone, so mpeg4 at qscale 1 returns it within a few levels), so the decoded frame tells its own index.
"""
from __future__ import annotations

import types
from pathlib import Path

import av
import numpy as np
import pytest

from llava.demo_clip import make_demo_clip
from llava.video import VideoDecodeError, load_video, sample_indices

FPS = 10
# decord and PyAV both convert yuv420p -> rgb24 with swscale; they agree exactly here, allow 2 levels anyway.
PIXEL_TOLERANCE = 2


def _has_decord() -> bool:
    try:
        import decord  # noqa: F401
    except (ImportError, OSError):
        return False
    return True


needs_decord = pytest.mark.skipif(not _has_decord(), reason="decord not installed")
ALL_BACKENDS = ["pyav", pytest.param("decord", marks=needs_decord), "auto"]


def write_index_video(path: Path, num_frames: int, options: dict[str, str] | None = None) -> Path:
    """mpeg4 video where frame i is grey 8*i (i < 32)."""
    with av.open(str(path), mode="w", options=options or {}) as container:
        stream = container.add_stream("mpeg4", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = 32, 24, "yuv420p"
        stream.options = {"qscale": "1"}
        for i in range(num_frames):
            image = np.full((24, 32, 3), 8 * i, dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return path


def frame_ids(frames: np.ndarray) -> list[int]:
    """Recover each frame's index from its grey level."""
    return np.rint(frames.reshape(len(frames), -1).mean(axis=1) / 8).astype(int).tolist()


def zero_packets(src: Path, dst: Path, last: int | None = None) -> Path:
    """Copy `src` with the payload of its last `last` video packets (all when None) overwritten by zeros."""
    with av.open(str(src)) as container:
        spans = [(p.pos, p.size) for p in container.demux(video=0) if p.size]
    data = bytearray(src.read_bytes())
    for pos, size in spans if last is None else spans[-last:]:
        data[pos:pos + size] = bytes(size)
    dst.write_bytes(bytes(data))
    return dst


@pytest.fixture(scope="module")
def video30(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_index_video(tmp_path_factory.mktemp("video") / "v30.mp4", 30)


# --- sampling ----------------------------------------------------------------------------------------------------

def test_sample_indices_hand_computed():
    assert sample_indices(30, 8).tolist() == [0, 4, 8, 12, 16, 20, 24, 29]
    assert sample_indices(3, 5).tolist() == [0, 0, 1, 1, 2]
    assert sample_indices(1, 3).tolist() == [0, 0, 0]


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("num_frames", [1, 8, 30])
def test_indices_follow_linspace_and_frames_match(video30: Path, backend: str, num_frames: int):
    result = load_video(video30, num_frames, backend=backend)
    expected = np.linspace(0, 29, num_frames, dtype=int)
    assert result.indices.tolist() == expected.tolist()
    assert frame_ids(result.frames) == expected.tolist()  # the decoded pixels are the sampled frames
    assert result.frames.shape == (num_frames, 24, 32, 3) and result.frames.dtype == np.uint8
    assert (result.total_frames, result.reported_frames, result.repeated_frames) == (30, 30, False)
    assert result.fps == pytest.approx(FPS) and result.duration_s == pytest.approx(3.0)
    assert result.note == ""


def test_auto_prefers_decord(video30: Path):
    assert load_video(video30, 4).backend == ("decord" if _has_decord() else "pyav")


@needs_decord
def test_decord_and_pyav_give_same_frames(tmp_path: Path):
    """Real content (edges, colour) so chroma upsampling differences would show."""
    clip = make_demo_clip(tmp_path / "demo.mp4", num_frames=24)
    via_decord = load_video(clip, 9, backend="decord")
    via_pyav = load_video(clip, 9, backend="pyav")
    assert via_decord.indices.tolist() == via_pyav.indices.tolist()
    diff = np.abs(via_decord.frames.astype(int) - via_pyav.frames.astype(int))
    assert diff.max() <= PIXEL_TOLERANCE


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_short_video_repeats_indices_and_says_so(tmp_path: Path, backend: str):
    path = write_index_video(tmp_path / "short.mp4", 5)
    result = load_video(path, 8, backend=backend)
    assert result.indices.tolist() == [0, 0, 1, 1, 2, 2, 3, 4]
    assert frame_ids(result.frames) == [0, 0, 1, 1, 2, 2, 3, 4]
    assert result.repeated_frames and result.total_frames == 5
    assert "fewer than the 8 requested" in result.note


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_mkv_without_frame_count_is_counted(tmp_path: Path, backend: str):
    path = write_index_video(tmp_path / "v.mkv", 12)
    with av.open(str(path)) as container:
        assert container.streams.video[0].frames == 0  # the container really has no count
    result = load_video(path, 4, backend=backend)
    assert result.total_frames == 12 and result.reported_frames == 0
    assert frame_ids(result.frames) == [0, 3, 7, 11]


# --- frame counts that lie, decord failures ------------------------------------------------------------------

@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_container_count_overreports(tmp_path: Path, backend: str, video30: Path):
    """Remuxing with pts shifted by -5 frames leaves nb_frames=30 but only 25 frames that decode."""
    path = tmp_path / "shifted.mp4"
    with av.open(str(video30)) as src, av.open(str(path), mode="w") as dst:
        out = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(video=0):
            if packet.dts is None:
                continue
            packet.pts -= 5 * 1024
            packet.dts -= 5 * 1024
            packet.stream = out
            dst.mux(packet)
    with av.open(str(path)) as container:
        reported = container.streams.video[0].frames
        decodable = sum(1 for _ in container.decode(video=0))
    if reported <= decodable:
        pytest.skip(f"this FFmpeg build does not produce a lying count ({reported} vs {decodable})")
    result = load_video(path, 6, backend=backend)
    assert (result.reported_frames, result.total_frames) == (reported, decodable)
    assert result.indices.tolist() == np.linspace(0, decodable - 1, 6, dtype=int).tolist()
    assert "container metadata says" in result.note


class _Hang(BaseException):
    """Stands in for decord's native hang; a BaseException so no fallback can swallow it."""


def _fake_decord(true_count: int, reported: int, calls: list[list[int]]) -> types.SimpleNamespace:
    class FakeReader:
        def __init__(self, uri, ctx=None, num_threads=0):
            assert num_threads == 1  # the memory-growth guard

        def __len__(self) -> int:
            return reported

        def get_batch(self, indices):
            calls.append(list(indices))
            if max(indices) >= true_count:
                raise _Hang(f"get_batch past EOF: {max(indices)} >= {true_count}")
            return types.SimpleNamespace(asnumpy=lambda: np.stack([np.full((24, 32, 3), 8 * i, np.uint8)
                                                                   for i in indices]))

        def seek(self, pos: int) -> None:
            calls.append(["seek", pos])

        def get_avg_fps(self) -> float:
            return float(FPS)

    return types.SimpleNamespace(VideoReader=FakeReader, cpu=lambda i: i, DECORDError=type("DECORDError",
                                                                                          (Exception,), {}))


def test_decord_overreported_length_is_clamped(video30: Path, monkeypatch: pytest.MonkeyPatch):
    """len(vr) says 50 for a 30-packet file: get_batch must only see indices < 30, then the reader is rewound."""
    calls: list[list] = []
    monkeypatch.setattr("llava.video._import_decord", lambda: _fake_decord(30, 50, calls))
    result = load_video(video30, 8, backend="decord")
    assert calls[0] == np.linspace(0, 29, 8, dtype=int).tolist()
    assert calls[1] == ["seek", 0]
    assert result.total_frames == 30 and "decord reports 50 frames" in result.note
    assert frame_ids(result.frames) == calls[0]


@needs_decord
def test_corrupt_tail_falls_back_to_pyav(tmp_path: Path, video30: Path):
    """decord raises on undecodable packets; auto falls back to PyAV, which skips them and resamples."""
    path = zero_packets(video30, tmp_path / "corrupt_tail.mp4", last=8)
    result = load_video(path, 5, backend="auto")
    assert result.backend == "pyav" and "decord failed" in result.note
    assert result.total_frames == 22 and result.reported_frames == 30
    assert result.indices.tolist() == np.linspace(0, 21, 5, dtype=int).tolist()
    assert frame_ids(result.frames) == result.indices.tolist()
    with pytest.raises(VideoDecodeError, match="corrupt_tail.mp4: decord failed"):
        load_video(path, 5, backend="decord")


def test_without_decord_auto_uses_pyav(video30: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("llava.video._import_decord", lambda: None)
    assert load_video(video30, 3).backend == "pyav"
    with pytest.raises(ImportError, match="decord"):
        load_video(video30, 3, backend="decord")


def test_truncated_after_header_decodes_what_is_there(tmp_path: Path):
    """moov first (faststart), data cut mid-file: the decodable prefix is sampled and the shortfall is noted."""
    full = write_index_video(tmp_path / "fs.mp4", 30, options={"movflags": "faststart"})
    path = tmp_path / "fs_cut.mp4"
    path.write_bytes(full.read_bytes()[: full.stat().st_size * 2 // 3])
    result = load_video(path, 4)
    assert 0 < result.total_frames < 30 and result.reported_frames == 30
    assert frame_ids(result.frames) == result.indices.tolist()
    assert "container metadata says 30 frames" in result.note


# --- errors ------------------------------------------------------------------------------------------------------

def _missing(tmp: Path) -> Path:
    return tmp / "missing.mp4"


def _empty(tmp: Path) -> Path:
    (tmp / "empty.mp4").write_bytes(b"")
    return tmp / "empty.mp4"


def _text(tmp: Path) -> Path:
    (tmp / "notes.mp4").write_text("this is not a video\n" * 50)
    return tmp / "notes.mp4"


def _truncated(tmp: Path) -> Path:
    full = write_index_video(tmp / "full.mp4", 30)  # moov at the end: cutting the file loses the index
    (tmp / "truncated.mp4").write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    return tmp / "truncated.mp4"


def _no_video_stream(tmp: Path) -> Path:
    with av.open(str(tmp / "nostream.mp4"), mode="w") as container:  # a video stream with no samples
        stream = container.add_stream("mpeg4", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = 32, 24, "yuv420p"
        container.start_encoding()  # writes the header; mp4 then hides the sample-less stream
    return tmp / "nostream.mp4"


def _all_corrupt(tmp: Path) -> Path:
    return zero_packets(write_index_video(tmp / "src.mp4", 6), tmp / "all_corrupt.mp4")


def _directory(tmp: Path) -> Path:
    (tmp / "dir.mp4").mkdir()
    return tmp / "dir.mp4"


@pytest.mark.parametrize("backend", ["pyav", "auto"])
@pytest.mark.parametrize("make_bad, reason", [
    (_missing, "file not found"),
    (_empty, "empty"),
    (_text, "not a readable video container"),
    (_truncated, "not a readable video container"),
    (_no_video_stream, "no video stream"),
    (_all_corrupt, "zero decodable video frames"),
    (_directory, "not a regular file"),
])
def test_bad_inputs_raise_naming_the_file(tmp_path: Path, backend: str, make_bad, reason: str):
    path = make_bad(tmp_path)
    with pytest.raises(VideoDecodeError) as info:
        load_video(path, 4, backend=backend)
    assert str(path) in str(info.value) and reason in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("num_frames", [0, -3])
def test_num_frames_below_one_raises(video30: Path, num_frames: int):
    with pytest.raises(VideoDecodeError, match=f"{video30.name}.*num_frames must be an integer >= 1"):
        load_video(video30, num_frames)


def test_unknown_backend_lists_valid_ones(video30: Path):
    with pytest.raises(ValueError, match="valid: auto, decord, pyav"):
        load_video(video30, 4, backend="opencv")


# --- demo clip ---------------------------------------------------------------------------------------------------

def test_demo_clip_small_decodable_and_mostly_static(tmp_path: Path):
    path = make_demo_clip(tmp_path / "demo.mp4", num_frames=48, size=(160, 120), fps=8)
    assert 0 < path.stat().st_size < 200_000
    result = load_video(path, 48)
    assert result.frames.shape == (48, 120, 160, 3) and result.total_frames == 48
    assert result.fps == pytest.approx(8) and result.duration_s == pytest.approx(6.0)
    changed = np.abs(np.diff(result.frames.astype(int), axis=0)).max(axis=-1) > 30  # (F-1, H, W)
    assert 0 < changed.mean(axis=(1, 2)).max() < 0.2  # things move, most of the scene persists


def test_committed_demo_asset_decodes():
    asset = Path(__file__).resolve().parents[1] / "assets" / "demo.mp4"
    if not asset.exists():
        pytest.skip("assets/demo.mp4 not generated")
    assert asset.stat().st_size < 200_000
    assert load_video(asset, 16).frames.shape == (16, 120, 160, 3)

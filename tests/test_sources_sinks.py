"""Sources and sinks on real files: what goes in comes out with the same frames, timing, audio,
sizes and colour, and everything a user can get wrong fails in one line that names the file.

Colour errors are mean absolute differences in 8-bit levels over the interiors of flat colour
patches (:func:`media.patch_interiors`), where 4:2:0 chroma and codec blocks see one colour.
Measured (FFmpeg 8.1, PyAV 18.1, x264): decoding against the numpy ground truth 0.34-0.52; decoding
with the wrong matrix 6.0-6.8; decode -> encode -> decode with lossless x264 (crf 0) 0.01 for
limited range, 0.58 for full range (swscale writes full-range chroma half a level low) and 0.34
for 10-bit input (re-quantised to 8 bits); the same at the default crf 18 0.49-1.08.
"""

from __future__ import annotations

import dataclasses
import os
from fractions import Fraction
from pathlib import Path, PurePosixPath

import av
import cv2
import numpy as np
import pytest
from av.video.reformatter import Colorspace
from media import (
    DEFAULT_TREE,
    make_audio_only,
    make_clip,
    make_image,
    make_image_tree,
    patch_interiors,
    remux,
    truncate,
    video_info,
    write_garbage,
)

from gtacity.engine.media.sinks import ImageFolderSink, ImageSink, SinkError, VideoSink, open_sink
from gtacity.engine.media.sources import (
    ImageFolderSource,
    ImageSource,
    SourceError,
    VideoFrameMeta,
    VideoSource,
    open_source,
)

DECODE_TOLERANCE = 1.0  # measured <= 0.52
WRONG_MATRIX_FLOOR = 4.0  # measured >= 6.0
CRF18_ROUND_TRIP_TOLERANCE = 1.5  # codec loss included; measured <= 1.08
LOSSLESS_LIMITED_TOLERANCE = 0.1  # measured 0.01
LOSSLESS_FULL_RANGE_TOLERANCE = 1.0  # measured 0.58
LOSSLESS_10_BIT_TOLERANCE = 0.6  # measured 0.34


def copy_through(source_path: Path, out_path: Path, **sink_options) -> list[np.ndarray]:
    """The identity "translation": decode every frame and write it straight back."""
    images = []
    with open_source(source_path) as source, open_sink(out_path, source, **sink_options) as sink:
        for frame in source:
            images.append(frame.image)
            sink.write(frame)
    return images


def decode_all(path: Path) -> list[np.ndarray]:
    with open_source(path) as source:
        return [frame.image for frame in source]


def interior_error(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    """Mean absolute difference over patch interiors, averaged over frames (same count)."""
    mask = patch_interiors(a[0].shape[1], a[0].shape[0])
    errors = [np.abs(x.astype(int) - y.astype(int))[mask].mean() for x, y in zip(a, b, strict=True)]
    return float(np.mean(errors))


def files_under(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def assert_one_line_naming(error: pytest.ExceptionInfo, name: str) -> None:
    message = str(error.value)
    assert "\n" not in message and name in message, message


# ---------------------------------------------------------------- dispatch and video decoding


def test_open_source_picks_the_source_by_what_the_path_is(tmp_path):
    make_clip(tmp_path / "clip.mp4", frames=3)
    make_image(tmp_path / "one.PNG")
    make_image_tree(tmp_path / "tree")
    for path, kind in [
        ("clip.mp4", VideoSource),
        ("one.PNG", ImageSource),
        ("tree", ImageFolderSource),
    ]:
        with open_source(str(tmp_path / path)) as source:
            assert isinstance(source, kind)


def test_video_source_yields_rgb_frames_in_order_with_their_timestamps(tmp_path):
    make_clip(tmp_path / "clip.mp4", frames=10, size=(64, 48), fps=25)
    with open_source(tmp_path / "clip.mp4") as source:
        assert (len(source), source.width, source.height, source.rate) == (10, 64, 48, 25)
        frames = list(source)
    assert [f.index for f in frames] == list(range(10))
    assert all(f.image.shape == (48, 64, 3) and f.image.dtype == np.uint8 for f in frames)
    assert all(isinstance(f.meta, VideoFrameMeta) for f in frames)
    assert [f.meta.seconds for f in frames] == pytest.approx([i / 25 for i in range(10)])


def test_matroska_frame_count_is_estimated_from_the_duration(tmp_path):
    make_clip(tmp_path / "clip.mkv", frames=20, pts=[50 + i for i in range(20)])
    with open_source(tmp_path / "clip.mkv") as source:
        assert abs(len(source) - 20) <= 1
        assert sum(1 for _ in source) == 20


COLOUR_CASES = {
    "bt709 tagged limited": dict(matrix="bt709"),
    "bt601 tagged limited": dict(matrix="bt601"),
    "untagged SD is bt601": dict(matrix="bt601", tagged=False),
    "untagged HD is bt709": dict(matrix="bt709", tagged=False, size=(1280, 16), frames=4),
    "bt709 full range": dict(matrix="bt709", full_range=True),
    "10-bit": dict(pix_fmt="yuv420p10le"),
}


@pytest.mark.parametrize("clip", COLOUR_CASES.values(), ids=COLOUR_CASES.keys())
def test_decoding_uses_the_clips_own_matrix_and_range(tmp_path, clip):
    truth = make_clip(tmp_path / "clip.mp4", **{"frames": 6, **clip})
    decoded = decode_all(tmp_path / "clip.mp4")
    assert interior_error(decoded, truth) < DECODE_TOLERANCE

    # The same frames through the other matrix must miss by far: the check above can fail.
    with open_source(tmp_path / "clip.mp4") as source:
        right = source.colour.conversion
        wrong = Colorspace.ITU601 if right == Colorspace.ITU709 else Colorspace.ITU709
        source.colour = dataclasses.replace(source.colour, conversion=wrong)
        misdecoded = [frame.image for frame in source]
    assert interior_error(misdecoded, truth) > WRONG_MATRIX_FLOOR


# ---------------------------------------------------------------- video -> video


@pytest.mark.parametrize("container", ["mp4", "mkv", "mov"])
def test_video_round_trip_keeps_frames_timing_audio_and_tags(tmp_path, container):
    src, out = tmp_path / f"in.{container}", tmp_path / f"out.{container}"
    make_clip(src, frames=12, fps=25)
    written = copy_through(src, out)
    before, after = video_info(src), video_info(out)
    for key in ("size", "frames", "rate", "times", "tags", "audio", "audio_packets"):
        assert after[key] == before[key], key
    assert after["pix_fmt"] == "yuv420p"
    assert len(after["audio_packets"]) > 10
    assert interior_error(decode_all(out), written) < CRF18_ROUND_TRIP_TOLERANCE


def test_audio_is_interleaved_with_the_video_not_appended(tmp_path):
    make_clip(tmp_path / "in.mp4", frames=50)
    copy_through(tmp_path / "in.mp4", tmp_path / "out.mp4")
    with av.open(str(tmp_path / "out.mp4")) as container:
        kinds = [p.stream.type for p in container.demux() if p.size]
    last_video = max(i for i, kind in enumerate(kinds) if kind == "video")
    first_audio = kinds.index("audio")
    assert first_audio < last_video / 2


@pytest.mark.parametrize("container", ["mp4", "mkv"])
def test_variable_frame_rate_and_late_start_keep_every_timestamp(tmp_path, container):
    pts = [30, 33, 34, 39, 40, 47, 60, 61]  # 1/30 s units: gaps, and a start at 1 s
    make_clip(tmp_path / f"in.{container}", pts=pts, time_base=Fraction(1, 30))
    copy_through(tmp_path / f"in.{container}", tmp_path / f"out.{container}")
    before = video_info(tmp_path / f"in.{container}")
    after = video_info(tmp_path / f"out.{container}")
    assert after["times"] == before["times"]
    assert before["times"] == pytest.approx([p / 30 for p in pts], abs=1e-3)  # Matroska stores ms
    assert after["audio_packets"] == before["audio_packets"]


@pytest.mark.parametrize(
    "clip, tolerance",
    [
        (dict(matrix="bt709"), LOSSLESS_LIMITED_TOLERANCE),
        (dict(matrix="bt601", tagged=False), LOSSLESS_LIMITED_TOLERANCE),
        (dict(tagged=False, size=(1280, 16), frames=3), LOSSLESS_LIMITED_TOLERANCE),
        (dict(matrix="bt709", full_range=True), LOSSLESS_FULL_RANGE_TOLERANCE),
        (dict(pix_fmt="yuv420p10le"), LOSSLESS_10_BIT_TOLERANCE),
    ],
    ids=["bt709 tagged", "untagged SD", "untagged HD", "full range", "10-bit"],
)
def test_video_round_trip_converts_and_tags_colour_like_the_input(tmp_path, clip, tolerance):
    """Lossless x264 isolates the colour conversion: RGB -> YUV must invert YUV -> RGB. The
    output is 8-bit 4:2:0 whatever the input (10-bit included), tagged exactly like the input."""
    truth = make_clip(tmp_path / "in.mp4", **{"frames": 6, **clip})
    decoded = copy_through(tmp_path / "in.mp4", tmp_path / "out.mp4", crf=0)
    before, after = video_info(tmp_path / "in.mp4"), video_info(tmp_path / "out.mp4")
    assert after["tags"] == before["tags"]
    assert after["pix_fmt"] in ("yuv420p", "yuvj420p")  # FFmpeg's name for full-range 4:2:0
    assert interior_error(decode_all(tmp_path / "out.mp4"), decoded) < tolerance
    assert interior_error(decode_all(tmp_path / "out.mp4"), truth) < DECODE_TOLERANCE + tolerance


def test_odd_sized_video_keeps_its_size_as_yuv444(tmp_path):
    make_clip(tmp_path / "in.mkv", frames=4, size=(33, 17), pix_fmt="yuv444p")
    decoded = copy_through(tmp_path / "in.mkv", tmp_path / "out.mkv")
    after = video_info(tmp_path / "out.mkv")
    assert (after["size"], after["pix_fmt"], after["frames"]) == ((33, 17), "yuv444p", 4)
    error = np.abs(decode_all(tmp_path / "out.mkv")[0].astype(int) - decoded[0]).mean()
    assert error < CRF18_ROUND_TRIP_TOLERANCE


def test_video_without_audio_round_trips(tmp_path):
    make_clip(tmp_path / "in.mp4", frames=5, audio=None)
    copy_through(tmp_path / "in.mp4", tmp_path / "out.mp4")
    after = video_info(tmp_path / "out.mp4")
    assert (after["frames"], after["audio"]) == (5, [])


@pytest.mark.parametrize("codec", ["aac", "libmp3lame", "opus", "flac"])
def test_audio_codecs_mp4_can_hold_are_copied_unchanged(tmp_path, codec):
    make_clip(tmp_path / "in.mkv", frames=6, audio=codec)
    copy_through(tmp_path / "in.mkv", tmp_path / "out.mp4")
    before, after = video_info(tmp_path / "in.mkv"), video_info(tmp_path / "out.mp4")
    assert after["audio"] == before["audio"]
    payloads = [
        [data for data, _pts, _duration in info["audio_packets"]] for info in (before, after)
    ]
    assert payloads[1] == payloads[0]


def test_raw_h264_without_timestamps_gets_them_at_its_frame_rate(tmp_path):
    make_clip(tmp_path / "in.mkv", frames=6, audio=None)
    remux(tmp_path / "in.mkv", tmp_path / "in.h264", format="h264")
    copy_through(tmp_path / "in.h264", tmp_path / "out.mp4")
    after = video_info(tmp_path / "out.mp4")
    assert after["frames"] == 6
    assert after["times"] == [Fraction(i, 25) for i in range(6)]


def test_pcm_audio_is_refused_for_mp4_before_any_work_and_accepted_in_mkv(tmp_path):
    make_clip(tmp_path / "in.mkv", frames=4, audio="pcm_s16le")
    with open_source(tmp_path / "in.mkv") as source:
        with pytest.raises(SinkError, match=r"pcm_s16le audio .* \.mkv") as error:
            open_sink(tmp_path / "out.mp4", source)
    assert_one_line_naming(error, "out.mp4")
    assert os.listdir(tmp_path) == ["in.mkv"]
    copy_through(tmp_path / "in.mkv", tmp_path / "out.mkv")
    before, after = video_info(tmp_path / "in.mkv"), video_info(tmp_path / "out.mkv")
    assert after["audio_packets"] == before["audio_packets"]


# ---------------------------------------------------------------- images


def test_folder_round_trip_mirrors_names_formats_and_pixels(tmp_path):
    written = make_image_tree(tmp_path / "in", size=(33, 17))
    (tmp_path / "in" / "notes.txt").write_text("not an image")
    make_image(tmp_path / "in" / "._a.jpg")  # macOS metadata debris: hidden, skipped
    with open_source(tmp_path / "in") as source:
        assert len(source) == len(DEFAULT_TREE)
        assert [f.meta for f in source] == sorted(PurePosixPath(n) for n in DEFAULT_TREE)
    copy_through(tmp_path / "in", tmp_path / "out")

    assert files_under(tmp_path / "out") == sorted(DEFAULT_TREE)
    for relative, image in written.items():
        back = cv2.cvtColor(cv2.imread(str(tmp_path / "out" / relative)), cv2.COLOR_BGR2RGB)
        assert back.shape == image.shape
        if relative.suffix.lower() in (".jpg", ".jpeg"):  # lossy twice: the input and the output
            assert interior_error([back], [image]) < 2, relative
        else:
            assert np.array_equal(back, image), relative
    assert (tmp_path / "out" / "c.Jpg").read_bytes()[:2] == b"\xff\xd8"  # JPEG, as its input
    assert (tmp_path / "out" / "sub/E.WEBP").read_bytes()[8:12] == b"WEBP"


def test_single_odd_sized_png_round_trips_exactly(tmp_path):
    image = make_image(tmp_path / "in.png", size=(933, 517))
    copy_through(tmp_path / "in.png", tmp_path / "out.png")
    back = cv2.cvtColor(cv2.imread(str(tmp_path / "out.png")), cv2.COLOR_BGR2RGB)
    assert np.array_equal(back, image)


def test_single_image_output_format_follows_the_output_extension(tmp_path):
    make_image(tmp_path / "in.png")
    copy_through(tmp_path / "in.png", tmp_path / "out.jpg")
    assert (tmp_path / "out.jpg").read_bytes()[:2] == b"\xff\xd8"


# ---------------------------------------------------------------- input errors


def _cut_mp4(path: Path) -> None:
    make_clip(path, frames=30)
    truncate(path, 0.5)  # the index (moov) is written last, so it is lost


def _cut_mkv(path: Path) -> None:
    make_clip(path, frames=30)
    truncate(path, 0.02)  # headers survive, no whole frame does


def _folder_without_images(path: Path) -> None:
    path.mkdir()
    (path / "readme.txt").write_text("no images here")


UNREADABLE_INPUTS = {
    "missing": ("drive.mp4", lambda p: None, "no such file or folder"),
    "random bytes": ("drive.mp4", write_garbage, "not a readable video"),
    "empty file": ("drive.mp4", lambda p: p.write_bytes(b""), "not a readable video"),
    "truncated mp4": ("drive.mp4", _cut_mp4, "the file is cut off"),
    "mkv cut before a frame": ("drive.mkv", _cut_mkv, "no video frame could be decoded"),
    "audio only": ("song.m4a", make_audio_only, "has no video stream"),
    "folder without images": ("frames", _folder_without_images, "no images"),
    "damaged image": ("shot.png", write_garbage, "not a readable image"),
}


@pytest.mark.parametrize("name, make, expected", UNREADABLE_INPUTS.values(), ids=UNREADABLE_INPUTS)
def test_unreadable_input_is_one_line_naming_the_file(tmp_path, name, make, expected):
    make(tmp_path / name)
    with pytest.raises(SourceError, match=expected) as error:
        open_source(tmp_path / name)
    assert_one_line_naming(error, name)


def test_corrupt_image_in_a_folder_fails_when_reached_naming_it(tmp_path):
    make_image_tree(tmp_path / "in", files=["a.png", "c.png"])
    write_garbage(tmp_path / "in" / "b.png")
    with open_source(tmp_path / "in") as source:
        frames = iter(source)
        assert next(frames).meta == PurePosixPath("a.png")
        with pytest.raises(SourceError, match="not a readable image") as error:
            next(frames)
    assert_one_line_naming(error, "b.png")


# ---------------------------------------------------------------- output refusals


@pytest.fixture
def clip(tmp_path) -> Path:
    path = tmp_path / "drive.mp4"
    make_clip(path, frames=4)
    return path


@pytest.mark.parametrize("overwrite", [False, True])
def test_output_equal_to_input_is_refused_even_with_overwrite(clip, overwrite):
    original = clip.read_bytes()
    spellings = [clip, clip.parent / "." / "sub" / ".." / clip.name]
    (clip.parent / "link.mp4").symlink_to(clip)
    spellings.append(clip.parent / "link.mp4")
    with open_source(clip) as source:
        for spelling in spellings:
            with pytest.raises(SinkError, match="is the input file") as error:
                open_sink(spelling, source, overwrite=overwrite)
            assert_one_line_naming(error, spelling.name)
    assert clip.read_bytes() == original


def test_existing_output_needs_overwrite(clip, tmp_path):
    (tmp_path / "out.mp4").write_bytes(b"precious")
    with open_source(clip) as source:
        with pytest.raises(SinkError, match="pass --overwrite to replace it") as error:
            open_sink(tmp_path / "out.mp4", source)
    assert_one_line_naming(error, "out.mp4")
    assert (tmp_path / "out.mp4").read_bytes() == b"precious"
    copy_through(clip, tmp_path / "out.mp4", overwrite=True)
    assert video_info(tmp_path / "out.mp4")["frames"] == 4


REFUSED_OUTPUTS = {
    "video as .avi": ("drive.mp4", "out.avi", {}, r"\.mp4, \.mkv, \.mov"),
    "video as .png": ("drive.mp4", "out.png", {}, r"\.mp4, \.mkv, \.mov"),
    "video without extension": ("drive.mp4", "out", {}, r"\.mp4, \.mkv, \.mov"),
    "image as .mp4": ("shot.png", "shot.mp4", {}, r"\.png, \.jpg"),
    "unknown encoder": ("drive.mp4", "out.mp4", {"codec": "nosuchcodec"}, "nosuchcodec"),
    "bad preset": ("drive.mp4", "out.mp4", {"preset": "warp9"}, "could not start writing"),
}


@pytest.mark.parametrize(
    "src, out, options, expected", REFUSED_OUTPUTS.values(), ids=REFUSED_OUTPUTS
)
def test_refused_output_is_one_line_and_leaves_no_file(tmp_path, src, out, options, expected):
    if src.endswith(".mp4"):
        make_clip(tmp_path / src, frames=2)
    else:
        make_image(tmp_path / src)
    with open_source(tmp_path / src) as source:
        with pytest.raises(SinkError, match=expected) as error:
            open_sink(tmp_path / out, source, **options)
    assert_one_line_naming(error, out)
    assert os.listdir(tmp_path) == [src]


@pytest.mark.parametrize(
    "out, expected",
    [
        ("in", "is the input folder"),
        ("in/translated", "inside the input folder"),
        (".", "contains the input folder"),
    ],
)
def test_folder_output_must_not_overlap_the_input_folder(tmp_path, out, expected):
    make_image_tree(tmp_path / "in", files=["a.png"])
    with open_source(tmp_path / "in") as source:
        with pytest.raises(SinkError, match=expected):
            open_sink(tmp_path / out, source, overwrite=True)
    assert os.listdir(tmp_path / "in") == ["a.png"]


def test_non_empty_output_folder_needs_overwrite_and_keeps_unrelated_files(tmp_path):
    make_image_tree(tmp_path / "in", files=["a.png"])
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("keep me")
    with open_source(tmp_path / "in") as source:
        with pytest.raises(SinkError, match="pass --overwrite to replace it"):
            open_sink(tmp_path / "out", source)
    copy_through(tmp_path / "in", tmp_path / "out", overwrite=True)
    assert sorted(os.listdir(tmp_path / "out")) == ["a.png", "mine.txt"]


# ---------------------------------------------------------------- abort and failures mid-way


def test_video_abort_leaves_nothing_at_the_output(clip, tmp_path):
    with open_source(clip) as source:
        sink = open_sink(tmp_path / "out.mp4", source)
        assert isinstance(sink, VideoSink)
        sink.write(next(iter(source)))
        # The input, the output's lock and the hidden partial file named with the writer's pid.
        lock, partial, _input = sorted(os.listdir(tmp_path))
        assert lock == ".out.mp4.lock" and partial.startswith(f".out.mp4.partial-{os.getpid()}-")
        sink.abort()
    assert sorted(os.listdir(tmp_path)) == ["drive.mp4"]


def test_video_failing_mid_way_leaves_nothing_at_the_output(clip, tmp_path):
    with pytest.raises(RuntimeError, match="backend died"):
        with open_source(clip) as source, open_sink(tmp_path / "out.mp4", source) as sink:
            for frame in source:
                sink.write(frame)
                raise RuntimeError("backend died")
    assert sorted(os.listdir(tmp_path)) == ["drive.mp4"]


def test_video_output_appears_only_on_close(clip, tmp_path):
    with open_source(clip) as source:
        sink = open_sink(tmp_path / "out.mp4", source)
        for frame in source:
            sink.write(frame)
        assert not (tmp_path / "out.mp4").exists()
        sink.close()
    assert video_info(tmp_path / "out.mp4")["frames"] == 4


def test_folder_abort_keeps_finished_files_and_no_partial_ones(tmp_path):
    make_image_tree(tmp_path / "in", files=["a.png", "sub/b.png", "sub/c.png"])
    with open_source(tmp_path / "in") as source:
        sink = open_sink(tmp_path / "out", source)
        assert isinstance(sink, ImageFolderSink)
        frames = iter(source)
        sink.write(next(frames))
        sink.write(next(frames))
        sink.abort()
    assert files_under(tmp_path / "out") == ["a.png", "sub/b.png"]


def test_image_abort_leaves_nothing_at_the_output(tmp_path):
    make_image(tmp_path / "in.png")
    with open_source(tmp_path / "in.png") as source:
        sink = open_sink(tmp_path / "out.png", source)
        assert isinstance(sink, ImageSink)
        sink.write(next(iter(source)))
        assert not (tmp_path / "out.png").exists()
        sink.abort()
    assert sorted(os.listdir(tmp_path)) == ["in.png"]

"""The video plane path (engine/planes.py): the decoder's 4:2:0 planes in, yuv420p planes out, the
colour converted by the kernels instead of swscale. It must give the video the RGB path gives:
same frame count, size, timestamps, colour tags and audio, pixels within a level.

On the CPU the kernels run their torch references; the path is chosen here by asking the source
for planes, which ``translate`` does only on CUDA (checked by the ``cuda`` test at the end).

Pixels are compared as the encoder's own YUV planes, written losslessly (x264 crf 0), so what is
left is the conversion's difference. Measured (FFmpeg 8.1, PyAV 18.1, tiny generator): yuv420p
H.264 input at 64x48 max 2 levels, mean 0.045, at 66x38 max 1, mean 0.049; NV12 input max 2, mean
0.078. (The model input differs by at most 1 level, the model output then by at most 1, and the
conversion back adds at most 1.)
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch
from media import make_clip, make_raw_clip, video_info

from gtacity.checkpoint import save_generator
from gtacity.engine.backends import create_backend
from gtacity.engine.media.planes import use_planes
from gtacity.engine.media.sinks import open_sink
from gtacity.engine.media.sources import VideoSource
from gtacity.engine.stream.pipeline import run_pipeline
from gtacity.engine.stream.stages import StageTimes
from gtacity.engine.translation import TranslateConfig, translate

MAX_LEVELS = 2  # measured <= 2: a 1-level input difference, then 1 more on the way out
MEAN_LEVELS = 0.15  # measured <= 0.078


def translated(backend, clip: Path, out: Path, *, planes: bool, batch_size: int = 2) -> StageTimes:
    with VideoSource(clip, planes=planes) as source:
        sink = open_sink(out, source, crf=0)
        return run_pipeline(source, sink, backend, batch_size=batch_size)


def yuv_planes(path: Path) -> np.ndarray:
    """Every frame's planes as the file stores them, ``(N, ...)`` uint8."""
    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray() for frame in container.decode(video=0)])


def assert_same_video(a: Path, b: Path) -> tuple[int, float]:
    """Same frames, size, timing, tags and audio; returns the pixels' max and mean difference."""
    info_a, info_b = video_info(a), video_info(b)
    if not info_a["audio"]:  # with no audio stream, video_info's "audio packets" are the video's
        del info_a["audio_packets"], info_b["audio_packets"]
    assert info_a == info_b
    diff = np.abs(yuv_planes(a).astype(np.int16) - yuv_planes(b))
    return int(diff.max()), float(diff.mean())


@pytest.fixture
def cpu_backend(tiny_generator):
    return create_backend("torch", tiny_generator, precision="fp32", device="cpu")


@pytest.mark.parametrize("size", [(64, 48), (66, 38)], ids=["64x48", "66x38"])
def test_planes_give_the_rgb_paths_video(tmp_path, cpu_backend, size):
    # 66x38: both sides padded to a multiple of 4 and cropped back, on the way in and out.
    clip = tmp_path / "in.mp4"
    make_clip(clip, frames=5, size=size, pts=[0, 1, 3, 4, 7])  # uneven batches and gaps in time
    with VideoSource(clip, planes=True) as source:
        first = next(iter(source))
    assert first.image is None and first.planes.pix_fmt == "yuv420p" and first.size == size[::-1]
    assert first.planes.chroma_left  # H.264's chroma siting, as swscale reads the decoder's tag
    rgb = translated(cpu_backend, clip, tmp_path / "rgb.mp4", planes=False)
    yuv = translated(cpu_backend, clip, tmp_path / "yuv.mp4", planes=True)
    assert (rgb.frames, rgb.planes, yuv.frames, yuv.planes) == (5, 0, 5, 5)
    worst, mean = assert_same_video(tmp_path / "rgb.mp4", tmp_path / "yuv.mp4")
    assert video_info(tmp_path / "yuv.mp4")["size"] == size
    assert worst <= MAX_LEVELS and mean <= MEAN_LEVELS, (worst, mean)


def test_nv12_input_travels_as_nv12(tmp_path, cpu_backend):
    clip = tmp_path / "nv12.mkv"
    make_raw_clip(clip, frames=4, pix_fmt="nv12")
    with VideoSource(clip, planes=True) as source:
        frames = list(source)
    assert {f.planes.pix_fmt for f in frames} == {"nv12"}
    assert not frames[0].planes.chroma_left  # untagged: centred, as swscale reads it
    assert frames[0].planes.matrix == "bt601"  # untagged SD
    rgb = translated(cpu_backend, clip, tmp_path / "rgb.mp4", planes=False)
    yuv = translated(cpu_backend, clip, tmp_path / "yuv.mp4", planes=True, batch_size=3)
    assert (rgb.planes, yuv.planes, yuv.frames) == (0, 4, 4)
    worst, mean = assert_same_video(tmp_path / "rgb.mp4", tmp_path / "yuv.mp4")
    assert worst <= MAX_LEVELS and mean <= MEAN_LEVELS, (worst, mean)


@pytest.mark.parametrize(
    "pix_fmt, size", [("yuv420p10le", (64, 48)), ("yuv444p", (64, 48)), ("yuv444p", (65, 37))]
)
def test_other_formats_and_odd_sizes_fall_back_to_rgb(tmp_path, cpu_backend, pix_fmt, size):
    clip = tmp_path / "in.mkv"
    make_clip(clip, frames=3, size=size, pix_fmt=pix_fmt, audio=None)
    with VideoSource(clip, planes=True) as source:
        frames = list(source)
    assert all(f.planes is None and f.image.shape == (size[1], size[0], 3) for f in frames)
    rgb = translated(cpu_backend, clip, tmp_path / "rgb.mkv", planes=False)
    asked = translated(cpu_backend, clip, tmp_path / "asked.mkv", planes=True)
    assert (rgb.frames, asked.frames, asked.planes) == (3, 3, 0)
    assert assert_same_video(tmp_path / "rgb.mkv", tmp_path / "asked.mkv") == (0, 0.0)


def test_use_planes_only_on_cuda_without_flow_blending():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert use_planes(cuda, "off") and use_planes(cuda, "stats")
    assert not use_planes(cuda, "flow")  # the blend reads RGB frames on the host
    assert not use_planes(cpu, "off")  # swscale beats the kernels' torch references there


def _translate(tmp_path, tiny_generator, device: str, name: str):
    weights = save_generator(tiny_generator, tmp_path / "g.safetensors", direction="gta2city")
    return translate(TranslateConfig(
        tmp_path / "in.mp4", tmp_path / name, weights=weights, device=device, backend="torch",
        precision="fp32", crf=0, progress=False,
    ))


def test_translate_on_the_cpu_keeps_rgb(tmp_path, tiny_generator):
    make_clip(tmp_path / "in.mp4", frames=3)
    report = _translate(tmp_path, tiny_generator, "cpu", "out.mp4")
    assert report.frames == 3 and report.times.planes == 0


@pytest.mark.cuda
def test_translate_on_cuda_converts_colour_on_the_gpu(tmp_path, tiny_generator):
    """On CUDA the plane path is what runs, and its video agrees with the RGB path's (same GPU)."""
    make_clip(tmp_path / "in.mp4", frames=6, size=(66, 38))
    report = _translate(tmp_path, tiny_generator, "cuda", "gpu.mp4")
    assert report.frames == 6 and report.times.planes == 6
    backend = create_backend("torch", tiny_generator, precision="fp32", device="cuda")
    rgb = translated(backend, tmp_path / "in.mp4", tmp_path / "rgb.mp4", planes=False, batch_size=8)
    assert rgb.planes == 0
    worst, mean = assert_same_video(tmp_path / "rgb.mp4", tmp_path / "gpu.mp4")
    assert worst <= MAX_LEVELS and mean <= MEAN_LEVELS, (worst, mean)

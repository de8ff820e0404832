"""`gtacity translate` end to end: real clips and images through the pipeline and the CLI."""

from __future__ import annotations

import subprocess
import sys
import threading

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from media import make_clip, make_image, make_image_tree, video_info, write_garbage

from gtacity.checkpoint import save_generator
from gtacity.cli import cli
from gtacity.engine.jobs.journal import STATE_DIR
from gtacity.engine.media.sources import open_source
from gtacity.engine.stream.convert import to_batch, to_frames
from gtacity.engine.stream.pipeline import batches
from gtacity.engine.translation import TranslateConfig, translate
from gtacity.nets import PatchDiscriminator


@pytest.fixture
def weights(tmp_path, tiny_generator):
    return save_generator(tiny_generator, tmp_path / "g.safetensors", direction="gta2city")


def reference(net, image: np.ndarray) -> np.ndarray:
    """The straightforward way: pad with numpy, run the net, crop, round to uint8."""
    h, w = image.shape[:2]
    padded = np.pad(image, ((0, -h % 4), (0, -w % 4), (0, 0)), mode="reflect")
    x = torch.from_numpy(padded).permute(2, 0, 1)[None].float() / 127.5 - 1
    with torch.no_grad():
        y = net(x)[0, :, :h, :w]
    return ((y + 1) * 127.5).round().clamp(0, 255).byte().permute(1, 2, 0).numpy()


def job(tmp_path, inp, out, weights, **kw) -> TranslateConfig:
    kw = {"backend": "torch", "progress": False, **kw}
    return TranslateConfig(input=inp, output=out, weights=weights, **kw)


def test_odd_size_image_keeps_its_size_and_matches_reference(tmp_path, weights, tiny_generator):
    src = make_image(tmp_path / "shot.png", size=(933, 517))
    report = translate(job(tmp_path, tmp_path / "shot.png", tmp_path / "out.png", weights))
    out = open_source(tmp_path / "out.png")
    image = next(iter(out)).image
    assert image.shape == (517, 933, 3) and report.frames == 1
    diff = np.abs(image.astype(int) - reference(tiny_generator, src).astype(int))
    assert diff.max() <= 1


def test_video_keeps_frames_timestamps_audio_and_order(tmp_path, weights, tiny_generator):
    make_clip(tmp_path / "drive.mp4", frames=30, size=(96, 64), fps=30, audio="aac")
    report = translate(job(tmp_path, tmp_path / "drive.mp4", tmp_path / "out.mp4", weights, batch_size=4))
    src, out = video_info(tmp_path / "drive.mp4"), video_info(tmp_path / "out.mp4")
    assert report.frames == out["frames"] == 30
    assert out["size"] == src["size"] and out["rate"] == src["rate"] and out["times"] == src["times"]
    assert out["audio"] == src["audio"] and out["audio_packets"] == src["audio_packets"]
    # Order: each output frame is closest to the translation of its own input frame. Compared in
    # luma: 4:2:0 chroma cannot carry the pixel-level colour noise of a random tiny generator.
    luma = lambda rgb: rgb.astype(float) @ np.array([0.2126, 0.7152, 0.0722])  # noqa: E731
    with open_source(tmp_path / "drive.mp4") as s:
        expected = [luma(reference(tiny_generator, f.image)) for f in s]
    with open_source(tmp_path / "out.mp4") as o:
        got = [luma(f.image) for f in o]
    for i, g in enumerate(got):
        errors = [np.abs(g - e).mean() for e in expected]
        others = sorted(errors[:i] + errors[i + 1 :])
        assert int(np.argmin(errors)) == i and errors[i] < 5.0 and errors[i] < others[0] / 3


def test_folder_tree_is_mirrored(tmp_path, weights, tiny_generator):
    images = make_image_tree(tmp_path / "frames")
    report = translate(job(tmp_path, tmp_path / "frames", tmp_path / "city", weights, batch_size=3))
    assert report.frames == len(images)
    written = sorted(p.relative_to(tmp_path / "city").as_posix() for p in (tmp_path / "city").rglob("*") if p.is_file())
    job_records = [f"{STATE_DIR}/{p.name}" for p in (tmp_path / "city" / STATE_DIR).iterdir()]
    assert written == sorted([str(p) for p in images] + job_records)
    for rel, src in images.items():
        if rel.suffix.lower() in (".png", ".bmp", ".webp"):  # lossless: exact to the reference
            got = next(iter(open_source(tmp_path / "city" / rel))).image
            assert np.abs(got.astype(int) - reference(tiny_generator, src).astype(int)).max() <= 1


def test_openvino_backend_end_to_end(tmp_path, weights, tiny_generator):
    src = make_image(tmp_path / "a.png", size=(70, 45))
    report = translate(job(tmp_path, tmp_path / "a.png", tmp_path / "b.png", weights,
                           backend="openvino", precision="fp32"))
    assert (report.backend, report.precision) == ("openvino", "fp32")
    got = next(iter(open_source(tmp_path / "b.png"))).image
    assert np.abs(got.astype(int) - reference(tiny_generator, src).astype(int)).max() <= 1


def test_batches_flush_on_size_change_and_keep_order():
    from gtacity.engine.frames import Frame

    sizes = [(8, 8), (8, 8), (8, 8), (12, 8), (8, 8)]
    frames = [Frame(np.zeros((h, w, 3), np.uint8), i) for i, (h, w) in enumerate(sizes)]
    assert [[f.index for f in b] for b in batches(frames, 2)] == [[0, 1], [2], [3], [4]]


def test_pad_and_crop_round_trip_is_exact():
    from gtacity.engine.frames import Frame

    image = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    x = to_batch([Frame(image, 0)], torch.device("cpu"))
    assert tuple(x.shape) == (1, 3, 40, 56)
    assert np.array_equal(to_frames(x, [Frame(image, 0)])[0].image, image)


def run_cli(*args):
    return CliRunner().invoke(cli, list(map(str, args)))


def one_error_line(result, code=1):
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def test_cli_errors(tmp_path, weights):
    make_clip(tmp_path / "in.mp4", frames=3)
    write_garbage(tmp_path / "bad.mp4")
    torch.save(PatchDiscriminator(8).state_dict(), tmp_path / "d.pth")
    (tmp_path / "taken.mp4").write_bytes(b"mine")
    w = ("--weights", weights, "--backend", "torch")
    assert "nope.mp4" in one_error_line(run_cli("translate", tmp_path / "nope.mp4", "-o", tmp_path / "o.mp4", *w))
    assert "bad.mp4: not a readable video" in one_error_line(run_cli("translate", tmp_path / "bad.mp4", "-o", tmp_path / "o.mp4", *w))
    assert "input" in one_error_line(run_cli("translate", tmp_path / "in.mp4", "-o", tmp_path / "in.mp4", *w))
    assert "--overwrite" in one_error_line(run_cli("translate", tmp_path / "in.mp4", "-o", tmp_path / "taken.mp4", *w))
    assert (tmp_path / "taken.mp4").read_bytes() == b"mine"
    assert "unknown direction 'gta2mars'" in one_error_line(
        run_cli("translate", tmp_path / "in.mp4", "-o", tmp_path / "o.mp4", "--direction", "gta2mars", *w))
    assert "looks like a discriminator" in one_error_line(
        run_cli("translate", tmp_path / "in.mp4", "-o", tmp_path / "o.mp4", "--weights", tmp_path / "d.pth"))
    assert "translates gta2city, not city2gta" in one_error_line(
        run_cli("translate", tmp_path / "in.mp4", "-o", tmp_path / "o.mp4", "--direction", "city2gta", *w))
    assert not (tmp_path / "o.mp4").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.mp4", "d.pth", "g.safetensors", "in.mp4", "taken.mp4"]


def test_failed_video_leaves_nothing_that_looks_finished(tmp_path, weights, monkeypatch):
    make_clip(tmp_path / "in.mp4", frames=40, size=(64, 48))
    cfg = job(tmp_path, tmp_path / "in.mp4", tmp_path / "out.mp4", weights)
    failing = threading.Event()
    from gtacity.engine.stream import pipeline

    original = pipeline.to_frames

    def fail_at_frame_20(y, frames, *host):  # a fault injected into our own stage, half-way through
        if frames[0].index >= 20:
            failing.set()
            raise RuntimeError("simulated failure mid-video")
        return original(y, frames, *host)

    monkeypatch.setattr(pipeline, "to_frames", fail_at_frame_20)
    with pytest.raises(RuntimeError, match="mid-video"):
        translate(cfg)
    assert failing.is_set()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.safetensors", "in.mp4"]


def test_real_command_line_prints_progress_and_summary(tmp_path, weights):
    make_clip(tmp_path / "drive.mp4", frames=40, size=(64, 48), audio="aac")
    done = subprocess.run(
        [sys.executable, "-m", "gtacity", "translate", str(tmp_path / "drive.mp4"), "-o",
         str(tmp_path / "out.mp4"), "--weights", str(weights)],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "40/40" in done.stderr and "frame/s" in done.stderr  # progress bar: done/total and rate
    assert done.stdout.startswith("translated 40 frames in ") and "fps) with openvino" in done.stdout
    assert video_info(tmp_path / "out.mp4")["frames"] == 40


def test_without_weights_the_bundled_demo_generators_are_used(tmp_path):
    make_image(tmp_path / "a.png", size=(64, 40))
    for direction in ("gta2city", "city2gta"):
        report = translate(TranslateConfig(tmp_path / "a.png", tmp_path / f"{direction}.png",
                                           direction=direction, backend="torch", progress=False))
        g = report.generator
        assert (g.ngf, g.n_blocks, g.direction, g.trained_resolution) == (32, 6, direction, 128)
        assert next(iter(open_source(tmp_path / f"{direction}.png"))).image.shape == (40, 64, 3)


def test_streams_must_be_at_least_one_and_any_count_gives_the_same_video(tmp_path, weights):
    make_clip(tmp_path / "in.mp4", frames=9, size=(48, 32))
    w = ("--weights", weights, "--backend", "torch", "-q")
    line = one_error_line(run_cli("translate", tmp_path / "in.mp4", "-o", tmp_path / "o.mp4", "--streams", "0", *w))
    assert "--streams must be at least 1, got 0" in line and not (tmp_path / "o.mp4").exists()
    # Lossless (--crf 0): the decoded video is exactly what the pipeline handed the encoder. At crf 18
    # libx264 itself was seen to code the same frames differently now and then inside the pipeline
    # (packet sizes differ run to run; 1 run in ~40 here, same frames in), which says nothing of ours.
    for streams in (1, 4):
        result = run_cli("translate", tmp_path / "in.mp4", "-o", tmp_path / f"o{streams}.mp4",
                         "--streams", streams, "--batch-size", 2, "--crf", 0, *w)
        assert result.exit_code == 0, result.output
    with open_source(tmp_path / "o1.mp4") as one, open_source(tmp_path / "o4.mp4") as four:
        diffs = [int(np.abs(a.image.astype(np.int16) - b.image).max()) for a, b in zip(one, four, strict=True)]
    assert not any(diffs), f"max difference per frame, 1 vs 4 streams: {diffs}"

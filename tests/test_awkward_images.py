"""Awkward images through `gtacity translate`: TIFF, alpha, 16 bits, files cut short, frames of a
few pixels, frames too big to translate whole, memory running out. Every input is made here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from media import make_image, patches, truncate

from gtacity.checkpoint import save_generator
from gtacity.cli import cli
from gtacity.engine.backends.tiling import Tiling, infer_in_tiles, tile_starts


@pytest.fixture
def weights(tmp_path, tiny_generator):
    return save_generator(tiny_generator, tmp_path / "g.safetensors", direction="gta2city")


def reference(net, rgb: np.ndarray) -> np.ndarray:
    """The generator on the full-depth pixels (reflect-padded to a multiple of 4), same dtype out."""
    top = float(np.iinfo(rgb.dtype).max)
    h, w = rgb.shape[:2]
    padded = np.pad(rgb.astype(np.float32), ((0, -h % 4), (0, -w % 4), (0, 0)), mode="reflect")
    x = torch.from_numpy(padded).permute(2, 0, 1)[None] / (top / 2) - 1
    with torch.no_grad():
        y = net(x)[0, :, :h, :w].permute(1, 2, 0).numpy()
    return np.clip(np.rint((y + 1) * top / 2), 0, top).astype(rgb.dtype)


def translate_cli(weights, *args):
    argv = ["translate", *map(str, args), "--weights", str(weights), "--backend", "torch", "-q"]
    return CliRunner().invoke(cli, argv)


def read_unchanged(path: Path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


def rgba(height: int, width: int, dtype=np.uint8) -> np.ndarray:
    """RGBA pixels: colour patches and a transparency ramp with fully clear and opaque parts."""
    rgb = patches(width, height).astype(np.float64)
    alpha = np.tile(np.linspace(-40, 300, width), (height, 1)).clip(0, 255)[..., None]
    scale = 257 if dtype == np.uint16 else 1
    return np.rint(np.concatenate([rgb, alpha], -1) * scale).astype(dtype)


def write_rgba(path: Path, pixels: np.ndarray) -> None:
    assert cv2.imwrite(str(path), cv2.cvtColor(pixels, cv2.COLOR_RGBA2BGRA))


# ---------------------------------------------------------------- formats, alpha, depth


@pytest.mark.parametrize("name", ["shot.tif", "shot.TIFF"])
def test_tiff_is_an_image_alone_and_in_folders(tmp_path, weights, tiny_generator, name):
    image = make_image(tmp_path / "in" / name, size=(45, 30))
    make_image(tmp_path / "in" / "sub" / "b.tiff", size=(20, 12))
    result = translate_cli(weights, tmp_path / "in" / name, "-o", tmp_path / f"out_{name}")
    assert result.exit_code == 0, result.output
    out = read_unchanged(tmp_path / f"out_{name}")
    assert (tmp_path / f"out_{name}").read_bytes()[:4] == b"II*\x00"  # a TIFF, as named
    got = cv2.cvtColor(out, cv2.COLOR_BGR2RGB)
    assert np.abs(got.astype(int) - reference(tiny_generator, image)).max() <= 1

    result = translate_cli(weights, tmp_path / "in", "-o", tmp_path / "folder_out")
    assert result.exit_code == 0 and "translated 2 frames" in result.output, result.output
    assert read_unchanged(tmp_path / "folder_out" / "sub" / "b.tiff").shape == (12, 20, 3)


@pytest.mark.parametrize("suffix", [".png", ".webp", ".tif"])
def test_alpha_is_carried_through_unchanged(tmp_path, weights, tiny_generator, suffix):
    pixels = rgba(30, 41)
    write_rgba(tmp_path / f"in{suffix}", pixels)
    result = translate_cli(weights, tmp_path / f"in{suffix}", "-o", tmp_path / f"out{suffix}")
    assert result.exit_code == 0, result.output
    out = cv2.cvtColor(read_unchanged(tmp_path / f"out{suffix}"), cv2.COLOR_BGRA2RGBA)
    assert np.array_equal(out[..., 3], pixels[..., 3])
    # Lossless WebP stores other colours under fully clear pixels: translate what it stores, and
    # compare where a pixel shows.
    stored = cv2.cvtColor(read_unchanged(tmp_path / f"in{suffix}"), cv2.COLOR_BGRA2RGB)
    diff = np.abs(out[..., :3].astype(int) - reference(tiny_generator, stored))
    assert diff[pixels[..., 3] > 0].max() <= 1


def test_alpha_is_left_out_of_a_format_that_cannot_hold_it(tmp_path, weights):
    write_rgba(tmp_path / "in.png", rgba(16, 16))
    assert translate_cli(weights, tmp_path / "in.png", "-o", tmp_path / "out.jpg").exit_code == 0
    assert read_unchanged(tmp_path / "out.jpg").shape == (16, 16, 3)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_images_are_translated_from_their_full_depth_and_stay_16_bit(
    tmp_path, weights, tiny_generator, suffix
):
    # A smooth ramp whose 16-bit values fall between 8-bit levels: depth a round trip would lose.
    ramp = np.linspace(1000, 64000, 40 * 36 * 3).reshape(40, 36, 3).astype(np.uint16)
    cv2.imwrite(str(tmp_path / f"deep{suffix}"), ramp)
    result = translate_cli(weights, tmp_path / f"deep{suffix}", "-o", tmp_path / f"out{suffix}")
    assert result.exit_code == 0, result.output
    out = cv2.cvtColor(read_unchanged(tmp_path / f"out{suffix}"), cv2.COLOR_BGR2RGB)
    assert out.dtype == np.uint16 and out.shape == ramp.shape
    rgb = cv2.cvtColor(ramp, cv2.COLOR_BGR2RGB)
    assert np.abs(out.astype(int) - reference(tiny_generator, rgb)).max() <= 1
    assert (out % 257 != 0).mean() > 0.9  # not 8-bit values scaled up
    assert translate_cli(weights, tmp_path / f"deep{suffix}", "-o", tmp_path / "o.jpg").exit_code == 0
    assert read_unchanged(tmp_path / "o.jpg").dtype == np.uint8


def test_16_bit_rgba_keeps_depth_and_alpha(tmp_path, weights):
    pixels = rgba(20, 24, np.uint16)
    write_rgba(tmp_path / "in.png", pixels)
    assert translate_cli(weights, tmp_path / "in.png", "-o", tmp_path / "out.png").exit_code == 0
    out = read_unchanged(tmp_path / "out.png")
    assert out.dtype == np.uint16 and np.array_equal(out[..., 3], pixels[..., 3])


# ---------------------------------------------------------------- damaged files


@pytest.mark.parametrize("name, keep", [("cut.jpg", 0.6), ("cut.png", 0.6), ("cut.png", 0.999),
                                        ("cut.webp", 0.7), ("cut.bmp", 0.9), ("cut.tif", 0.5)])
def test_a_file_cut_short_is_an_error_naming_it_not_a_grey_half(tmp_path, weights, name, keep):
    cv2.imwrite(str(tmp_path / name), np.random.default_rng(0).integers(0, 256, (120, 160, 3), np.uint8))
    truncate(tmp_path / name, keep)
    result = translate_cli(weights, tmp_path / name, "-o", tmp_path / "out.png")
    assert result.exit_code == 1
    line = result.stderr.strip()
    assert "\n" not in line and line.startswith(f"error: {tmp_path / name}: not a readable image")
    assert "Traceback" not in result.output
    assert sorted(os.listdir(tmp_path)) == [name, "g.safetensors"]


def test_a_cut_image_in_a_folder_is_listed_as_failed_and_the_job_goes_on(tmp_path, weights):
    make_image(tmp_path / "in" / "a.jpg")
    make_image(tmp_path / "in" / "b.jpg")
    truncate(tmp_path / "in" / "b.jpg", 0.7)
    result = translate_cli(weights, tmp_path / "in", "-o", tmp_path / "out")
    assert result.exit_code == 1 and "b.jpg: not a readable image (cut short" in result.stderr
    # A folder is a bulk job: the good image is finished, the cut one listed with its reason,
    # and nothing partial is left beside them (only the job's own records).
    out = tmp_path / "out"
    assert read_unchanged(out / "a.jpg").shape == read_unchanged(tmp_path / "in" / "a.jpg").shape
    assert "b.jpg\t" in (out / "gtacity-failures.txt").read_text()
    assert set(os.listdir(out)) == {"a.jpg", "gtacity-failures.txt", ".gtacity-job"}
    assert sorted(os.listdir(tmp_path)) == ["g.safetensors", "in", "out"]


# ---------------------------------------------------------------- tiny and huge frames


def test_frames_smaller_than_the_generator_takes_keep_their_size(tmp_path, weights):
    sizes = [(1, 1), (2, 3), (4, 4), (7, 2), (5, 9)]
    for i, (w, h) in enumerate(sizes):
        make_image(tmp_path / "in" / f"{i}.png", size=(w, h), seed=i)
    result = translate_cli(weights, tmp_path / "in", "-o", tmp_path / "out")
    assert result.exit_code == 0 and f"translated {len(sizes)} frames" in result.output, result.output
    for i, (w, h) in enumerate(sizes):
        assert read_unchanged(tmp_path / "out" / f"{i}.png").shape == (h, w, 3)


def test_tiles_cover_the_frame_and_blend_back_exactly():
    """With a translation that changes nothing, tiling must give the input back; with one that
    shifts each tile's level (as InstanceNorm's per-tile statistics do), seams become ramps."""
    x = torch.rand(1, 3, 152, 232) * 2 - 1
    calls = []

    def identity(batch):
        calls.append(len(batch))
        return batch

    assert torch.allclose(infer_in_tiles(x, identity, 64, 16, 3), x, atol=1e-6)
    assert sum(calls) == len(tile_starts(152, 64, 16)) * len(tile_starts(232, 64, 16))
    assert max(calls) == 3

    flat = torch.zeros(1, 3, 64, 300)
    shift = lambda batch: torch.stack([torch.full_like(t, 0.2 * (i % 2)) for i, t in  # noqa: E731
                                       enumerate(batch)])
    blended = infer_in_tiles(flat, shift, 64, 32, 8)[0, 0, 0]
    assert blended.diff().abs().max() <= 0.2 / 32 + 1e-6  # the step spread over the 32-px overlap


def test_huge_frames_are_tiled_automatically_and_on_request(tmp_path, weights, tiny_generator):
    assert Tiling(ngf=64).tile_for(1080, 1920) is None  # 1080p stays whole
    assert Tiling(ngf=32).tile_for(6000, 9000) == 1024  # ~40 GB whole: tiled
    assert Tiling(tile=0, ngf=64).tile_for(6000, 9000) is None
    assert Tiling(tile=256, ngf=8).tile_for(200, 250) is None  # smaller than one tile
    make_image(tmp_path / "big.png", size=(150, 90))
    result = translate_cli(weights, tmp_path / "big.png", "-o", tmp_path / "out.png", "--tile", "64")
    assert result.exit_code == 0, result.output
    assert read_unchanged(tmp_path / "out.png").shape == (90, 150, 3)
    result = translate_cli(weights, tmp_path / "big.png", "-o", tmp_path / "o.png", "--tile", "10")
    assert result.exit_code == 1 and "--tile must be 0 (never tile) or at least 64" in result.stderr


# The child imports everything, then caps its address space a little above what it already uses:
# far too little to translate a 1.5 Mpx frame whole, so a real allocation fails mid-job (once
# --max-pixels lifts the limit that would refuse the frame before decoding it).
_CAPPED = """import resource, sys
import gtacity.cli, gtacity.engine.translation, gtacity.engine.backends.torch_backend
size = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (size + 2**28, size + 2**28))
sys.argv = ["gtacity", *sys.argv[1:]]
gtacity.cli.main()
"""


def test_running_out_of_memory_is_one_line(tmp_path, weights):
    image = np.zeros((1000, 1500, 3), np.uint8)
    image[..., 0] = np.arange(1500)[None] % 256
    cv2.imwrite(str(tmp_path / "big.png"), image)
    done = subprocess.run([sys.executable, "-c", _CAPPED, "translate", str(tmp_path / "big.png"),
                           "-o", str(tmp_path / "out.png"), "--weights", str(weights),
                           "--backend", "torch", "--tile", "0", "-q", "--max-pixels", "10000000"],
                          capture_output=True, text=True, timeout=300,
                          # One BLAS and one OpenMP thread: under the address-space cap, each
                          # extra thread's stack and malloc arena could exhaust the headroom
                          # before the translation does (libgomp then exits on its own, as it
                          # did on a CI runner with more cores: "Thread creation failed").
                          env={**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"})
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'big.png'}: out of memory while translating; try --tile 512 (or "
        "smaller) or --batch-size 1, or close other programs"]
    assert sorted(os.listdir(tmp_path)) == ["big.png", "g.safetensors"]


_BUGGY = """import sys
import gtacity.cli, gtacity.engine.translation
def broken(cfg):
    raise KeyError("a bug of ours")
gtacity.engine.translation.translate = broken
sys.argv = ["gtacity", *sys.argv[1:]]
gtacity.cli.main()
"""


@pytest.mark.parametrize("debug", [False, True])
def test_a_bug_of_ours_is_one_line_unless_debug(tmp_path, debug):
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((8, 8, 3), np.uint8))
    done = subprocess.run([sys.executable, "-c", _BUGGY, *(["--debug"] if debug else []), "translate",
                           str(tmp_path / "a.png"), "-o", str(tmp_path / "b.png")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    if debug:
        assert "Traceback" in done.stderr and "KeyError: 'a bug of ours'" in done.stderr
    else:
        assert done.stderr.strip().splitlines() == [
            "error: internal error (KeyError: 'a bug of ours'); run again with --debug and report "
            "the traceback"]

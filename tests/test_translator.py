"""`Translator`, frames in memory: the same pixels as `translate` on image files (PNG is lossless),
for one frame, a batch, odd and tiny sizes, tensors and tiles; the same kind out as in."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from media import make_image, patches

from gtacity.checkpoint import save_generator
from gtacity.engine import TranslateConfig, TranslateError, Translator, translate
from gtacity.engine.media.sources import read_image


@pytest.fixture
def weights(tmp_path, tiny_generator):
    return save_generator(tiny_generator, tmp_path / "g.safetensors", direction="gta2city")


def translated_file(tmp_path, weights, image_size, seed=0, **options) -> tuple[np.ndarray, np.ndarray]:
    """(input pixels, what `translate` wrote) for a PNG of ``image_size`` (width, height)."""
    name = f"{image_size[0]}x{image_size[1]}_{seed}"
    image = make_image(tmp_path / f"{name}.png", size=image_size, seed=seed)
    translate(TranslateConfig(tmp_path / f"{name}.png", tmp_path / f"{name}_city.png", weights=weights,
                              progress=False, **{"backend": "torch", **options}))
    return image, read_image(tmp_path / f"{name}_city.png")[0]


@pytest.mark.parametrize("size", [(61, 37), (1, 1), (5, 3), (7, 9), (8, 8), (64, 48)])
def test_one_frame_of_any_size_is_what_translate_writes(tmp_path, weights, size):
    image, expected = translated_file(tmp_path, weights, size)
    out = Translator(weights, backend="torch")(image)
    assert isinstance(out, np.ndarray) and out.dtype == np.uint8 and out.shape == image.shape
    np.testing.assert_array_equal(out, expected)


def test_a_batch_is_what_translate_writes_for_each_frame(tmp_path, weights):
    pairs = [translated_file(tmp_path, weights, (45, 29), seed=s) for s in range(3)]
    out = Translator(weights, backend="torch")(np.stack([image for image, _ in pairs]))
    assert out.shape == (3, 29, 45, 3)
    for got, (_, expected) in zip(out, pairs):
        np.testing.assert_array_equal(got, expected)


def test_a_tensor_comes_back_a_tensor_with_the_same_pixels(tmp_path, weights):
    pairs = [translated_file(tmp_path, weights, (33, 18), seed=s) for s in range(2)]
    translator = Translator(weights, backend="torch")
    batch = torch.from_numpy(np.stack([image for image, _ in pairs]))
    out = translator(batch)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.uint8 and out.device == batch.device
    assert tuple(out.shape) == (2, 18, 33, 3)
    for got, (_, expected) in zip(out, pairs):
        np.testing.assert_array_equal(got.numpy(), expected)
    one = translator(batch[1])  # one (H, W, 3) frame; a non-contiguous view works too
    np.testing.assert_array_equal(one.numpy(), pairs[1][1])
    flipped = batch[0].transpose(0, 1)  # (W, H, 3), a strided view
    assert not flipped.is_contiguous()
    np.testing.assert_array_equal(translator(flipped).numpy(), translator(flipped.contiguous()).numpy())


def test_openvino_fp32_matches_translate_with_openvino_fp32(tmp_path, weights):
    image, expected = translated_file(tmp_path, weights, (50, 30), backend="openvino", precision="fp32")
    translator = Translator(weights, backend="openvino", precision="fp32")
    assert (translator.backend.name, translator.backend.precision) == ("openvino", "fp32")
    np.testing.assert_array_equal(translator(image), expected)


def test_tiles_follow_translate_tiling_rules(tmp_path, weights):
    image, expected = translated_file(tmp_path, weights, (150, 130), tile=64)
    tiled = Translator(weights, backend="torch", tile=64)(image)
    np.testing.assert_array_equal(tiled, expected)
    whole = Translator(weights, backend="torch")(image)
    assert np.abs(whole.astype(int) - tiled.astype(int)).mean() > 0.1  # tiling really happened


def test_each_size_is_prepared_once_and_reused(weights):
    translator = Translator(weights, backend="torch")
    for size in [(40, 24), (40, 24), (24, 40), (40, 24)]:
        translator(patches(*size))
    assert translator.backend.builds == 2
    # A list of frames of different sizes gives a list, each of its own size.
    outs = translator([patches(9, 7), patches(40, 24), patches(3, 2)])
    assert [o.shape for o in outs] == [(7, 9, 3), (24, 40, 3), (2, 3, 3)]


def test_sixteen_bit_frames_keep_their_depth(weights):
    deep = (patches(20, 12).astype(np.uint16) * 257)
    out = Translator(weights, backend="torch")(deep)
    assert out.dtype == np.uint16 and out.shape == deep.shape and out.max() > 255


def test_no_progress_bar_unless_asked(weights, capfd):
    batch = np.stack([patches(16, 16, seed=s) for s in range(3)])
    Translator(weights, backend="torch")(batch)
    assert capfd.readouterr().err == ""
    Translator(weights, backend="torch", progress=True)(batch)
    assert "3/3" in capfd.readouterr().err


def test_the_bundled_demo_generator_by_name(tmp_path):
    translator = Translator("gta2city_demo", device="auto")
    assert translator.info.direction == "gta2city"
    out = translator(patches(32, 24))
    assert out.shape == (24, 32, 3) and out.dtype == np.uint8


@pytest.mark.parametrize("frames, words", [
    (np.zeros((8, 8, 3), np.float32), "takes uint8 (or uint16) arrays, got float32"),
    (np.zeros((8, 8), np.uint8), "got shape (8, 8)"),
    (np.zeros((8, 8, 4), np.uint8), "got shape (8, 8, 4)"),
    (torch.zeros(8, 8, 3), "takes uint8 tensors, got torch.float32"),
    ("frame.png", "a numpy array or a torch tensor, got str"),
])
def test_what_it_refuses_is_said_in_one_line(weights, frames, words):
    with pytest.raises(TranslateError) as refused:
        Translator(weights, backend="torch")(frames)
    assert words in str(refused.value) and "\n" not in str(refused.value)


def test_int8_needs_frames_to_calibrate_on(weights):
    with pytest.raises(TranslateError, match="int8 needs calibration="):
        Translator(weights, backend="openvino", precision="int8")


@pytest.mark.cuda
def test_a_cuda_tensor_stays_on_the_gpu_and_matches_translate(tmp_path, weights):
    image, expected = translated_file(tmp_path, weights, (70, 38), device="cuda")
    translator = Translator(weights, backend="torch", device="cuda")
    out = translator(torch.from_numpy(image).cuda()[None].repeat(3, 1, 1, 1))
    assert out.device.type == "cuda" and tuple(out.shape) == (3, 38, 70, 3)
    for got in out.cpu().numpy():
        np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(translator(image), expected)  # numpy in, through the host

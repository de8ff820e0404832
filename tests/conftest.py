"""Shared fixtures and the ``cuda`` marker's rule: skipped without CUDA, unless
``GTACITY_REQUIRE_CUDA=1`` asks for the skip to be a failure (so a GPU run cannot pass by skipping).
The ``tensorrt`` marker follows the same rule, needing TensorRT as well as CUDA."""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch

from gtacity.nets import ResnetGenerator, init_weights

REQUIRE_CUDA = os.environ.get("GTACITY_REQUIRE_CUDA") == "1"

# A test that hangs ends the run with every thread's stack, instead of running out CI's clock.
pytest_plugins = ["hangwatch"]

# Without CUDA the Triton kernels are tested under Triton's interpreter. Triton fixes compiled vs
# interpreted when a function is decorated, its own library's included (torchvision imports it),
# so this must be set before any test module is imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def _tensorrt_missing() -> str | None:
    if importlib.util.find_spec("tensorrt") is None:
        return "needs TensorRT"
    return None if torch.cuda.is_available() else "needs CUDA"


def pytest_collection_modifyitems(config, items):
    missing = _tensorrt_missing()
    for item in items:
        if missing and item.get_closest_marker("tensorrt") and not REQUIRE_CUDA:
            item.add_marker(pytest.mark.skip(reason=f"{missing} (GTACITY_REQUIRE_CUDA=1 makes this a failure)"))
    if torch.cuda.is_available():
        return
    for item in items:
        if "cuda" in item.keywords:
            if not REQUIRE_CUDA:
                item.add_marker(
                    pytest.mark.skip(reason="needs CUDA (GTACITY_REQUIRE_CUDA=1 makes this a failure)")
                )


@pytest.fixture(autouse=True)
def _cuda_required(request):
    if REQUIRE_CUDA and "cuda" in request.keywords and not torch.cuda.is_available():
        pytest.fail("GTACITY_REQUIRE_CUDA=1 but torch.cuda.is_available() is False")
    if REQUIRE_CUDA and request.node.get_closest_marker("tensorrt") and _tensorrt_missing():
        pytest.fail(f"GTACITY_REQUIRE_CUDA=1 but this TensorRT test {_tensorrt_missing()}")


@pytest.fixture(autouse=True, scope="session")
def _private_cache_dir(tmp_path_factory):
    """Converted models are cached on disk; the tests use their own cache, never the user's."""
    os.environ["GTACITY_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture
def tiny_generator() -> ResnetGenerator:
    """ngf 8, 2 blocks, seeded: fast enough for every CPU test."""
    torch.manual_seed(0)
    return init_weights(ResnetGenerator(ngf=8, n_blocks=2)).eval()


@pytest.fixture
def weights(tmp_path, tiny_generator):
    """The tiny generator as a gta2city generator file (modules may define their own)."""
    from gtacity.checkpoint import save_generator

    return save_generator(tiny_generator, tmp_path / "g.safetensors", direction="gta2city")

"""The pipeline's batches in flight: order, bounded memory, stage accounting, failures, CUDA streams.

Sources and sinks here are in-memory implementations of the FrameSource / FrameSink protocols (no
PyAV: the GPU machine has none), so every test runs the real pipeline, backends and threads. The
same tests run on the CPU (slots without streams) and, marked ``cuda``, on a GPU.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from gtacity.checkpoint import bundled_generator, load_generator
from gtacity.engine.backends import create_backend
from gtacity.engine.frames import Frame
from gtacity.engine.stream.convert import to_batch, to_frames
from gtacity.engine.stream.pipeline import run_pipeline
from gtacity.engine.stream.slots import SlotPool
from gtacity.engine.stream.stages import DEFAULT_STREAMS
from gtacity.images import IMAGE_EXTENSIONS, decode_rgb

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]
# Real GTA5 frames (never copied into the repository): wherever GTACITY_REAL_DATA points, else
# shared/data/real beside the checkout or beside the folder of worktrees it sits in.
REAL_DATA = next(
    (p for p in (Path(os.environ.get("GTACITY_REAL_DATA", "/nonexistent")),
                 *(Path(__file__).parents[i] / "shared/data/real" for i in (2, 3))) if p.is_dir()),
    None,
)


class MemorySource:
    """Frames made on the fly (``sizes[i % len(sizes)]`` for frame i); counts what it handed out."""

    kind = "video"
    path = Path("memory.mp4")

    def __init__(self, n: int, sizes: list[tuple[int, int]], fail_at: int | None = None):
        self.n, self.sizes, self.fail_at = n, sizes, fail_at
        self.produced = 0

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        rng = np.random.default_rng(0)
        for i in range(self.n):
            if i == self.fail_at:
                raise OSError("simulated decode failure")
            h, w = self.sizes[i % len(self.sizes)]
            self.produced += 1
            yield Frame(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), i)

    def close(self) -> None:
        pass


class MemorySink:
    """Keeps what is written; tracks the most frames that existed at once (handed out, not written)."""

    path = Path("memory-out.mp4")

    def __init__(self, source: MemorySource, delay_s: float = 0.0, fail_at: int | None = None):
        self.source, self.delay_s, self.fail_at = source, delay_s, fail_at
        self.frames: list[Frame] = []
        self.most_in_flight = 0
        self.closed = self.aborted = False

    def write(self, frame: Frame) -> None:
        if frame.index == self.fail_at:
            raise OSError("simulated encode failure")
        time.sleep(self.delay_s)
        self.most_in_flight = max(self.most_in_flight, self.source.produced - len(self.frames))
        self.frames.append(frame)

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True


def translated_one_by_one(backend, frames: list[Frame]) -> list[np.ndarray]:
    out = []
    for frame in frames:
        x = to_batch([frame], backend.device)
        backend.prepare(1, *x.shape[-2:])
        out.append(to_frames(backend.infer(x), [frame])[0].image)
    return out


def pipeline_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("gtacity-")]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("streams", [1, 3])
def test_frames_leave_in_order_with_uneven_batches(tiny_generator, device, streams):
    # 2 sizes (one odd, padded) change every few frames: batches of 3, 2, 1 and a short last one.
    sizes = [(32, 48)] * 4 + [(36, 30)] * 2
    source = MemorySource(14, sizes)
    sink = MemorySink(source)
    backend = create_backend("torch", tiny_generator, precision="fp32", device=device)
    times = run_pipeline(source, sink, backend, batch_size=3, streams=streams)

    assert [f.index for f in sink.frames] == list(range(14)) and sink.closed and not sink.aborted
    expected = translated_one_by_one(backend, list(MemorySource(14, sizes)))
    for frame, want in zip(sink.frames, expected):
        assert frame.image.shape == want.shape
        assert np.abs(frame.image.astype(int) - want.astype(int)).max() <= 1
    assert times.frames == 14 and pipeline_threads() == []


def test_frames_in_flight_stay_bounded_however_long_the_clip(tiny_generator):
    source = MemorySource(120, [(32, 32)])
    sink = MemorySink(source, delay_s=0.002)  # a slow encoder: decoding runs ahead until blocked
    backend = create_backend("torch", tiny_generator, precision="fp32", device="cpu")
    run_pipeline(source, sink, backend, batch_size=2, streams=3, queue_frames=4)
    # queue of 4 + 1 the decoder holds, a full batch + 1 the batcher holds while it waits for a slot,
    # 3 slots of 2, a batch the postprocessor hands on, queue of 4 + 1 being written
    assert len(sink.frames) == 120
    assert sink.most_in_flight <= (4 + 1) + (2 + 1) + 3 * 2 + 2 + (4 + 1)
    assert sink.most_in_flight >= 8, "the run never had several batches in flight"


def test_stage_accounting_names_the_stage_that_bounds_the_run(tiny_generator):
    backend = create_backend("torch", tiny_generator, precision="fp32", device="cpu")
    backend.prepare(2, 32, 32)
    x = torch.zeros(2, 3, 32, 32)
    calls = []
    for _ in range(3):
        start = time.perf_counter()
        backend.infer(x)
        calls.append(time.perf_counter() - start)
    # An encoder 6x slower per frame than the slowest inference call seen (the CPU is shared, and a
    # full test run's load varies: measured, not assumed; 3x flaked once under two background jobs).
    delay = max(0.01, 3 * max(calls))
    source = MemorySource(16, [(32, 32)])
    times = run_pipeline(source, MemorySink(source, delay_s=delay), backend, batch_size=2)
    assert times.bound_by == "encode" and times.busy["encode"] >= 16 * delay
    assert 0.5 < times.bound_share <= 1.0  # the other stages hide behind the encoder
    assert all(times.busy[s] > 0 for s in ("decode", "preprocess", "infer", "postprocess"))
    assert times.fps == pytest.approx(16 / times.wall)


@pytest.mark.parametrize("where", ["decode", "encode", "infer"])
def test_a_failing_stage_stops_everything_and_aborts_the_output(tiny_generator, where):
    backend = create_backend("torch", tiny_generator, precision="fp32", device="cpu")
    source = MemorySource(60, [(32, 32)], fail_at=17 if where == "decode" else None)
    sink = MemorySink(source, fail_at=17 if where == "encode" else None)
    if where == "infer":
        calls, real_infer = [], backend.infer

        def infer(x):  # the sixth batch (frames 10-11) fails inside the backend
            calls.append(x)
            if len(calls) == 6:
                raise ValueError("simulated inference failure")
            return real_infer(x)

        backend.infer = infer
    with pytest.raises((OSError, ValueError), match="simulated"):
        run_pipeline(source, sink, backend, batch_size=2)
    assert sink.aborted and not sink.closed
    assert len(sink.frames) < 60 and pipeline_threads() == []


def test_slot_pool_bounds_batches_in_flight():
    pool = SlotPool(2, torch.device("cpu"))
    first, second = pool.take(), pool.take()
    assert first.stream is None and first.staging(2, (8, 8, 3)) == (None, None)
    with pytest.raises(queue.Empty):
        pool.take(timeout=0.01)
    first.frames = [Frame(np.zeros((8, 8, 3), np.uint8), 0)]
    pool.give_back(first)
    assert pool.take(timeout=0.01) is first and first.frames == []  # the one free slot
    with first.on_stream():  # a no-op on the CPU
        assert first.wait() == {}
    with pytest.raises(ValueError, match="at least 1, got 0"):
        SlotPool(0, torch.device("cpu"))
    assert DEFAULT_STREAMS == 3


def test_staging_buffers_give_the_same_tensors_and_frames():
    # On CUDA they are pinned and the copies asynchronous; the arithmetic is the same everywhere.
    rng = np.random.default_rng(2)
    frames = [Frame(rng.integers(0, 256, (30, 37, 3), dtype=np.uint8), i) for i in range(2)]
    upload, download = (torch.full((3, 30, 37, 3), 7, dtype=torch.uint8) for _ in range(2))
    x = to_batch(frames, torch.device("cpu"), host=upload)
    assert torch.equal(x, to_batch(frames, torch.device("cpu")))
    assert tuple(x.shape) == (2, 3, 32, 40) and torch.equal(upload[2], torch.full((30, 37, 3), 7))
    out = to_frames(x, frames, download)
    for frame, back in zip(frames, out):
        assert np.array_equal(back.image, frame.image)
        assert np.shares_memory(back.image, download.numpy())  # views of the buffer, no copy


def real_or_synthetic_frames() -> tuple[list[np.ndarray], str]:
    """Three real GTA5 frames where they are at hand, else three synthetic street-like ones."""
    folder = REAL_DATA / "gta5" if REAL_DATA is not None else None
    if folder is not None and folder.is_dir():
        paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)[:3]
        return [decode_rgb(p) for p in paths], "real"
    h, w = 256, 512
    yy, xx = np.mgrid[0:h, 0:w]
    images = []
    for seed in range(3):
        rng = np.random.default_rng(seed)
        sky = np.stack([100 + 80 * yy / h, 140 + 60 * yy / h, 200 - 30 * yy / h], -1)
        road = (yy > h // 2)[..., None] * rng.integers(60, 90, 3)
        blocks = ((xx // 64 + yy // 48 + seed) % 3 == 0)[..., None] * rng.integers(0, 80, 3)
        noise = rng.normal(0, 6, (h, w, 3))
        images.append(np.clip(sky * (yy <= h // 2)[..., None] + road + blocks + noise, 0, 255).astype(np.uint8))
    return images, "synthetic"


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(float) - b.astype(float)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


@pytest.mark.cuda
def test_torch_cuda_fp16_matches_cpu_fp32_on_frames(record_property):
    net, _ = load_generator(bundled_generator("gta2city"))
    images, kind = real_or_synthetic_frames()
    record_property("frames", kind)
    cpu = create_backend("torch", net, precision="fp32", device="cpu")
    gpu = create_backend("torch", net, precision="fp16", device="cuda")
    for i, image in enumerate(images):
        frame = [Frame(image, i)]
        want, got = translated_one_by_one(cpu, frame)[0], translated_one_by_one(gpu, frame)[0]
        assert psnr(got, want) >= 35, f"{kind} frame {i}: {psnr(got, want):.1f} dB"


@pytest.mark.cuda
def test_cuda_graph_replay_equals_eager_on_every_stream(tiny_generator):
    graphs = create_backend("torch", tiny_generator, precision="fp16", device="cuda")
    eager = create_backend("torch", tiny_generator, precision="fp16", device="cuda", cuda_graphs=False)
    assert graphs.cuda_graphs and "CUDA graphs" in graphs.describe() and not eager.cuda_graphs
    for backend in (graphs, eager):
        backend.prepare(4, 64, 96)
    generator = torch.Generator().manual_seed(3)
    batches = [(torch.rand(n, 3, 64, 96, generator=generator) * 2 - 1).cuda() for n in (4, 3, 4)]
    streams = [torch.cuda.Stream() for _ in batches]
    outputs = []
    for stream, x in zip(streams, batches):  # three replays in flight at once, one per stream
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            outputs.append(graphs.infer(x))
    torch.cuda.synchronize()
    for x, out in zip(batches, outputs):
        assert out.shape == x.shape and out.dtype == torch.float32
        torch.testing.assert_close(out, eager.infer(x), rtol=0, atol=2e-3)
    assert graphs.builds == 1


@pytest.mark.cuda
def test_compiled_torch_backend_matches_eager(tiny_generator):
    compiled = create_backend("torch", tiny_generator, precision="fp16", device="cuda", compile="default")
    eager = create_backend("torch", tiny_generator, precision="fp16", device="cuda", cuda_graphs=False)
    x = (torch.rand(2, 3, 64, 64) * 2 - 1).cuda()
    for backend in (compiled, eager):
        backend.prepare(2, 64, 64)
    assert "compiled (default)" in compiled.describe()
    torch.testing.assert_close(compiled.infer(x), eager.infer(x), rtol=0, atol=5e-3)


def resident_mib() -> float:
    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))) / 1024


@pytest.mark.cuda
def test_no_host_memory_growth_over_a_long_clip(tiny_generator):
    backend = create_backend("torch", tiny_generator, precision="fp16", device="cuda")
    source = MemorySource(1500, [(128, 256)])
    rss = {}

    class Watching(MemorySink):
        def write(self, frame: Frame) -> None:
            super().write(frame)
            if frame.index in (300, 1499):  # after warm-up (graphs, pinned buffers), and at the end
                rss[frame.index] = resident_mib()
            self.frames.clear()  # keep nothing: only the pipeline's own memory is measured

    times = run_pipeline(source, Watching(source), backend, batch_size=4, streams=3)
    assert times.frames == 1500
    assert rss[1499] - rss[300] < 20, f"host memory grew {rss[1499] - rss[300]:.0f} MiB over 1200 frames"

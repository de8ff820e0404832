"""``gtacity bench``: how fast every backend runs the generator here, checked for agreement first.

::

    from gtacity.engine import BenchConfig, run_bench
    report = run_bench(BenchConfig(sizes=((512, 256),), batch_sizes=(1, 4)))
    print(report.format())

Everything is driven by the backend registry (:data:`gtacity.engine.backends.BACKENDS`): each
registered backend is run on each device type it declares, at the precisions asked for (``auto``:
the backend's own default; ``reduced``: every fp16/bf16 path it has there that the CPU runs
natively, see :mod:`gtacity.hardware`; an emulated one is listed as skipped and timed only when
named, e.g. ``--precision bf16``). A backend joins the bench by registering. Backends or devices
that cannot run here are listed with the reason.

Method. The generator is the chosen architecture with seeded random weights (speed does not depend
on the weights) or a generator file. Per configuration (backend x precision x size x batch):
``prepare`` (timed as ``build_s``: compilation, engine build, autotuning), one call whose output is
compared with torch fp32 on the CPU against :data:`TOLERANCES` (a configuration outside it is
reported and not timed), ``warmup`` more calls (``warmup_s``), then ``repeats`` timed calls:
``perf_counter`` around each call on the CPU, CUDA events after a synchronisation on a GPU.
Frames/s is ``batch / median call time``. Host memory is the process's peak resident size during
the configuration (Linux ``VmHWM``, reset per configuration through ``/proc/self/clear_refs``).
With ``e2e``, the same checks and warm-up, then one pass of the whole pipeline (``streams`` batches
in flight) over the input, bounded by ``e2e_frames`` / ``e2e_seconds``
(:mod:`gtacity.engine.measure.bench_e2e`): its frames/s, each stage's busy seconds, the stage that
bounds it and that stage's busy share of the run (``bound_share``: 1.0 = the pipeline hides every
other stage behind it). The share is measured inside the one run; a rate timed separately is not
put against it: inference timed by itself ran 2-3x slower than the same calls inside the pipeline
on a shared 2-core CPU (OpenMP's worker threads spin-wait between layers and take CPU time from
the working thread when the cores are busy; inside the pipeline they did not: benchmarks/RESULTS.md,
"bench --e2e efficiency"), so "the run's rate / its slowest stage's rate alone" came out above 100%.

The report and its JSON fields: :mod:`gtacity.engine.measure.bench_report`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, fields, replace
from pathlib import Path

import torch

from gtacity.checkpoint import bundled_generator, load_generator
from gtacity.engine.backends import Backend, BackendError, create_backend
from gtacity.engine.measure.bench_e2e import Limit, timed_pass
from gtacity.engine.measure.bench_plan import (
    DEFAULT_BATCHES,
    DEFAULT_SIZES,
    BenchConfig,
    BenchError,
    Size,
    plan,
    validate,
)
from gtacity.engine.measure.bench_report import (
    Agreement,
    BenchReport,
    E2EResult,
    HostPeak,
    ModelResult,
    Target,
    describe_disagreement,
    device_peak_mib,
    machine_info,
    matmul_rate,
    percentile,
    reset_device_peak,
    synchronize,
    time_calls,
    versions,
)
from gtacity.engine.media.sources import open_source
from gtacity.nets import SIZE_MULTIPLE, ResnetGenerator, count_macs, init_weights


def run_bench(cfg: BenchConfig, log: Callable[[str], None] = lambda line: None) -> BenchReport:
    """Check, then time, every selected backend; also writes ``cfg.json_path`` if set.

    Args:
        cfg: what to run.
        log: receives a line per step as the run goes (each takes seconds to minutes).

    Returns:
        The report. ``report.ok`` is False when a configuration disagreed with the reference; it
        is listed in ``report.agreement`` and not timed.

    Raises:
        BenchError: invalid sizes, batches, precisions or counts; an unknown backend name;
            nothing selected can run here.
        GtacityError: unreadable weights or ``e2e`` input.
    """
    validate(cfg)
    net = _generator(cfg)
    runnable, unavailable, skipped = plan(cfg)
    if not runnable:
        why = "; ".join(f"{t.backend} on {t.device}: {t.reason}" for t in unavailable + skipped)
        raise BenchError(f"nothing to run ({why})")
    settings = {**_settings(cfg), "arch": net.arch, "ngf": net.ngf, "n_blocks": net.n_blocks}
    tolerances = {k: asdict(v) for k, v in cfg.tolerances.items()}
    report = BenchReport(machine_info(), versions(), settings, tolerances)
    report.unavailable, report.skipped = unavailable, skipped
    for target in unavailable:
        log(f"unavailable: {target.backend} on {target.device}: {target.reason}")
    bench = _Bench(cfg, net, report, log)
    if cfg.e2e is None:
        bench.models(runnable)
    else:
        bench.e2e(runnable, Path(cfg.e2e))
    if report.agreement and report.ok:
        log(f"agreement: all {len(report.agreement)} configurations within tolerance")
    if cfg.json_path is not None:
        report.write_json(cfg.json_path)
    return report


def _generator(cfg: BenchConfig) -> ResnetGenerator:
    """The weights asked for; with ``e2e`` and no size, what ``translate`` would run; else random."""
    weights = cfg.weights
    if weights is None and cfg.e2e is not None and cfg.ngf is None and cfg.n_blocks is None:
        weights = bundled_generator(cfg.direction)
        if weights is None:
            raise BenchError(f"no bundled {cfg.direction} generator in this installation; pass --weights FILE")
    if weights is not None:
        return load_generator(weights)[0]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return init_weights(ResnetGenerator(cfg.ngf or 64, cfg.n_blocks or 9)).eval()


def _settings(cfg: BenchConfig) -> dict:
    skip = ("tolerances", "ngf", "n_blocks", "progress")  # in the report's own fields, or read from the weights
    values = {f.name: getattr(cfg, f.name) for f in fields(cfg) if f.name not in skip}
    values["sizes"] = [f"{w}x{h}" for w, h in cfg.sizes]
    return {k: str(v) if isinstance(v, Path) else v for k, v in values.items()}


class _Bench:
    """One run's shared state: the generator, inputs and references per size, the report."""

    def __init__(self, cfg: BenchConfig, net: ResnetGenerator, report: BenchReport,
                 log: Callable[[str], None]):
        self.cfg, self.net, self.report, self.log = cfg, net, report, log
        self.host = HostPeak()
        report.machine["host_peak_per_config"] = self.host.per_config
        self._inputs: dict[Size, tuple[torch.Tensor, torch.Tensor]] = {}

    def models(self, targets: list[Target]) -> None:
        """Time ``infer`` alone for every target x size x batch."""
        configs = {t: [(s, b) for s in self._sizes(t) for b in self._batches(t)] for t in targets}
        needs: dict[Size, int] = {}
        for size, batch in (c for cs in configs.values() for c in cs):
            needs[size] = max(needs.get(size, 0), batch)
        self._references(needs)
        for target, target_configs in configs.items():
            backend = self._backend(target)
            for size, batch in target_configs if backend else ():
                self._model_config(backend, size, batch)

    def e2e(self, targets: list[Target], path: Path) -> None:
        """Run the whole pipeline over ``path`` once per target x batch, after warm-up."""
        width, height = _first_frame_size(path)
        padded = (width + -width % SIZE_MULTIPLE, height + -height % SIZE_MULTIPLE)
        batches = {t: self._batches(t) for t in targets}
        self._references({padded: max((max(b) for b in batches.values()), default=1)})
        for target, target_batches in batches.items():
            backend = self._backend(target)
            for batch in target_batches if backend else ():
                prepared = self._prepared(backend, padded, batch)
                if prepared is not None:
                    self._e2e_config(backend, path, f"{width}x{height}", batch, *prepared)

    def _sizes(self, target: Target) -> tuple[Size, ...]:
        device_type = torch.device(target.device).type
        return self.cfg.sizes or DEFAULT_SIZES.get(device_type, DEFAULT_SIZES["cpu"])

    def _batches(self, target: Target) -> tuple[int, ...]:
        return self.cfg.batch_sizes or DEFAULT_BATCHES.get(torch.device(target.device).type, (1,))

    def _references(self, needs: dict[Size, int]) -> None:
        """Seeded inputs in [-1, 1] and torch fp32 CPU outputs, made before anything is timed."""
        for (width, height), n in needs.items():
            generator = torch.Generator().manual_seed(self.cfg.seed)
            x = torch.rand(n, 3, height, width, generator=generator) * 2 - 1  # (N, 3, H, W)
            start = time.perf_counter()
            with torch.inference_mode():
                self._inputs[(width, height)] = (x, self.net(x))
            seconds = time.perf_counter() - start
            self.log(f"reference: torch fp32 cpu, {n} x {width}x{height} in {seconds:.1f} s")

    def _backend(self, target: Target) -> Backend | None:
        start = time.perf_counter()
        try:
            backend = create_backend(target.backend, self.net, target.precision, target.device)
            if backend.needs_calibration():  # int8: on the bench's own inputs, every size
                frames = [x[i : i + 1] for x, _ in self._inputs.values() for i in range(len(x))]
                backend.calibrate(frames, progress=self.cfg.progress)
                self.log(backend.int8_check.line())
        except BackendError as e:
            self.report.unavailable.append(replace(target, reason=str(e)))
            self.log(f"unavailable: {target.backend} {target.precision} on {target.device}: {e}")
            return None
        self.log(f"{backend.describe()}: set up in {time.perf_counter() - start:.1f} s")
        return backend

    def _prepared(self, backend: Backend, size: Size, batch: int) -> tuple[float, torch.Tensor] | None:
        """Reset the memory peaks, prepare, check agreement: (build seconds, input) or None."""
        width, height = size
        self.host.reset()
        reset_device_peak(backend.device)
        start = time.perf_counter()
        backend.prepare(batch, height, width)
        build_s = time.perf_counter() - start
        x_cpu, ref = self._inputs[size]
        x = x_cpu[:batch].to(backend.device)
        diff = (backend.infer(x).float().cpu() - ref[:batch]).abs()
        cuda_fp32 = backend.device.type == "cuda" and backend.precision == "fp32"
        key = "tf32" if cuda_fp32 else backend.precision
        if key not in self.cfg.tolerances:
            has = ", ".join(self.cfg.tolerances)
            raise BenchError(f"no {key} tolerance in the table (it has {has})")
        tol = self.cfg.tolerances[key]
        max_abs, mean_abs = diff.max().item(), diff.mean().item()
        agreement = Agreement(
            backend.name, str(backend.device), backend.precision, f"{width}x{height}", batch,
            max_abs, mean_abs, f"{key}: max {tol.max_abs:g}, mean {tol.mean_abs:g}",
            ok=max_abs <= tol.max_abs and mean_abs <= tol.mean_abs,
        )
        self.report.agreement.append(agreement)
        if not agreement.ok:
            self.log(f"DISAGREES, not timed: {describe_disagreement(agreement)}")
            return None
        return build_s, x

    def _warm_up(self, backend: Backend, x: torch.Tensor) -> float:
        start = time.perf_counter()
        for _ in range(self.cfg.warmup):
            backend.infer(x)
        synchronize(backend.device)
        return time.perf_counter() - start

    def _model_config(self, backend: Backend, size: Size, batch: int) -> None:
        # Measured before the peaks are reset: the matmul's buffers are not the model's.
        rate = matmul_rate(backend.device, backend.precision)
        if rate is not None:
            self.report.machine.setdefault("matmul_tflops", {})[rate[0]] = rate[1]
        prepared = self._prepared(backend, size, batch)
        if prepared is None:
            return
        build_s, x = prepared
        warmup_s = self._warm_up(backend, x)
        ms = [1000 * s / batch for s in time_calls(backend, x, self.cfg.repeats, self.cfg.budget_s)]
        p50 = percentile(ms, 50)
        gmacs = count_macs(self.net.ngf, self.net.n_blocks, size[1], size[0], arch=self.net.arch,
                           upsample=self.net.upsample) / 1e9
        result = ModelResult(
            backend.name, str(backend.device), backend.precision, backend.describe(),
            f"{size[0]}x{size[1]}", batch, fps=1000 / p50, ms_per_frame_p50=p50,
            ms_per_frame_p95=percentile(ms, 95), repeats=len(ms), build_s=build_s,
            warmup_s=warmup_s, peak_host_mib=self.host.peak_mib(),
            peak_device_mib=device_peak_mib(backend.device), gmacs_per_frame=gmacs,
            gmac_per_s=gmacs * 1000 / p50,
            matmul_share=None if rate is None else gmacs * 2 / p50 / rate[1],  # GFLOP/ms = TFLOP/s
        )
        self.report.results.append(result)
        self.log(f"{backend.describe()} {result.size} batch {batch}: {result.fps:.2f} frames/s")

    def _e2e_config(self, backend: Backend, path: Path, size: str, batch: int, build_s: float,
                    x: torch.Tensor) -> None:
        """One pipeline pass within the frame and time limits, after the warm-up calls."""
        self._warm_up(backend, x)
        if backend.device.type == "cuda":
            # An untimed pass over the first batches first: on a GPU the first batch of a pass pays
            # one-time costs the timed pass must not (the pixel kernels' Triton compilation, a CUDA
            # graph per stream); measured on an H200, they cut a timed pass short at 25 of 300 frames.
            warm = Limit(batch * max(self.cfg.streams or 4, 4), None)
            timed_pass(backend, path, batch, self.cfg.streams, warm, progress=False)
        limit = Limit(self.cfg.e2e_frames, self.cfg.e2e_seconds)
        times, input_frames = timed_pass(backend, path, batch, self.cfg.streams, limit, self.cfg.progress)
        result = E2EResult(
            backend.name, str(backend.device), backend.precision, backend.describe(), size, batch,
            frames=times.frames, input_frames=input_frames, stopped_by=limit.stopped_by,
            wall_s=times.wall, fps=times.fps, stage_s=dict(times.busy), bound_by=times.bound_by,
            bound_share=times.bound_share, build_s=build_s, peak_host_mib=self.host.peak_mib(),
            peak_device_mib=device_peak_mib(backend.device), streams=times.streams,
        )
        self.report.e2e.append(result)
        stopped = f" (stopped by {limit.stopped_by})" if limit.stopped_by else ""
        self.log(f"e2e {backend.describe()} batch {batch}: {result.frames} of {input_frames} frames{stopped}, "
                 f"{result.fps:.2f} frames/s, bound by {result.bound_by}, busy {result.bound_share:.0%} "
                 "of the run")


def _first_frame_size(path: Path) -> Size:
    with open_source(path) as source:
        frame = next(iter(source), None)
    if frame is None:
        raise BenchError(f"{path}: no frame to translate")
    height, width = frame.image.shape[:2]
    return width, height

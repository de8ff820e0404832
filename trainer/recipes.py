"""Named training recipes, and how long a run will take: what a CPU user needs to hear at the start.

The paper's recipe (ngf 64, 9 blocks, 256 px crops, 200 epochs) is sized for a GPU: on a 2-core CPU
a step takes 20-27 s, so a run lasts days. ``cpu-demo`` is the recipe of the bundled demo generators'
main run (``gtacity/models/MODEL_CARD.md``, section "Training": bilinear decoders, blurpool
discriminators, the phase grid term, crops of frames scaled to 384-768 px), about 0.5 s a step on
an idle 2-core AMD EPYC with AVX512-BF16.
"""

from __future__ import annotations

import time
from types import MappingProxyType

# name -> `gtacity train` option (its Python name) -> value; exactly the model card's command,
# apart from the data and run folders (tests/test_recipes.py reads the card and compares).
RECIPES = MappingProxyType({
    "cpu-demo": MappingProxyType({
        "ngf": 32, "n_blocks": 6, "preprocess": "scale_width_and_crop", "load_size": 384, "load_size_max": 768,
        "crop_size": 128, "epochs": 64, "epochs_decay": 64, "workers": 1, "upsample": "bilinear",
        "lambda_grid": 10.0, "grid_term": "phase", "d_antialias": "blurpool", "checkpoint_every": 125,
        "sample_every": 250, "log_every": 25,
    }),
})
CPU_RECIPE = "cpu-demo"


def cpu_advice(ngf: int, n_blocks: int, crop_size: int) -> str | None:
    """The line a CPU run prints at its start, or None where the run is already CPU-sized."""
    recipe = RECIPES[CPU_RECIPE]
    if (ngf, n_blocks, crop_size) == (recipe["ngf"], recipe["n_blocks"], recipe["crop_size"]):
        return None
    return (f"training on the CPU: ngf {ngf}, {n_blocks} blocks, {crop_size} px crops is a GPU-sized recipe "
            f"(the paper's took 20-27 s a step on a 2-core AVX2 CPU); --recipe {CPU_RECIPE} is the CPU-sized one the "
            "bundled demo's main run used (ngf 32, 6 blocks, 128 px crops; about 0.5 s a step on 2 idle "
            "AVX512-BF16 cores, see gtacity/models/MODEL_CARD.md)")


def describe_duration(seconds: float) -> str:
    """``"3 h 12 min"``, ``"4 min 10 s"``, ``"12 s"``."""
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


class Pace:
    """Measures the first steps of a run (after one warm-up step) and says what the whole will take.

    ``step_done()`` after every step returns the line to print once, when the measured steps are in:
    ``"measured 2.31 s a step (steps 2-4): 1,234 steps left, about 47 min 30 s"``.
    """

    def __init__(self, start_step: int, total: int, measured: int = 3):
        self._first, self._total, self._measured = start_step, total, measured
        self._step = start_step
        self._clock: float | None = None
        self.seconds_per_step: float | None = None

    def step_done(self) -> str | None:
        self._step += 1
        done = self._step - self._first
        if done == 1:  # the first step pays start-up costs (allocations, kernels, workers): not measured
            self._clock = time.perf_counter()
            return None
        if done != 1 + self._measured or self._clock is None:
            return None
        self.seconds_per_step = (time.perf_counter() - self._clock) / self._measured
        left = self._total - self._step
        return (f"measured {self.seconds_per_step:.2f} s a step (steps {self._first + 2}-{self._step}): "
                f"{left:,} steps left, about {describe_duration(left * self.seconds_per_step)}")

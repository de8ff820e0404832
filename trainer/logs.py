"""What a run leaves to read: printed config, ``metrics.jsonl``, TensorBoard scalars and sample grids.

``metrics.jsonl`` has one JSON object per logged step with every loss term by name
(``G_gta2city``, ``cycle_gta``, ``D_city``, ...), the step, epoch and learning rate, so a run can be
plotted without TensorBoard; a training run adds, at each sample step, a record of how much grid
its generators add to whole training frames (``artifacts/gta2city``, ``artifacts/city2gta``:
``trainer/gridwatch.py``). Sample grids show, per row, real -> translated -> reconstructed for
a fixed set of images: GTA5 rows first, then Cityscapes rows.

A run that resumes from the checkpoint of step N does again the steps after N that it had logged
before it stopped, so at start both logs forget them: ``metrics.jsonl`` keeps its records up to
step N and TensorBoard purges its events after N. Each step is then recorded once.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from torchvision.utils import make_grid, save_image
from tqdm import tqdm

from gtacity.files import write_json, written_whole


class RunLogger:
    """Writes a run's logs; a disabled logger (ranks other than 0) does nothing."""

    def __init__(self, run_dir: Path, enabled: bool = True):
        self.run_dir, self.enabled = run_dir, enabled
        self._writer = None
        self._t0 = time.perf_counter()

    def start(self, config: dict, resumed_at: int | None, device: str, precision, command: str = "train") -> None:
        """Print the config and where the run starts (as ``gtacity <command>``); write ``config.json``."""
        if not self.enabled:
            return
        from torch.utils.tensorboard import SummaryWriter

        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_json(self.run_dir / "config.json", config, sort_keys=True)
        start = resumed_at or 0
        self._keep_records_up_to(start)
        self._writer = SummaryWriter(str(self.run_dir), purge_step=start + 1)
        amp = "fp32" if precision.dtype is None else str(precision.dtype).removeprefix("torch.")
        where = f"resuming at step {resumed_at}" if resumed_at is not None else "starting"
        tqdm.write(f"gtacity {command}: {where}; device {device}, autocast {amp}; run folder {self.run_dir}")
        tqdm.write(json.dumps(config, indent=2, sort_keys=True))

    def _keep_records_up_to(self, step: int) -> None:
        """Drop the ``metrics.jsonl`` records after ``step`` (and a line torn by a kill)."""
        path = self.run_dir / "metrics.jsonl"
        if not path.is_file():
            return
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        kept = [line for line in lines if (n := _step_of(line)) is not None and n <= step]
        if len(kept) < len(lines):
            with written_whole(path) as partial:
                partial.write_text("".join(kept), encoding="utf-8")

    def scalars(self, step: int, epoch: int, lr: float, losses: dict[str, torch.Tensor]) -> dict[str, float]:
        """Log every loss term at ``step``; returns them as floats."""
        values = {k: float(v) for k, v in losses.items()}
        if self.enabled:
            record = {"step": step, "epoch": epoch, "lr": lr, **values,
                      "elapsed_s": round(time.perf_counter() - self._t0, 2)}
            with open(self.run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
            for k, v in values.items():
                self._writer.add_scalar(f"loss/{k}", v, step)
            self._writer.add_scalar("lr", lr, step)
        return values

    def results(self, step: int, values: dict[str, float], prefix: str = "val") -> None:
        """Scores measured on the side (held-out ``val/miou``, training's ``artifacts/gta2city``, ...):
        TensorBoard and ``metrics.jsonl``, one record per call;
        may be called after :meth:`close` (or without :meth:`start`): the TensorBoard file it then
        opens is closed again before it returns, its writer thread with it."""
        if not self.enabled:
            return
        from torch.utils.tensorboard import SummaryWriter

        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"step": step, **{f"{prefix}/{k}": v for k, v in values.items()}}) + "\n")
        writer = self._writer or SummaryWriter(str(self.run_dir))
        try:
            for k, v in values.items():
                writer.add_scalar(f"{prefix}/{k}", v, step)
        finally:
            if writer is self._writer:
                writer.flush()
            else:
                writer.close()

    @torch.no_grad()
    def samples(self, step: int, model, batch: dict[str, torch.Tensor], precision) -> Path | None:
        """Translate the fixed sample images both ways; save ``samples/step_XXXXXXXX.png``."""
        if not self.enabled:
            return None
        G, F = model.G_gta2city, model.G_city2gta
        with precision.autocast():
            fake_city = G(batch["gta"])
            fake_gta = F(batch["city"])
            rows = [(batch["gta"], fake_city, F(fake_city)), (batch["city"], fake_gta, G(fake_gta))]
        # (B * 3 columns per row) images, interleaved real | translated | reconstructed
        return self.grid(step, torch.cat([torch.stack(r, 1).flatten(0, 1) for r in rows]), columns=3)

    def grid(self, step: int, images: torch.Tensor, columns: int) -> Path | None:
        """Save ``(N, 3, H, W)`` images in [-1, 1] as ``samples/step_XXXXXXXX.png`` and in TensorBoard."""
        if not self.enabled:
            return None
        grid = make_grid(images.float().clamp(-1, 1) * 0.5 + 0.5, nrow=columns, padding=2)
        path = self.run_dir / "samples" / f"step_{step:08d}.png"
        with written_whole(path) as partial:
            save_image(grid, partial)
        self._writer.add_image("samples", grid, step)
        return path

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _step_of(line: str) -> int | None:
    """The step of one ``metrics.jsonl`` record; None for a line that is not one (torn by a kill)."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    step = record.get("step") if isinstance(record, dict) else None
    return step if isinstance(step, int) and line.endswith("\n") else None

"""Old vs new demo generator: the checkerboard check and before/after grids.

For each ``--pair DIRECTION OLD NEW`` (generator files or bundled names), on each frame of
``--frames`` folders (scaled to ``--width`` px wide, height cut to a multiple of 4) and on
``--synthetic`` frames of gtacity's own demo clip (gtacity.democlip, what the Quick start shows):

- the artifact score of each translation: its period-2/period-4 spectral peaks over its input's
  (the realism branch's ``gtacity/artifacts.py``; about 1 = no grid, over 2 = visible);
- a grid PNG, one row per frame: input | old | new, then 4x nearest zooms of the centre of old and
  new (where a checkerboard shows).

Torch fp32 on the CPU, batch 1. Real frames must stay out of the repository (data README): write
their grids outside it (``--grids``); the synthetic grids may go under docs/.

    python benchmarks/demo_compare.py --pair gta2city gta2city_demo NEW.safetensors \
        --frames HELDOUT_GTA --width 512 --grids /work/runs/demo_compare --json out.json
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import sys
import tempfile
from pathlib import Path

import av
import cv2
import numpy as np
import torch

from gtacity.checkpoint import load_generator
from gtacity.democlip import write_demo_clip
from gtacity.files import written_whole
from gtacity.images import decode_rgb

ZOOM, CROP = 4, 64


def artifacts_module(path: str | None):
    """``gtacity/artifacts.py``: the package's once merged, else the file at ``path``."""
    try:
        return importlib.import_module("gtacity.artifacts")
    except ImportError:
        if path is None:
            raise SystemExit("no gtacity.artifacts here: pass --artifacts PATH/TO/artifacts.py")
        spec = importlib.util.spec_from_file_location("artifacts", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules["artifacts"] = module  # dataclasses look their module up while the file runs
        spec.loader.exec_module(module)
        return module


def scaled(image: np.ndarray, width: int) -> np.ndarray:
    h, w = image.shape[:2]
    height = max(4, round(h * width / w) // 4 * 4)
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def translate(net: torch.nn.Module, image: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float().div(127.5).sub(1)
    with torch.no_grad():
        y = net(x)[0].clamp(-1, 1).add(1).mul(127.5).round()
    return y.permute(1, 2, 0).to(torch.uint8).numpy()


def synthetic_frames(count: int, width: int) -> list[tuple[str, np.ndarray]]:
    """Frames spread over gtacity's demo clip (rendered to a temporary file, decoded back)."""
    with tempfile.TemporaryDirectory() as tmp:
        clip = write_demo_clip(Path(tmp) / "demo.mp4", seconds=6.0, size=(width, width * 9 // 16 // 2 * 2))
        with av.open(str(clip)) as container:
            decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    picks = np.linspace(0, len(decoded) - 1, count + 2)[1:-1].round().astype(int)
    return [(f"democlip_{i:03d}", scaled(decoded[i], width)) for i in picks]


def grid(rows: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> np.ndarray:
    """input | old | new | old zoom | new zoom, one row per frame, 4 px gaps."""
    lines = []
    for source, old, new in rows:
        h, w = source.shape[:2]
        y, x = (h - CROP) // 2, (w - CROP) // 2
        zooms = [cv2.resize(img[y:y + CROP, x:x + CROP], (CROP * ZOOM, CROP * ZOOM),
                            interpolation=cv2.INTER_NEAREST) for img in (old, new)]
        zooms = [np.pad(z, ((0, max(0, h - z.shape[0])), (0, 0), (0, 0)), constant_values=255)[:h] for z in zooms]
        parts = [source, old, new, *zooms]
        gap = np.full((h, 4, 3), 255, np.uint8)
        lines.append(np.concatenate([p for part in parts for p in (part, gap)][:-1], axis=1))
    width = max(line.shape[1] for line in lines)
    lines = [np.pad(line, ((0, 4), (0, width - line.shape[1]), (0, 0)), constant_values=255) for line in lines]
    return np.concatenate(lines)[:-4]


def compare(direction: str, old_path: str, new_path: str, frames: list[tuple[str, np.ndarray]],
            artifacts, grid_path: Path | None) -> dict:
    old, _ = load_generator(old_path, direction=direction)
    new, _ = load_generator(new_path, direction=direction)
    per_frame, rows = [], []
    for name, image in frames:
        outs = {"old": translate(old, image), "new": translate(new, image)}
        scores = {k: artifacts.artifact_score(image, v) for k, v in outs.items()}
        per_frame.append({"frame": name, "size": list(image.shape[1::-1]),
                          **{k: {"score": s.score, "output_peaks": s.output_peaks, "input_peaks": s.input_peaks}
                             for k, s in scores.items()}})
        rows.append((image, outs["old"], outs["new"]))
    if grid_path is not None:
        with written_whole(grid_path) as partial:
            ok, data = cv2.imencode(".png", cv2.cvtColor(grid(rows), cv2.COLOR_RGB2BGR))
            partial.write_bytes(data.tobytes())
    summary = {k: artifacts.ArtifactSummary.of([artifacts.score_from(f[k]["input_peaks"], f[k]["output_peaks"])
                                                for f in per_frame]).to_dict() for k in ("old", "new")}
    return {"direction": direction, "old": str(old_path), "new": str(new_path), "frames": per_frame,
            "summary": summary, "grid": str(grid_path) if grid_path else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pair", nargs=3, action="append", required=True, metavar=("DIRECTION", "OLD", "NEW"))
    parser.add_argument("--frames", action="append", default=[], help="folder of real frames, per --pair (same order)")
    parser.add_argument("--synthetic", type=int, default=0, help="also this many frames of the demo clip")
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--grids", type=Path, help="folder for the real frames' grid PNGs (outside the repo)")
    parser.add_argument("--synthetic-grids", type=Path, help="folder for the demo clip's grid PNGs (docs/ is fine)")
    parser.add_argument("--artifacts", help="path of artifacts.py where gtacity.artifacts is missing")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    artifacts = artifacts_module(args.artifacts)
    results = []
    for i, (direction, old, new) in enumerate(args.pair):
        if i < len(args.frames):
            files = sorted(p for p in Path(args.frames[i]).iterdir() if p.is_file())
            frames = [(p.stem, scaled(decode_rgb(p), args.width)) for p in files]
            grid_path = args.grids / f"{direction}_{args.width}.png" if args.grids else None
            results.append({"set": "real", "width": args.width,
                            **compare(direction, old, new, frames, artifacts, grid_path)})
        if args.synthetic:
            grid_path = args.synthetic_grids / f"{direction}_democlip.png" if args.synthetic_grids else None
            results.append({"set": "democlip", "width": args.width, **compare(
                direction, old, new, synthetic_frames(args.synthetic, args.width), artifacts, grid_path)})
    for r in results:
        for k in ("old", "new"):
            s = r["summary"][k]
            print(f"{r['direction']:9} {r['set']:8} {r['width']:5} {k:3}  mean {s['mean']:6.2f}x  worst "
                  f"{s['worst']:6.2f}x  output peaks {s['output_peaks']:6.1f}  ({s['frames']} frames)")
    if args.json:
        with written_whole(args.json) as partial:
            partial.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

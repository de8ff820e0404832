"""How much random damage the video source reports: overwrite N bytes at evenly spread places of a clip
and compare what decodes with the clean decode.

    python benchmarks/damage_scan.py drive.mp4 --places 59 --bytes 2000

Each place is one trial: "reported" (the source's damage report is not empty), "silent" (frames
decode differently from the clean file but nothing is reported: damage the decoder did not notice)
or "harmless" (nothing changed). Random bytes are seeded by the place, so a rerun gives the same
files; with frame threads, whether a corrupt flag reaches a frame can vary from run to run.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from gtacity.engine.media.sources import SourceError, open_source


def decode(path: Path):
    with open_source(path) as source:
        return [frame.image for frame in source], source.damage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clip", type=Path)
    parser.add_argument("--places", type=int, default=59)
    parser.add_argument("--bytes", type=int, default=2000)
    args = parser.parse_args()
    clean = args.clip.read_bytes()
    reference, _ = decode(args.clip)
    counts = {"reported": 0, "silent": 0, "harmless": 0, "unreadable": 0}
    with tempfile.TemporaryDirectory() as folder:
        damaged = Path(folder) / f"damaged{args.clip.suffix}"
        for place in range(1, args.places + 1):
            data = bytearray(clean)
            at = len(data) * place // (args.places + 1)
            data[at:at + args.bytes] = np.random.default_rng(place).bytes(args.bytes)
            damaged.write_bytes(bytes(data))
            try:
                frames, damage = decode(damaged)
            except SourceError:
                counts["unreadable"] += 1
                continue
            changed = len(frames) != len(reference) or any(
                np.abs(a.astype(int) - b).mean() > 0.5 for a, b in zip(frames, reference))
            kind = "reported" if damage else "silent" if changed else "harmless"
            counts[kind] += 1
            if kind == "silent":
                print(f"silent: {args.bytes} bytes at byte {at}")
    print(", ".join(f"{kind} {count}" for kind, count in counts.items()), f"of {args.places} places")


if __name__ == "__main__":
    main()

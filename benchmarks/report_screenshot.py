"""Screenshot a ``gtacity eval report`` page in headless Chromium, checked as the test checks it.

Opens the page from disk over the DevTools pipe (``tests/chromium.py``), refuses to go on if an
image failed to load or the console shows an error, and writes the whole page scaled to
``--width`` pixels (a derived picture: it may show dataset frames, so say under which terms)::

    python benchmarks/report_screenshot.py report.html docs/eval_report.png --width 800
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from chromium import Chromium


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("page")
    parser.add_argument("png")
    parser.add_argument("--viewport", type=int, default=1200, help="browser width in CSS pixels")
    parser.add_argument("--width", type=int, default=800, help="width of the PNG written")
    parser.add_argument("--max-height", type=int, default=None, help="cut the PNG at this height")
    args = parser.parse_args()
    with Chromium(args.viewport, 900) as browser:
        seen = browser.check(args.page)
    broken = [i["alt"] for i in seen.images if not (i["complete"] and i["width"] > 0)]
    if broken or seen.errors:
        sys.exit(f"{args.page}: images not loaded {broken}, console errors {seen.errors}")
    shot = cv2.imdecode(np.frombuffer(seen.screenshot, np.uint8), cv2.IMREAD_COLOR)
    h, w = shot.shape[:2]
    shot = cv2.resize(shot, (args.width, round(h * args.width / w)), interpolation=cv2.INTER_AREA)
    if args.max_height:
        shot = shot[: args.max_height]
    # 256 colours: a third of the bytes, and text and charts stay sharp
    Image.fromarray(shot[:, :, ::-1]).quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
        args.png, optimize=True)
    print(f"{len(seen.images)} images loaded, no console error; {shot.shape[1]}x{shot.shape[0]} -> {args.png}")


if __name__ == "__main__":
    main()

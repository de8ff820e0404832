"""The segmentation part of the HTML report: a result of ``gtacity eval miou --json`` or of
``gtacity eval segmentation`` (its ``segmentation.json`` or ``--json``), as a class IoU table.

Both JSONs are read as data (never imported code): ``eval miou`` writes ``miou``, ``classes``
{official class name: IoU or null}, ``category_miou``, ``pixel_accuracy``, ``fwiou``, ``n_images``;
``eval segmentation`` writes ``kind: "segmentation"``, its ``recipe``, ``seed``, ``val`` and those
scores under ``train`` and, with ``--compare``, under ``compare``: the page then shows both
columns and their difference per class (the translation's gain in IoU points).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from html import escape
from pathlib import Path

from gtacity.errors import GtacityError

_SUMMARY = (("mIoU", "miou"), ("category mIoU", "category_miou"), ("pixel accuracy", "pixel_accuracy"),
            ("fwIoU", "fwiou"))


class SegmentationFileError(GtacityError):
    """A ``--segmentation`` file that is not a result of ``gtacity eval miou`` or ``eval segmentation``."""


@dataclass(frozen=True)
class SegColumn:
    """One segmenter's scores (IoUs in 0..1, NaN where the JSON has null)."""

    name: str
    images: str
    classes: dict[str, float]
    summary: dict[str, float]
    n_images: int


@dataclass(frozen=True)
class Segmentation:
    """What the page shows of a segmentation result."""

    source: str
    heading: str
    columns: tuple[SegColumn, ...]


def read_segmentation(path: str | Path) -> Segmentation:
    """Read and check a segmentation result JSON.

    Raises:
        SegmentationFileError: missing, not JSON, or without the scores those commands write.
    """
    path = Path(path)
    what = "; pass the JSON of gtacity eval miou --json or gtacity eval segmentation"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SegmentationFileError(f"{path}: no such file{what}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SegmentationFileError(f"{path}: not readable JSON ({type(e).__name__}){what}") from None
    if isinstance(data, dict) and data.get("kind") == "segmentation":
        recipe = data.get("recipe") if isinstance(data.get("recipe"), dict) else {}
        runs = [("--train", data.get("train")), ("--compare", data.get("compare"))]
        columns = tuple(_column(path, name, run, what) for name, run in runs if run is not None)
        train = data.get("train") if isinstance(data.get("train"), dict) else {}
        heading = (f"segmenter {recipe.get('name', '?')}, {train.get('steps', '?')} steps, seed {data.get('seed', '?')},"
                   f" {train.get('weights_origin', '?')}; scored on {data.get('val', '?')}")
        return Segmentation(str(path), heading, columns)
    return Segmentation(str(path), "predictions scored by gtacity eval miou", (_column(path, "IoU", data, what),))


def _column(path: Path, name: str, run, what: str) -> SegColumn:
    if not isinstance(run, dict) or not isinstance(run.get("classes"), dict) or not run["classes"]:
        raise SegmentationFileError(f"{path}: no per-class IoUs ('classes'){what}")
    classes = {str(k): _value(path, v, what) for k, v in run["classes"].items()}
    summary = {label: _value(path, run.get(key), what) for label, key in _SUMMARY}
    n = run.get("n_images", 0)
    return SegColumn(name, str(run.get("images", "")), classes, summary, n if isinstance(n, int) else 0)


def _value(path: Path, v, what: str) -> float:
    if v is None:
        return math.nan
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise SegmentationFileError(f"{path}: an IoU that is not a number ({str(v)[:40]!r}){what}")
    return float(v)


def _pct(v: float) -> str:
    return "n/a" if math.isnan(v) else f"{100 * v:.1f}"


def _bar(v: float) -> str:
    """A cell's IoU as a bar behind its number (CSS width: nothing to load)."""
    width = 0 if math.isnan(v) else max(0.0, min(100.0, 100 * v))
    return f'<td class="num"><span class="bar" style="width:{width:.0f}%"></span>{_pct(v)}</td>'


def render_segmentation(seg: Segmentation) -> str:
    """The section's HTML: heading, one IoU column per segmenter, their difference when two."""
    cols = seg.columns
    two = len(cols) == 2
    head = "".join(f"<th>{escape(c.name)}<br><small>{escape(c.images)}</small></th>" for c in cols)
    rows = []
    names = list(cols[0].classes) + [k for c in cols[1:] for k in c.classes if k not in cols[0].classes]
    for label, values in [(n, [c.classes.get(n, math.nan) for c in cols]) for n in names] + [
            (label, [c.summary[label] for c in cols]) for label, _key in _SUMMARY]:
        cells = "".join(_bar(v) for v in values)
        if two:
            diff = values[0] - values[1]
            sign = "" if math.isnan(diff) else ("pos" if diff > 0 else "neg" if diff < 0 else "")
            cells += f'<td class="num {sign}">{"n/a" if math.isnan(diff) else f"{100 * diff:+.1f}"}</td>'
        cls = ' class="sum"' if label in dict(_SUMMARY) else ""
        rows.append(f"<tr{cls}><th>{escape(label)}</th>{cells}</tr>")
    diff_head = "<th>difference<br><small>IoU points</small></th>" if two else ""
    return (f'<section id="segmentation"><h2>Segmentation</h2><p>{escape(seg.heading)} '
            f"({cols[0].n_images} images scored; from <code>{escape(seg.source)}</code>). IoU in percent, "
            f"official Cityscapes classes.</p><table class=\"seg\"><tr><th>class</th>{head}{diff_head}</tr>"
            f"{''.join(rows)}</table></section>")

"""The HTML of ``gtacity eval report``: what a page holds (:class:`PageData`) and how it is written.

One file: images are ``data:`` URIs, charts inline SVG, styles inline, no script. The
Content-Security-Policy in its head lets the browser load nothing but those ``data:`` images, so a
page that tried to fetch anything would show it as an error in the console. Every string that
comes from the user (paths, names, the segmentation JSON) is escaped.
"""

from __future__ import annotations

import base64
import math
import time
from dataclasses import dataclass, replace
from html import escape

import cv2
import numpy as np

from gtacity import __version__
from gtacity.artifacts import ArtifactSummary
from gtacity.engine.measure.flicker import FlickerReport
from gtacity.engine.measure.realism import Distances
from gtacity.engine.measure.report_charts import FLOOR, PALETTE, Series, line_chart
from gtacity.engine.measure.report_segmentation import Segmentation, render_segmentation

_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#222;max-width:1500px}
h1{font-size:22px;margin:0 0 6px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ccc}
h3{font-size:15px;margin:18px 0 6px}code,small{color:#555}table{border-collapse:collapse;margin:6px 0}
th,td{padding:3px 8px;border-bottom:1px solid #e4e4e4;text-align:left;vertical-align:top}
td.num{text-align:right;font-variant-numeric:tabular-nums;position:relative;min-width:56px}
tr.best td,tr.best th{background:#eaf4ea;font-weight:600}tr.base td,tr.base th{color:#666}
tr.sum th,tr.sum td{border-top:2px solid #bbb}.pos{color:#1a7f37}.neg{color:#b42318}
.bar{position:absolute;left:0;top:3px;bottom:3px;background:#dbe9f6;z-index:-1}
table.frames img{display:block;background:#eee}table.frames img.detail{image-rendering:pixelated;display:inline-block;margin-right:4px}
td.details{white-space:nowrap}
.charts{display:flex;flex-wrap:wrap;gap:12px}svg.chart{font:11px system-ui,sans-serif;background:#fafafa}
svg.chart .t{font-weight:600;font-size:12px}svg.chart .g{stroke:#e2e2e2}svg.chart .m{stroke:#333;stroke-dasharray:4 3}
.note{color:#8a5300}
"""


@dataclass(frozen=True)
class Sample:
    """One shown frame through one generator (images as ``data:`` URIs)."""

    index: int
    input: str
    translation: str
    cycle: str
    input_detail: str
    translation_detail: str
    detail_width: int
    artifact: float
    cycle_psnr: float


@dataclass(frozen=True)
class Entry:
    """One generator (a file, or a run's checkpoint) and what was measured of it."""

    label: str
    path: str
    back: str
    distances: Distances
    artifacts: ArtifactSummary | None
    best: bool
    step: int | None = None
    samples: tuple[Sample, ...] = ()

    def marked_best(self) -> Entry:
        return replace(self, best=True)

    def with_samples(self, samples: tuple[Sample, ...]) -> Entry:
        return replace(self, samples=samples)


@dataclass(frozen=True)
class PageData:
    """Everything the page shows."""

    title: str
    images: str
    real: str
    n_real: int
    network: str
    standard: bool
    entries: tuple[Entry, ...]
    baseline: Distances
    notes: tuple[str, ...]
    flicker: tuple[tuple[str, FlickerReport], ...]
    segmentation: Segmentation | None
    is_run: bool
    video: str | None


def image_uri(image: np.ndarray, width: int | None, lossless: bool = False) -> str:
    """An RGB frame as a ``data:`` URI: JPEG (quality 90) scaled to ``width``, or PNG as it is."""
    if image.dtype == np.uint16:
        image = np.round(image / 257.0).astype(np.uint8)
    h, w = image.shape[:2]
    if width is not None and w > width:
        image = cv2.resize(image, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)
    ext, params = (".png", []) if lossless else (".jpg", [cv2.IMWRITE_JPEG_QUALITY, 90])
    _ok, data = cv2.imencode(ext, np.ascontiguousarray(image[:, :, ::-1]), params)
    mime = "png" if lossless else "jpeg"
    return f"data:image/{mime};base64,{base64.b64encode(data.tobytes()).decode('ascii')}"


def render_page(page: PageData) -> str:
    """The whole HTML document."""
    star = "" if page.standard else "*"
    sections = [_realism(page, star), _frames(page)]
    if page.flicker:
        sections.append(_flicker(page))
    if page.segmentation is not None:
        sections.append(render_segmentation(page.segmentation))
    caveat = ("" if page.standard else '<p class="note">* not the published FID network: these are not FID/KID '
              "values; compare them only with numbers from this same network.</p>")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1">'
            f"<title>{escape(page.title)}</title><style>{_STYLE}</style></head><body>"
            f"<h1>{escape(page.title)}</h1><p>Held-out frames <code>{escape(page.images)}</code>; real frames "
            f"<code>{escape(page.real)}</code> ({page.n_real}); features: {escape(page.network)}.</p>{caveat}"
            + "".join(sections)
            + f"<footer><p><small>gtacity {escape(__version__)}, {time.strftime('%Y-%m-%d %H:%M')}</small></p>"
              "</footer></body></html>\n")


def _num(v: float, fmt: str) -> str:
    return "n/a" if v is None or not math.isfinite(v) else format(v, fmt)


def _realism(page: PageData, star: str) -> str:
    b = page.baseline
    rows = [(f'<tr class="base"><th>untranslated inputs (doing nothing)</th><td class="num">{_num(b.fid, ".2f")}'
             f'</td><td class="num">{_num(b.kid * 1e3, ".2f")}</td><td class="num">{_num(b.kid_std * 1e3, ".2f")}'
             f"</td><td></td><td></td></tr>")]
    for e in page.entries:
        d, a = e.distances, e.artifacts
        worst = f"{a.worst:.2f}x (#{a.worst_frame})" if a else "-"
        rows.append(f'<tr{" class=best" if e.best else ""}><th>{escape(e.label)}{" &#9733; best" if e.best else ""}'
                    f'</th><td class="num">{_num(d.fid, ".2f")}</td><td class="num">{_num(d.kid * 1e3, ".2f")}</td>'
                    f'<td class="num">{_num(d.kid_std * 1e3, ".2f")}</td>'
                    f'<td class="num">{_num(a.mean, ".2f") + "x" if a else "-"}</td><td class="num">{worst}</td></tr>')
    n = page.entries[0].artifacts.frames if page.entries[0].artifacts else "?"
    notes = "".join(f'<p class="note">{escape(note)}</p>' for note in page.notes)
    return (f'<section id="realism"><h2>Realism</h2><p>FID{star} and KID{star} of each generator\'s translations '
            f"of the held-out frames ({n}) against the real ones; the best by KID is marked. KID is the one to "
            "trust on a few hundred frames: FID's estimate is biased by the frame count. Artifacts: the outputs' "
            "period-2/4 spectral peaks over their inputs' (about 1: no checkerboard; over 2: visible).</p>"
            f'<table class="realism"><tr><th>generator</th><th>FID{star}</th><th>KID{star} &times;1e3</th>'
            f"<th>&plusmn; std</th><th>artifacts</th><th>worst frame</th></tr>{''.join(rows)}</table>"
            f"{notes}{_run_curves(page, star) if page.is_run else ''}</section>")


def _run_curves(page: PageData, star: str) -> str:
    steps = [e.step for e in page.entries]
    best = next(e for e in page.entries if e.best)
    charts = []
    for k, (name, values) in enumerate((
            (f"KID{star} x1e3", [e.distances.kid * 1e3 for e in page.entries]),
            (f"FID{star}", [e.distances.fid for e in page.entries]),
            ("artifacts (x input)", [e.artifacts.mean if e.artifacts else math.nan for e in page.entries]))):
        charts.append(line_chart([Series(name, steps, values, PALETTE[k])], title=f"{name} per checkpoint",
                                 x_label="training step", y_label=name, mark_x=best.step,
                                 mark_label=f"best: step {best.step}"))
    return f'<div class="charts">{"".join(charts)}</div>'


def _frames(page: PageData) -> str:
    parts = [('<section id="frames"><h2>Frames</h2><p>Input | translation | cycle reconstruction (the translation '
              "translated back) | the centre at 1:1, enlarged (input left, translation right), where a checkerboard "
              "shows that the scaled frames hide.</p>")]
    for e in page.entries:
        parts.append(f'<h3>{escape(e.label)}{" &#9733; best by KID" if e.best else ""}</h3><p><small>'
                     f"<code>{escape(e.path)}</code>, back with <code>{escape(e.back)}</code></small></p>"
                     '<table class="frames"><tr><th>frame</th><th>input</th><th>translation</th><th>cycle '
                     "reconstruction</th><th>detail 1:1</th></tr>")
        for s in e.samples:
            alt = f"frame {s.index}"
            parts.append(f"<tr><th>#{s.index}<br><small>artifacts {_num(s.artifact, '.2f')}x<br>cycle PSNR "
                         f"{_num(s.cycle_psnr, '.1f')} dB</small></th>"
                         f'<td><img src="{s.input}" alt="{alt} input"></td>'
                         f'<td><img src="{s.translation}" alt="{alt} translation"></td>'
                         f'<td><img src="{s.cycle}" alt="{alt} cycle reconstruction"></td>'
                         f'<td class="details"><img class="detail" src="{s.input_detail}" width="{2 * s.detail_width}" '
                         f'alt="{alt} input detail"><img class="detail" src="{s.translation_detail}" '
                         f'width="{2 * s.detail_width}" alt="{alt} translation detail"></td></tr>')
        parts.append("</table>")
    return "".join(parts) + "</section>"


def _flicker(page: PageData) -> str:
    floor = page.flicker[0][1].input_curve
    pairs = list(range(len(floor)))
    series = [Series("input (floor)", pairs, floor, FLOOR)] + [
        Series(label, pairs, r.output_curve, PALETTE[k % len(PALETTE)]) for k, (label, r) in enumerate(page.flicker)]
    chart = line_chart(series, title="warping error per frame pair", x_label="frame pair t, t+1",
                       y_label="E_pair", width=900, height=300)
    rows = "".join(f"<tr><th>{escape(label)}</th><td class=\"num\">{r.output_error:.6f}</td><td class=\"num\">"
                   f"{r.input_error:.6f}</td><td class=\"num\">{_num(r.excess, '.2f')}</td><td class=\"num\">"
                   f"{100 * r.reliable:.1f}%</td></tr>" for label, r in page.flicker)
    return (f'<section id="flicker"><h2>Flicker</h2><p>Warping error (Lai et al. 2018) of each translation of '
            f"<code>{escape(page.video or '')}</code> ({page.flicker[0][1].frames} frames): the output frame t+1 "
            "warped onto t along the input's optical flow; the input's own error is the floor the scene allows."
            f"</p>{chart}<table><tr><th>generator</th><th>E_warp</th><th>input floor</th><th>output / floor</th>"
            f"<th>reliable flow</th></tr>{rows}</table></section>")

"""A synthetic driving clip that gtacity renders itself, so a fresh install has footage to translate.

It is not GTA5 footage (no game frames ship with gtacity): a flat-shaded street in perspective,
drawn with OpenCV the way an old game would draw it (sky gradient, asphalt, lane dashes, kerbs,
facades with windows, trees, a car ahead), driving forward at constant speed, with an engine-like
hum as AAC audio so that audio passthrough can be seen too. Deterministic for a given seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from gtacity.errors import GtacityError
from gtacity.files import written_whole

_FACADES = [(184, 160, 128), (150, 96, 72), (210, 200, 180), (120, 130, 150), (170, 120, 90)]
_SEGMENT = 12.0  # metres between buildings along the street
_CAMERA_HEIGHT = 1.5  # metres
_SPEED = 10.0  # metres per second


@dataclass(frozen=True)
class _Scene:
    width: int
    height: int
    seed: int

    @property
    def horizon(self) -> int:
        return int(self.height * 0.45)

    @property
    def focal(self) -> float:
        return self.width * 0.8

    def project(self, x: float, y: float, z: float) -> tuple[int, int]:
        """World (x right, y up, z forward; metres) -> pixel; the camera looks down +z."""
        return (int(self.width / 2 + self.focal * x / z), int(self.horizon - self.focal * (y - _CAMERA_HEIGHT) / z))


# Cityscapes label IDs of what the street is made of (gtacity.cityscapes.LABELS). Kerb lines and
# lane dashes are road and tree trunks vegetation, as Cityscapes annotates them.
SKY, TERRAIN, ROAD, SIDEWALK, BUILDING, VEGETATION, CAR = 23, 22, 7, 8, 11, 21, 26


class _Layers:
    """The frame and, when asked for, its label map: every shape is drawn on both, with the same
    rasterisation, so each label pixel names what its image pixel shows."""

    def __init__(self, img: np.ndarray, labels: np.ndarray | None):
        self.img, self.labels = img, labels

    def poly(self, points: list, colour, label: int) -> None:
        for target, value in self._targets(colour, label):
            cv2.fillConvexPoly(target, np.array(points), value)

    def line(self, a, b, colour, thickness: int, label: int) -> None:
        for target, value in self._targets(colour, label):
            cv2.line(target, a, b, value, thickness)

    def rect(self, a, b, colour, label: int) -> None:
        for target, value in self._targets(colour, label):
            cv2.rectangle(target, a, b, value, -1)

    def circle(self, centre, radius: int, colour, label: int) -> None:
        for target, value in self._targets(colour, label):
            cv2.circle(target, centre, radius, value, -1)

    def _targets(self, colour, label: int):
        yield self.img, colour
        if self.labels is not None:
            yield self.labels, int(label)


def render_frame(scene: _Scene, t: float) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB: the street seen at time ``t`` seconds."""
    return render_labelled(scene, t, labels=False)[0]


def render_labelled(scene: _Scene, t: float, labels: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """The street at time ``t`` and, with ``labels``, the ``(H, W)`` uint8 Cityscapes label IDs of
    what each pixel shows (sky, terrain, road, sidewalk, building, vegetation, car)."""
    w, h, hz = scene.width, scene.height, scene.horizon
    img = np.zeros((h, w, 3), np.uint8)
    sky = np.linspace([90, 150, 230], [200, 225, 245], hz).astype(np.uint8)
    img[:hz] = sky[:, None, :]
    img[hz:] = (96, 100, 92)
    layers = _Layers(img, None)
    if labels:
        layers.labels = np.full((h, w), TERRAIN, np.uint8)
        layers.labels[:hz] = SKY
    travelled = _SPEED * t
    _ground(layers, scene, travelled)
    for z in _visible(travelled, near=3.0, far=120.0):
        k = int((z + travelled) // _SEGMENT)
        _building(layers, scene, -1, z, k)
        _building(layers, scene, +1, z, k + 7)
        _tree(layers, scene, -1, z + _SEGMENT / 2)
        _tree(layers, scene, +1, z + _SEGMENT / 2)
    _car(layers, scene, 14.0 + 2.0 * np.sin(t * 0.7))
    noise = np.random.default_rng([scene.seed, int(t * 1000)]).integers(-6, 7, img.shape)
    return np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8), layers.labels


def _visible(travelled: float, near: float, far: float) -> list[float]:
    """Distances of the segment boundaries in view, far to near (painter's order)."""
    first = _SEGMENT - travelled % _SEGMENT
    return sorted((first + i * _SEGMENT for i in range(int(far / _SEGMENT)) if first + i * _SEGMENT > near), reverse=True)


def _ground(layers: _Layers, scene: _Scene, travelled: float) -> None:
    far, near = 200.0, 1.0
    for side in (-1, 1):  # pavements, then the road over them
        pave = [scene.project(side * 9.0, 0, far), scene.project(side * 9.0, 0, near),
                scene.project(0, 0, near), scene.project(0, 0, far)]
        layers.poly(pave, (150, 146, 138), SIDEWALK)
    road = [scene.project(-5.0, 0, far), scene.project(5.0, 0, far), scene.project(5.0, 0, near),
            scene.project(-5.0, 0, near)]
    layers.poly(road, (70, 70, 74), ROAD)
    for side in (-1, 1):
        layers.line(scene.project(side * 5.0, 0, far), scene.project(side * 5.0, 0, near), (235, 235, 225), 2, ROAD)
    offset = travelled % 6.0
    for i in range(40):  # centre-line dashes every 6 m, 3 m long
        z0 = 6.0 * i - offset + 1.5
        if z0 > 1.0:
            a, b = scene.project(-0.1, 0, z0), scene.project(0.1, 0, z0 + 3.0)
            dash = [a, (2 * scene.width // 2 - a[0], a[1]), b, (2 * scene.width // 2 - b[0], b[1])]
            layers.poly(dash, (240, 240, 230), ROAD)


def _building(layers: _Layers, scene: _Scene, side: int, z: float, k: int) -> None:
    colour = _FACADES[k % len(_FACADES)]
    height = 9.0 + 6.0 * ((k * 37) % 5) / 4
    x = side * 10.0
    near, far = z, z + _SEGMENT - 1.0
    face = [scene.project(x, 0, near), scene.project(x, height, near), scene.project(x, height, far), scene.project(x, 0, far)]
    layers.poly(face, colour, BUILDING)
    shade = tuple(int(c * 0.7) for c in colour)
    front = [scene.project(x, 0, near), scene.project(x, height, near), scene.project(x + side * 8, height, near),
             scene.project(x + side * 8, 0, near)]
    layers.poly(front, shade, BUILDING)
    for floor in range(int(height // 3)):
        for col in range(4):
            zz = near + 1.0 + col * (_SEGMENT - 2.0) / 4
            a = scene.project(x, 3.0 * floor + 1.0, zz)
            b = scene.project(x, 3.0 * floor + 2.2, zz + 1.2)
            layers.rect(a, b, (60, 80, 110), BUILDING)


def _tree(layers: _Layers, scene: _Scene, side: int, z: float) -> None:
    if z < 2.0:
        return
    base, top = scene.project(side * 6.5, 0, z), scene.project(side * 6.5, 3.0, z)
    layers.line(base, top, (90, 60, 40), max(1, int(scene.focal * 0.25 / z)), VEGETATION)
    layers.circle(top, max(2, int(scene.focal * 1.6 / z)), (60, 140, 50), VEGETATION)


def _car(layers: _Layers, scene: _Scene, z: float) -> None:
    a, b = scene.project(-0.9 + 2.2, 1.4, z), scene.project(0.9 + 2.2, 0.2, z)
    layers.rect(a, b, (40, 60, 160), CAR)
    lamp = max(2, int(scene.focal * 0.18 / z))
    for dx in (-0.7, 0.7):
        layers.circle(scene.project(2.2 + dx, 0.8, z), lamp, (230, 30, 30), CAR)


def write_demo_clip(path: str | Path, *, seconds: float = 6.0, size: tuple[int, int] = (512, 288),
                    fps: int = 25, seed: int = 0, overwrite: bool = False) -> Path:
    """Render the synthetic street to an H.264 (yuv420p, BT.709-tagged) + AAC file.

    Args:
        path: .mp4, .mkv or .mov.
        size: (width, height); both even (4:2:0 video).
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise GtacityError(f"{path}: already exists; pass --overwrite to replace it")
    if path.suffix.lower() not in (".mp4", ".mkv", ".mov"):
        raise GtacityError(f"{path}: use a .mp4, .mkv or .mov name for the clip")
    width, height = size
    if width % 2 or height % 2 or width < 64 or height < 64:
        raise GtacityError(f"clip size {width}x{height}: both sides must be even and at least 64")
    scene = _Scene(width, height, seed)
    with written_whole(path) as partial, av.open(str(partial), "w") as out:
        video = out.add_stream("libx264", rate=fps, options={"crf": "18", "preset": "fast"})
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        ctx = video.codec_context
        ctx.colorspace, ctx.color_primaries, ctx.color_trc, ctx.color_range = 1, 1, 1, 1  # BT.709, limited
        audio = out.add_stream("aac", rate=48000, layout="stereo")
        n = int(round(seconds * fps))
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(render_frame(scene, i / fps), format="rgb24")
            frame = frame.reformat(format="yuv420p", src_colorspace="ITU709", dst_colorspace="ITU709")
            frame.pts = i
            out.mux(video.encode(frame))
        out.mux(video.encode())
        _hum(out, audio, seconds, seed)
    return path


def _hum(out, audio, seconds: float, seed: int) -> None:
    """An engine-like hum: low harmonics with a little noise, 1024-sample AAC frames."""
    rate, block = 48000, 1024
    rng = np.random.default_rng(seed)
    for start in range(0, int(seconds * rate), block):
        t = (start + np.arange(block)) / rate
        wave = 0.2 * np.sin(2 * np.pi * 55 * t) + 0.1 * np.sin(2 * np.pi * 110 * t) + 0.02 * rng.standard_normal(block)
        pcm = np.stack([wave, wave]).astype(np.float32)  # (channels, samples), planar
        frame = av.AudioFrame.from_ndarray(pcm, format="fltp", layout="stereo")
        frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
        out.mux(audio.encode(frame))
    out.mux(audio.encode())


def write_labelled_frames(folder: str | Path, *, seconds: float = 6.0, size: tuple[int, int] = (512, 288),
                          fps: int = 25, seed: int = 0, split: str = "train", overwrite: bool = False) -> list[Path]:
    """The street as PNG frames with the label maps of what was drawn: a labelled synthetic "game"
    in the Cityscapes layout, which ``gtacity eval segmentation`` and ``eval miou`` read::

        FOLDER/leftImg8bit/SPLIT/demo/demo_SEED_FRAME_leftImg8bit.png
        FOLDER/gtFine/SPLIT/demo/demo_SEED_FRAME_gtFine_labelIds.png

    The drive of seed ``s`` starts ``60 * s`` seconds down the street, so frames of two seeds show
    different stretches (a held-out set). Returns the frame files.
    """
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()) and not overwrite:
        raise GtacityError(f"{folder}: is not empty; pass --overwrite to write the frames into it anyway")
    width, height = size
    if width < 64 or height < 64:
        raise GtacityError(f"frame size {width}x{height}: both sides must be at least 64")
    scene = _Scene(width, height, seed)
    written = []
    for i in range(int(round(seconds * fps))):
        image, labels = render_labelled(scene, 60.0 * seed + i / fps)
        stem = f"demo_{seed:06d}_{i:06d}"
        for path, pixels in ((folder / "leftImg8bit" / split / "demo" / f"{stem}_leftImg8bit.png", image[:, :, ::-1]),
                             (folder / "gtFine" / split / "demo" / f"{stem}_gtFine_labelIds.png", labels)):
            with written_whole(path) as partial:
                if not cv2.imwrite(str(partial), pixels):
                    raise GtacityError(f"{path}: could not be written; check free disk space and permissions")
        written.append(folder / "leftImg8bit" / split / "demo" / f"{stem}_leftImg8bit.png")
    return written

"""Test media made on the spot: H.264 clips (audio, colour tags, odd timestamps), image trees,
damaged files. Tests import it as ``from media import make_clip`` (pytest puts ``tests/`` on the
path).

Every maker returns what it meant to write (the RGB frames / images), so a test can compare what
comes back against ground truth. The RGB -> YUV conversion here is plain numpy with the standard
coefficients, independent of the engine's PyAV/swscale path, so a round-trip test cannot pass by
the engine agreeing with itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path, PurePosixPath

import av
import cv2
import numpy as np

# (Kr, Kb) luma weights.
_LUMA_WEIGHTS = {"bt709": (0.2126, 0.0722), "bt601": (0.299, 0.114)}
# (matrix, primaries, transfer) tags a real camera/encoder writes for each standard.
_TAGS = {"bt709": (1, 1, 1), "bt601": (6, 6, 6)}

# A tree with nested folders, every extension, mixed-case suffixes.
DEFAULT_TREE = (
    "a.png",
    "B.PNG",
    "c.Jpg",
    "sub/d.jpeg",
    "sub/E.WEBP",
    "sub/deeper/f.bmp",
    "sub/deeper/g.JPG",
)

CELL = 16  # patch size of :func:`patches`, in pixels


def patches(width: int, height: int, seed: int = 0) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB: flat, saturated colour patches on a 16-pixel grid, plus a gentle
    grey gradient. Flat areas make codec and chroma-subsampling loss small (see
    :func:`patch_interiors`), saturation makes a wrong YUV matrix visible.

    Args:
        width, height: image size (any, odd included).
        seed: picks the patch colours (use one per video frame so frames differ).
    """
    rng = np.random.default_rng(seed)
    colours = rng.integers(16, 240, size=(height // CELL + 1, width // CELL + 1, 3))
    ys, xs = np.mgrid[0:height, 0:width]
    image = colours[ys // CELL, xs // CELL].astype(np.float64)
    image += 12.0 * xs[..., None] / max(width, 1)
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def patch_interiors(width: int, height: int, margin: int = 3) -> np.ndarray:
    """``(H, W)`` bool: pixels at least ``margin`` from a patch edge, where 4:2:0 chroma and codec
    blocks see one flat colour, so any error left there is the colour conversion's."""
    ys, xs = np.mgrid[0:height, 0:width]
    return _inside(ys, margin) & _inside(xs, margin)


def _inside(v: np.ndarray, margin: int) -> np.ndarray:
    return (v % CELL >= margin) & (v % CELL < CELL - margin)


def rgb_to_yuv(rgb: np.ndarray, matrix: str = "bt709", full_range: bool = False) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB -> ``(H, W, 3)`` float YUV on the 8-bit scale (not rounded)."""
    kr, kb = _LUMA_WEIGHTS[matrix]
    r, g, b = np.moveaxis(rgb.astype(np.float64) / 255.0, -1, 0)
    y = kr * r + (1 - kr - kb) * g + kb * b
    u = (b - y) / (2 * (1 - kb))
    v = (r - y) / (2 * (1 - kr))
    if full_range:
        return np.stack([255 * y, 128 + 255 * u, 128 + 255 * v], -1)
    return np.stack([16 + 219 * y, 128 + 224 * u, 128 + 224 * v], -1)


def _yuv_frame(yuv: np.ndarray, pix_fmt: str) -> av.VideoFrame:
    """Float YUV (8-bit scale) -> a VideoFrame; 4:2:0 chroma is the mean of each 2x2 block."""
    height, width = yuv.shape[:2]
    if pix_fmt == "yuv444p":
        planes = np.clip(np.round(np.moveaxis(yuv, -1, 0)), 0, 255).astype(np.uint8)
        return av.VideoFrame.from_ndarray(planes, format="yuv444p")
    chroma = yuv[:, :, 1:].reshape(height // 2, 2, width // 2, 2, 2).mean(axis=(1, 3))
    scale, dtype = (4, np.uint16) if pix_fmt == "yuv420p10le" else (1, np.uint8)
    # I420 layout: the Y plane, then U, then V, flattened into (H * 3/2, W) rows.
    flat = np.concatenate([yuv[:, :, 0].ravel(), chroma[:, :, 0].ravel(), chroma[:, :, 1].ravel()])
    packed = (
        np.clip(np.round(flat * scale), 0, 255 * scale)
        .astype(dtype)
        .reshape(height * 3 // 2, width)
    )
    return av.VideoFrame.from_ndarray(packed, format=pix_fmt)


def make_clip(
    path: str | Path,
    *,
    frames: int = 12,
    size: tuple[int, int] = (64, 48),
    fps: int = 25,
    audio: str | None = "aac",
    matrix: str = "bt709",
    tagged: bool = True,
    full_range: bool = False,
    pix_fmt: str = "yuv420p",
    pts: Sequence[int] | None = None,
    time_base: Fraction | None = None,
    crf: int = 12,
    rotation: int | None = None,
    keyint: int | None = None,
) -> list[np.ndarray]:
    """Write an H.264 clip (container from the extension: .mp4/.mkv/.mov) and return its frames.

    All video is written before all audio, so how well the input is interleaved is up to the
    muxer, as with many real files; sinks must not rely on it.

    Args:
        path: output file.
        frames: number of video frames (ignored when ``pts`` is given).
        size: ``(width, height)``; odd sizes need ``pix_fmt="yuv444p"``.
        fps: nominal frame rate (also the default time base, 1/fps).
        audio: codec of a stereo 48 kHz audio stream (a 440 Hz tone) as long as the video, or None.
        matrix: "bt709" or "bt601": the coefficients the pixels are converted with.
        tagged: write matrix/primaries/transfer/range tags; False leaves them all unspecified,
            so a reader must guess (the pixels still use ``matrix``).
        full_range: full-range (0-255) YUV instead of limited (16-235).
        pix_fmt: "yuv420p", "yuv420p10le" or "yuv444p".
        pts: one presentation timestamp per frame, in ``time_base`` units (variable rate, late
            start).
        time_base: the video time base when ``pts`` is given.
        crf: x264 quality; the low default keeps codec loss well below colour-matrix errors.
        rotation: a display rotation in degrees (counter-clockwise), as a phone held upright
            writes it; None writes no display matrix.
        keyint: a key frame every this many frames (x264's default, 250, when None).

    Returns:
        The RGB images (``(H, W, 3)`` uint8) the clip encodes, in order.
    """
    width, height = size
    time_base = time_base or Fraction(1, fps)
    pts = list(pts) if pts is not None else list(range(frames))
    images = [patches(width, height, seed=i) for i in range(len(pts))]
    with av.open(str(path), "w") as out:
        video = out.add_stream(
            "libx264", rate=fps, options={"crf": str(crf), "preset": "ultrafast"}
        )
        video.width, video.height, video.pix_fmt = width, height, pix_fmt
        if keyint is not None:
            video.codec_context.gop_size = keyint
        video.codec_context.time_base = video.time_base = time_base
        if tagged:
            _tag(video.codec_context, matrix, full_range)
        if rotation is not None:
            video.set_display_rotation(rotation)
        # Every stream must exist before the first packet writes the header.
        tone = out.add_stream(audio, rate=48000) if audio else None
        for image, stamp in zip(images, pts, strict=True):
            frame = _yuv_frame(rgb_to_yuv(image, matrix, full_range), pix_fmt)
            frame.pts, frame.time_base = stamp, time_base
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        if tone is not None:
            _write_tone(
                out, tone, seconds=(pts[-1] - pts[0] + 1) * time_base, start=pts[0] * time_base
            )
    return images


def _tag(ctx: av.VideoCodecContext, matrix: str, full_range: bool) -> None:
    ctx.colorspace, ctx.color_primaries, ctx.color_trc = _TAGS[matrix]
    ctx.color_range = 2 if full_range else 1  # AVCOL_RANGE_JPEG / AVCOL_RANGE_MPEG


def _write_tone(
    out: av.container.OutputContainer, stream: av.AudioStream, seconds: Fraction, start: Fraction
) -> None:
    """A 440 Hz stereo tone of ``seconds`` starting at ``start``, in 1024-sample frames."""
    to_codec = av.AudioResampler(format=stream.format, layout="stereo", rate=48000)
    first = int(start * 48000)
    for offset in range(0, int(seconds * 48000), 1024):
        t = (np.arange(1024) + offset) / 48000
        tone = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        frame = av.AudioFrame.from_ndarray(np.stack([tone, tone]), format="fltp", layout="stereo")
        frame.sample_rate, frame.pts = 48000, first + offset
        for converted in to_codec.resample(frame):
            out.mux(stream.encode(converted))
    out.mux(stream.encode(None))


def make_audio_only(path: str | Path, seconds: float = 0.5) -> None:
    """Write an AAC file with no video stream (e.g. ``.m4a``)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=48000)
        _write_tone(out, stream, seconds=Fraction(seconds), start=Fraction(0))


def make_image(path: str | Path, size: tuple[int, int] = (40, 30), seed: int = 0) -> np.ndarray:
    """Write one image (format from the extension) and return the RGB pixels it was given."""
    image = patches(*size, seed=seed)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise OSError(f"OpenCV could not write {path}")
    return image


def make_image_tree(
    root: str | Path, files: Sequence[str] = DEFAULT_TREE, size: tuple[int, int] = (40, 30)
) -> dict[PurePosixPath, np.ndarray]:
    """Write an image folder tree and return ``{relative path: RGB pixels given to the writer}``.

    Args:
        root: folder to create (parents too).
        files: relative POSIX paths; the extension picks each file's format.
        size: ``(width, height)`` of every image.
    """
    root = Path(root)
    return {
        PurePosixPath(name): make_image(root / name, size, seed=i) for i, name in enumerate(files)
    }


def write_garbage(path: str | Path, size: int = 4096, seed: int = 0) -> None:
    """Fill ``path`` with random bytes (a "video" or "image" nothing can decode)."""
    Path(path).write_bytes(
        np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()
    )


def truncate(path: str | Path, keep: float = 0.5) -> None:
    """Cut a file to the first ``keep`` fraction of its bytes, as an interrupted copy would."""
    path = Path(path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def remux(src: str | Path, dst: str | Path, format: str | None = None, **options: str) -> None:
    """Copy every stream of ``src`` into a new container ``dst`` without re-encoding.

    Args:
        src, dst: input and output files.
        format: FFmpeg muxer name when the extension does not say (``"h264"`` for a raw stream).
        options: muxer options, e.g. ``movflags="faststart"`` (index at the front of an mp4).
    """
    with av.open(str(src)) as inp, av.open(str(dst), "w", format=format, options=options) as out:
        streams = {s.index: out.add_stream_from_template(s) for s in inp.streams}
        for packet in inp.demux():
            if packet.size:
                packet.stream = streams[packet.stream.index]
                out.mux(packet)


def corrupt_packet(path: str | Path, index: int, seed: int = 0) -> float:
    """Overwrite video packet ``index`` with random bytes, as a bad sector or a broken transfer
    would; returns that packet's time in seconds."""
    with av.open(str(path)) as container:
        packets = [p for p in container.demux(container.streams.video[0]) if p.size]
        packet = packets[index]
        start, size, seconds = packet.pos, packet.size, float(packet.pts * packet.time_base)
    data = bytearray(Path(path).read_bytes())
    data[start : start + size] = np.random.default_rng(seed).bytes(size)
    Path(path).write_bytes(bytes(data))
    return seconds


def video_info(path: str | Path) -> dict:
    """What a user (or ffprobe) would check in a video file: streams, timing and colour tags."""
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        decoded = [(frame.pts * video.time_base, frame.rotation) for frame in container.decode(video)]
        times = [stamp for stamp, _rotation in decoded]
        ctx = video.codec_context
        info = {
            "size": (video.width, video.height),
            "pix_fmt": video.pix_fmt,
            "frames": len(times),
            "rate": video.average_rate,
            "times": times,
            "tags": (ctx.colorspace, ctx.color_range, ctx.color_primaries, ctx.color_trc),
            "rotation": decoded[0][1] if decoded else None,  # degrees counter-clockwise
            "audio": [
                (s.codec_context.codec.canonical_name, s.sample_rate, s.channels)
                for s in container.streams.audio
            ],
        }
    with av.open(str(path)) as container:
        info["audio_packets"] = [
            (bytes(p), p.pts * p.time_base, p.duration * p.time_base)
            for p in container.demux(container.streams.audio)
            if p.size
        ]
    return info


def make_raw_clip(
    path: str | Path, *, frames: int = 6, size: tuple[int, int] = (64, 48), pix_fmt: str = "nv12"
) -> list[np.ndarray]:
    """Write uncompressed video (``rawvideo`` in .mkv/.nut) in ``pix_fmt``, as a hardware decoder
    or capture card hands it out (NV12), untagged BT.601 at 25 fps; returns its RGB frames."""
    width, height = size
    images = [patches(width, height, seed=i) for i in range(frames)]
    with av.open(str(path), "w") as out:
        video = out.add_stream("rawvideo", rate=25)
        video.width, video.height, video.pix_fmt = width, height, pix_fmt
        video.codec_context.time_base = video.time_base = Fraction(1, 25)
        for i, image in enumerate(images):
            frame = _yuv_frame(rgb_to_yuv(image, "bt601"), "yuv420p").reformat(format=pix_fmt)
            frame.pts = i
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
    return images

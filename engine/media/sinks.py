"""Where translated frames go: a video (audio copied), a mirrored image folder, or one image.

:func:`open_sink` picks the sink that matches the source and refuses, in one line, anything that
could lose the user's data: writing over the input, replacing an existing output without
``overwrite``, a file name whose extension cannot hold the result, an output another job is
writing. Outputs follow :mod:`gtacity.engine.media.lock`: the output is locked while its sink is
open, a video or image is written under a hidden ``.NAME.partial-PID-XXXXXXXX.EXT`` name next to
its final path and renamed only once complete, and partial files a killed job left for the same
output are removed first; so a crash, a signal or :meth:`abort` never leaves a finished-looking
file behind.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

import av
import cv2
import numpy as np
from av.video.reformatter import VideoReformatter

from gtacity.engine.frames import Frame, FrameSource, SinkContext, SinkError
from gtacity.engine.media.audio import AudioCopy
from gtacity.engine.media.lock import OutputLock
from gtacity.engine.media.sources import VideoSource, ffmpeg_reason
from gtacity.files import partial_path, remove_stale_partials, remove_stale_partials_under, write_error, written_whole
from gtacity.images import ALPHA_EXTENSIONS, DEEP_EXTENSIONS, IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, write_image_file


def open_sink(
    path: str | Path,
    source: FrameSource,
    *,
    overwrite: bool = False,
    crf: int = 18,
    preset: str = "medium",
    codec: str = "libx264",
) -> VideoSink | ImageFolderSink | ImageSink:
    """Open the sink for ``source.kind``: video -> video file, images -> folder, image -> image.

    Args:
        path: output file (video: .mp4/.mkv/.mov; image: an image extension) or folder (images).
        source: the open source whose frames will be written; a video sink takes its size, frame
            rate, time base, colour and audio from it.
        overwrite: replace an existing output (files in an output folder are replaced one by one;
            nothing else there is touched). The input is never replaced, whatever this says.
        crf: constant rate factor of the video encoder (lower = better; 18 is visually lossless).
        preset: encoder speed/size trade-off (``ultrafast`` ... ``veryslow``).
        codec: video encoder name (an FFmpeg encoder PyAV has, e.g. ``libx264``).

    Raises:
        SinkError: the output would be the input, lies inside/around the input folder, exists
            without ``overwrite``, has the wrong extension, or the encoder/container refuses it.
        OutputBusyError: another job is writing the same output.
    """
    path = Path(path)
    if source.kind == "images":
        check_folder_target(path, source.path)
    elif source.kind in ("video", "image"):
        extensions = VIDEO_EXTENSIONS if source.kind == "video" else IMAGE_EXTENSIONS
        _check_file_target(path, source.path, extensions)
    else:
        raise ValueError(f"unknown source kind {source.kind!r}")
    lock = OutputLock(path).acquire()
    try:
        if source.kind == "images":
            if path.is_dir():
                remove_stale_partials_under(path)
            _check_folder_free(path, overwrite)
            return ImageFolderSink(path, lock)
        remove_stale_partials(path)
        if path.exists() and not overwrite:
            raise SinkError(f"{path}: already exists; pass --overwrite to replace it")
        if source.kind == "video":
            return VideoSink(path, source, lock, crf=crf, preset=preset, codec=codec)
        return ImageSink(path, lock)
    except BaseException:
        lock.release()
        raise


def _check_file_target(path: Path, input_path: Path, extensions: tuple[str, ...]) -> None:
    if path.suffix.lower() not in extensions:
        got = f"'{path.suffix}'" if path.suffix else "no extension"
        raise SinkError(
            f"{path}: {got} is not a supported output type; name it {', '.join(extensions)}"
        )
    if _same_file(path, input_path):
        raise SinkError(
            f"{path}: is the input file, which gtacity never replaces; choose another output path"
        )
    if path.is_dir():
        raise SinkError(f"{path}: is a folder; name an output file inside it instead")


def _same_file(a: Path, b: Path) -> bool:
    # samefile also catches hard links and case-insensitive file systems that resolve() misses.
    return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))


def check_folder_target(out: Path, input_root: Path) -> None:
    out_r, in_r = out.resolve(), input_root.resolve()
    if out_r == in_r:
        raise SinkError(
            f"{out}: is the input folder, which gtacity never writes into; "
            "choose another output folder"
        )
    if out_r.is_relative_to(in_r):
        raise SinkError(
            f"{out}: is inside the input folder {input_root}; choose an output folder outside it"
        )
    if in_r.is_relative_to(out_r):
        raise SinkError(
            f"{out}: contains the input folder {input_root}; choose an output folder outside it"
        )
    if out.exists() and not out.is_dir():
        raise SinkError(
            f"{out}: exists and is not a folder; an image-folder input needs an output folder"
        )


def _check_folder_free(out: Path, overwrite: bool) -> None:
    # Empty subfolders (what a killed job leaves once its partial files are gone) hold nothing.
    if out.is_dir() and not overwrite and any(not p.is_dir() for p in out.rglob("*")):
        raise SinkError(f"{out}: already exists and is not empty; pass --overwrite to replace it")


class VideoSink(SinkContext):
    """Encodes frames to H.264 (by default) with the input's timestamps, colour and audio.

    - pixel format yuv420p, or yuv444p when a side is odd (4:2:0 cannot hold odd sizes and the
      output size always equals the input size);
    - the stream time base is the input's and each frame keeps its input pts, so variable frame
      rates and non-zero start times survive;
    - RGB -> YUV uses the matrix and range the source decoded with, and the stream is tagged like
      the input (see :mod:`gtacity.engine.media.colour`); frames carrying yuv420p planes (converted on
      the GPU) are encoded as they are;
    - the input's display matrix (rotation/flip, e.g. a phone held upright) is carried over;
    - every audio stream is copied bit for bit.
    """

    def __init__(
        self, path: Path, source: VideoSource, lock: OutputLock, *, crf: int, preset: str, codec: str
    ):
        self.path = path
        self._lock = lock
        # abort() may come from another thread (a signal, another stage's error) while write()
        # is inside the encoder: closing the container under it would crash the process.
        self._busy = threading.Lock()
        self._aborted = False
        self._colour = source.colour
        self._size = (source.width, source.height)
        self._partial = partial_path(path)
        self._out = self._audio = None
        self._last_pts: int | None = None
        self._reformatter = VideoReformatter()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._out = av.open(str(self._partial), "w")
            self._video = self._add_video_stream(source, crf=crf, preset=preset, codec=codec)
            self._audio = AudioCopy(source.path, self._out, path, source.window)
            # Writing the header now makes encoder/container refusals surface before any work.
            self._out.start_encoding()
        except av.FFmpegError as e:
            self.abort()
            raise SinkError(
                f"{path}: could not start writing ({ffmpeg_reason(e)}); "
                f"check the {codec} crf/preset settings and that the folder is writable"
            ) from None
        except OSError as e:
            self.abort()
            raise SinkError(
                f"{path}: could not create the output ({e.strerror}); check the folder is writable"
            ) from None
        except BaseException:
            self.abort()
            raise

    def _add_video_stream(self, source: VideoSource, *, crf: int, preset: str, codec: str):
        try:
            stream = self._out.add_stream(
                codec, rate=source.rate, options={"crf": str(crf), "preset": preset}
            )
        except (av.codec.codec.UnknownCodecError, ValueError) as e:
            raise SinkError(
                f"{self.path}: cannot encode with {codec!r} here ({e}); use codec libx264"
            ) from None
        width, height = self._size
        stream.width, stream.height = width, height
        self._pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
        stream.pix_fmt = self._pix_fmt
        stream.time_base = source.time_base
        stream.codec_context.time_base = source.time_base
        if source.sample_aspect_ratio:
            stream.codec_context.sample_aspect_ratio = source.sample_aspect_ratio
        if source.display_matrix is not None:  # a phone's rotation: play the same way up
            stream.set_display_matrix(source.display_matrix)
        ctx = stream.codec_context
        ctx.colorspace = self._colour.output_matrix
        ctx.color_range = self._colour.range
        ctx.color_primaries = self._colour.primaries
        ctx.color_trc = self._colour.transfer
        return stream

    def write(self, frame: Frame) -> None:
        """Encode one translated frame at its input timestamp (``frame.meta``: VideoFrameMeta)."""
        height, width = frame.size
        if (width, height) != self._size:
            size = "x".join(map(str, self._size))
            raise ValueError(f"frame {frame.index} is {width}x{height}, the video is {size}")
        if frame.planes is not None:  # already YUV in the video's colour: no swscale
            yuv = self._colour.from_planes(frame.planes.data, frame.planes.pix_fmt)
        else:
            yuv = self._colour.from_rgb(frame.image, self._pix_fmt, self._reformatter)
        pts = frame.meta.pts
        # Damaged inputs can repeat a timestamp; the muxer rejects that, so nudge it forward.
        if self._last_pts is not None and pts <= self._last_pts:
            pts = self._last_pts + 1
        yuv.pts, yuv.time_base = pts, frame.meta.time_base
        self._last_pts = pts
        try:
            with self._busy:
                if self._aborted:  # the output is gone; a late frame has nowhere to go
                    return
                self._mux(self._video.encode(yuv))
        except av.FFmpegError as e:
            raise SinkError(
                f"{self.path}: writing frame {frame.index} failed ({ffmpeg_reason(e)}); "
                "check free disk space"
            ) from None

    def _mux(self, packets: list[av.Packet]) -> None:
        for packet in packets:
            self._out.mux(packet)
            if packet.dts is not None:
                self._audio.write_until(packet.dts * packet.time_base)

    def close(self) -> None:
        """Flush the encoder and the rest of the audio, then move the file to its final name."""
        try:
            self._mux(self._video.encode(None))
            self._audio.write_until(None)
            self._audio.close()
            self._out.close()
        except av.FFmpegError as e:
            self.abort()
            raise SinkError(
                f"{self.path}: finishing the video failed ({ffmpeg_reason(e)}); "
                "check free disk space, or try an .mkv output"
            ) from None
        os.replace(self._partial, self.path)
        self._lock.release()

    def abort(self) -> None:
        """Stop writing and delete the unfinished file; the final path is never created."""
        with self._busy:
            self._aborted = True
            self._close_quietly()
        self._partial.unlink(missing_ok=True)
        self._lock.release()

    def _close_quietly(self) -> None:
        for closer in (self._audio, self._out):
            if closer is not None:
                # The file is deleted next, so a trailer that fails to write changes nothing.
                with contextlib.suppress(av.FFmpegError):
                    closer.close()


def write_image(path: Path, frame: Frame) -> None:
    """Write ``frame`` (its alpha and depth where the format holds them) to ``path`` as is, no
    temporary name: for callers that manage their own (the bulk job's run-stamped names).

    Raises:
        SinkError: OpenCV cannot encode the frame in that format.
        OSError: the file system refused the file (full, read-only, no permission).
    """
    # JPEG quality 95 keeps the translation's detail; PNG, BMP and TIFF are lossless and OpenCV
    # writes WebP lossless when no quality is given. (OpenCV 5 warns about options a format does
    # not use.) Depth and alpha go where the format holds them: 16 bits in PNG/TIFF, alpha in
    # PNG/WebP/TIFF; elsewhere 16-bit samples are rounded to 8 and alpha is left out.
    suffix = path.suffix.lower()
    image, alpha = frame.image, frame.alpha
    if image.dtype == np.uint16 and suffix not in DEEP_EXTENSIONS:
        image = _to_8_bit(image)
        alpha = None if alpha is None else _to_8_bit(alpha)
    params = (cv2.IMWRITE_JPEG_QUALITY, 95) if suffix in (".jpg", ".jpeg") else ()
    if alpha is not None and suffix in ALPHA_EXTENSIONS:
        bgr = cv2.cvtColor(np.dstack([image, alpha]), cv2.COLOR_RGBA2BGRA)
    else:
        bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    try:
        write_image_file(path, bgr, params)
    except ValueError as e:
        raise SinkError(f"{path}: could not be written ({e}); choose another image format") from None


def _to_8_bit(pixels: np.ndarray) -> np.ndarray:
    return np.rint(pixels / 257.0).astype(np.uint8)


class ImageFolderSink(SinkContext):
    """Mirrors an image folder: each frame goes to ``root / frame.meta`` (same subfolders, name and
    format as its input). Each file appears complete or not at all; ``abort()`` keeps the finished
    ones.

    ``lock`` is the folder's :class:`OutputLock`, released on ``close()``/``abort()``; a bulk job
    (:mod:`gtacity.engine.jobs.folder`) passes None, because its shards share the folder and its journals
    say which run owns which file.
    """

    def __init__(self, root: Path, lock: OutputLock | None = None):
        self.path = root
        self._lock = lock
        root.mkdir(parents=True, exist_ok=True)

    def write(self, frame: Frame) -> None:
        """Write one translated image at its input's relative path."""
        target = self.path / frame.meta
        try:
            with written_whole(target) as partial:
                write_image(partial, frame)
        except OSError as e:
            raise write_error(e, target) from None

    def close(self) -> None:
        """Every file was finished as it was written; release the folder."""
        if self._lock is not None:
            self._lock.release()

    def abort(self) -> None:
        """Finished files are complete and stay; no partial file can exist between writes."""
        self.close()


class ImageSink(SinkContext):
    """One output image, in the format its extension names; it appears on ``close()``."""

    def __init__(self, path: Path, lock: OutputLock):
        self.path = path
        self._lock = lock
        self._partial = partial_path(path)

    def write(self, frame: Frame) -> None:
        """Write the image under its unfinished name."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_image(self._partial, frame)
        except OSError as e:
            raise write_error(e, self.path) from None

    def close(self) -> None:
        """Move the written image to its final name."""
        os.replace(self._partial, self.path)
        self._lock.release()

    def abort(self) -> None:
        """Delete the unfinished image."""
        self._partial.unlink(missing_ok=True)
        self._lock.release()

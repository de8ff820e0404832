"""Where frames come from: a video file, a folder tree of images, or one image.

:func:`open_source` looks at the path and returns the matching
:class:`~gtacity.engine.frames.FrameSource`. Every source reads lazily (one frame in memory at a
time) and turns anything a user can get wrong (missing path, corrupt file, a folder with no images)
into a one-line :class:`SourceError`.
"""

from __future__ import annotations

import os
import struct
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path, PurePosixPath

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from gtacity.engine.frames import Frame, SourceContext
from gtacity.engine.media.colour import VideoColour
from gtacity.engine.media.damage import Damage, missing_index
from gtacity.engine.media.decodelog import DecoderLog, watch
from gtacity.engine.media.planes import PlaneReader
from gtacity.engine.media.window import Window
from gtacity.errors import GtacityError
from gtacity.images import IMAGE_EXTENSIONS, ImageDecodeError, ImageTooLargeError, decode_full

# How many frames a decoder's log line may come after the frame it is about (threads, reordering).
_LOG_LAG_FRAMES = 8


class SourceError(GtacityError):
    """An input that cannot be read; the message names the file and what to do."""


@dataclass(frozen=True)
class PixelLimit:
    """The most pixels one input image may have, checked from its header before it is decoded.

    Attributes:
        pixels: the limit.
        why: where it comes from, as the refusal says it (``"what the 5.2 GiB of memory free here
            can translate"``, ``"set by --max-pixels"``).
    """

    pixels: int
    why: str


@dataclass(frozen=True)
class VideoFrameMeta:
    """Where a decoded video frame sits in time.

    Attributes:
        pts: presentation timestamp in ``time_base`` units, as stored in the input.
        time_base: seconds per ``pts`` unit.
    """

    pts: int
    time_base: Fraction

    @property
    def seconds(self) -> float:
        """The presentation time in seconds."""
        return float(self.pts * self.time_base)


def open_source(
    path: str | Path, *, planes: bool = False, limit: PixelLimit | None = None, window: Window | None = None
) -> VideoSource | ImageFolderSource | ImageSource:
    """Open a video, an image folder (searched recursively) or a single image.

    Args:
        path: a directory (-> :class:`ImageFolderSource`), a file with an image extension
            (-> :class:`ImageSource`), or anything else (-> :class:`VideoSource`).
        planes: a video hands out the decoder's 4:2:0 planes where it can (see
            :class:`VideoSource`); images ignore it.
        limit: a single image with more pixels is refused before it is decoded.
        window: the slice of a video to read (see :mod:`gtacity.engine.media.window`); None:
            all of it. Images ignore it (``translate`` refuses a slice of them).

    Raises:
        SourceError: the path is missing or is not a readable video/image/image folder.
    """
    path = Path(path)
    if not path.exists():
        raise SourceError(f"{path}: no such file or folder; check the path")
    if path.is_dir():
        return ImageFolderSource(path)
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        return ImageSource(path, limit)
    return VideoSource(path, planes=planes, window=window)


def ffmpeg_reason(error: av.FFmpegError) -> str:
    """FFmpeg's words for a failure: its last log line if PyAV captured one, else the errno text."""
    if error.log:
        return error.log[2].strip()
    return error.strerror


def read_image(path: Path, limit: PixelLimit | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """One image file -> ``(H, W, 3)`` RGB and its alpha plane (or None), uint8, or uint16 for a
    16-bit file (grey converted to RGB).

    Raises:
        SourceError: the file is missing, damaged, cut short, not an image OpenCV can decode, or
            has more pixels than ``limit`` (refused before decoding).
    """
    try:
        return decode_full(path, None if limit is None else limit.pixels)
    except OSError as e:
        raise SourceError(f"{path}: cannot be read ({e.strerror}); check the file") from None
    except ImageTooLargeError as e:
        pixels = e.width * e.height
        raise SourceError(
            f"{path}: {e.width}x{e.height} = {pixels:,} pixels, over the limit of {limit.pixels:,} "
            f"({limit.why}); pass --max-pixels {pixels} to try anyway, or scale the image down"
        ) from None
    except ImageDecodeError as e:
        raise SourceError(
            f"{path}: not a readable image ({e}); check the file opens in an image viewer, or "
            "copy it again if it was cut short"
        ) from None


class VideoSource(SourceContext):
    """Decodes the first video stream of a file with PyAV (threaded), one RGB frame at a time.

    With ``planes``, frames the decoder gives as 8-bit 4:2:0 (yuv420p, NV12) with even sides
    carry those planes as they are (:class:`~gtacity.engine.frames.Planes`, colour converted
    later on the device, see :mod:`gtacity.engine.media.planes`); any other frame is still RGB.

    The first frame is decoded on open, so a file that opens but cannot be decoded fails here, and
    the colour (matrix, range, primaries, transfer) is known before the sink is made. Damage does
    not stop decoding: packets the decoder rejects, frames it flags corrupt and an early end (a
    file cut short after its index, Matroska or a "faststart" mp4, decodes up to the cut without
    any error) are counted in :attr:`damage` (see :mod:`gtacity.engine.media.damage`); ``len()`` still
    reports the intended count.

    Attributes:
        kind: ``"video"``.
        path: the input file (the video sink reopens it to copy the audio).
        width, height: frame size in pixels.
        rate: average frame rate (guessed from the timestamps when the file does not say).
        time_base: seconds per timestamp unit of the video stream.
        sample_aspect_ratio: pixel aspect ratio, or None when square/unknown.
        damage: what decoding lost so far (complete once iteration ends); falsy when nothing.
        display_matrix: how a player turns the picture (FFmpeg's 9-int display matrix: rotation
            and flips, e.g. a phone video shot upright), or None; the sink writes it back.
        colour: tags and the YUV <-> RGB conversion, shared with the sink.
        planes: whether frames carry the decoder's planes where they can.
    """

    kind = "video"

    def __init__(self, path: Path, *, planes: bool = False, window: Window | None = None):
        self.path = path
        self.planes = planes
        self.window = window or Window()
        self._log = None
        self._park: weakref.finalize | None = None  # set once the video stream is open
        watch()  # before opening: FFmpeg's own reason for a failure is then known too
        try:
            self._container = av.open(str(path))
        except av.FFmpegError as e:
            index = missing_index(path)  # the one damage FFmpeg names only "Invalid data"
            if index is not None:
                raise SourceError(f"{path}: {index}") from None
            raise SourceError(
                f"{path}: not a readable video ({ffmpeg_reason(e)}); "
                "check the file plays in a media player"
            ) from None
        try:
            self._open_stream()
        except BaseException:
            self.close()
            raise

    def _open_stream(self) -> None:
        # Cover art in an audio file is a one-picture "video" stream; it is not footage.
        streams = [
            s
            for s in self._container.streams.video
            if not s.disposition & av.stream.Disposition.attached_pic
        ]
        if not streams:
            raise SourceError(
                f"{self.path}: has no video stream; pass a video file or an image folder"
            )
        stream = streams[0]
        stream.thread_type = "AUTO"
        self._stream = stream
        # Before the decoder is freed, however this source ends (closed, or collected unclosed).
        self._park = weakref.finalize(self, park_decoder, stream.codec_context)
        # Only x264's rate control and the length estimate use the rate; timestamps come from the
        # file. 25 covers a stream that states no rate at all.
        self.rate: Fraction = stream.average_rate or stream.guessed_rate or Fraction(25)
        self.time_base: Fraction = stream.time_base
        self.damage = Damage()
        self._decoding: int | None = None  # pts of the packet last sent to the decoder
        # A packet whose frame never comes out was lost (rejected, or dropped with its reference).
        self._packet_pts: set[int] = set()
        self._frame_pts: set[int | None] = set()
        self._log = DecoderLog(stream.codec_context.name)
        self._frames = self._decoded()
        self._reformatter = VideoReformatter()
        self._first = next(self._frames, None)
        if self._first is None:
            raise SourceError(
                f"{self.path}: no video frame could be decoded; "
                "the file may be truncated or damaged"
            )
        self.width, self.height = self._first.width, self._first.height
        self.sample_aspect_ratio = stream.sample_aspect_ratio
        self.colour = VideoColour.of_frame(self._first)
        self._plane_reader = PlaneReader(self.colour)
        self.display_matrix = _display_matrix(self._first)
        self._origin = self._first.pts or 0  # the video's first timestamp: --start counts from it
        if self.window.start:
            length = Fraction(self._count()) / self.rate
            if length and self.window.start >= length:
                raise SourceError(f"{self.path}: --start {float(self.window.start):g} s is past the end of "
                                  f"the video ({float(length):.2f} s long); choose an earlier start")
            if self._first.pts is not None:  # a raw stream without timestamps is read from the start
                self._seek(self._origin + self.window.start / self.time_base)

    def _seek(self, pts: Fraction) -> None:
        """Continue from the key frame at or before ``pts`` (frames before it are dropped in
        :meth:`__iter__`); where the container cannot seek, decoding goes on from the start."""
        try:
            self._container.seek(int(pts), stream=self._stream, backward=True)
        except av.FFmpegError:
            return
        self.damage = Damage()  # what the first frame showed is not part of the slice
        self._packet_pts, self._frame_pts = set(), set()
        self._frames = self._decoded()
        self._first = next(self._frames, None)

    def _decoded(self) -> Iterator[av.VideoFrame]:
        """Every frame FFmpeg can give, noting in :attr:`damage` what it could not."""
        packets = self._container.demux(self._stream)
        while True:
            try:
                packet = next(packets, None)
            except av.FFmpegError as e:  # the demuxer cannot resync: the rest is lost
                self.damage.stopped = ffmpeg_reason(e)
                return
            if packet is None:
                return
            if packet.size and packet.pts is not None:
                self._packet_pts.add(packet.pts)
                self._decoding = packet.pts
            try:
                frames = packet.decode()  # the final empty packet flushes the decoder
            except av.FFmpegError:
                self.damage.errors += 1
                continue
            finally:
                if self._log.new_lines() and self._decoding is not None:
                    self.damage.reported.append(float(self._decoding * self.time_base))
            for frame in frames:
                self._frame_pts.add(frame.pts)
                if frame.is_corrupt:
                    self.damage.damaged.append(float((frame.pts or 0) * self.time_base))
                yield frame

    def __len__(self) -> int:
        """Frame count of the window, from the container's, else estimated from the duration."""
        return self.window.frames(self._count(), self.rate) if not self.window.whole else self._count()

    def _count(self) -> int:
        """Frame count from the container, else estimated from the duration and frame rate."""
        if self._stream.frames:
            return self._stream.frames
        if self._stream.duration is not None:
            seconds = self._stream.duration * self.time_base
        elif self._container.duration is not None:
            seconds = Fraction(self._container.duration, av.time_base)
            # Matroska reports the end time, not the length, when the video starts late; other
            # formats report the length. Subtract the start only where that leaves a length.
            start = Fraction(self._container.start_time or 0, av.time_base)
            if seconds > start:
                seconds -= start
        else:
            return 0
        return max(1, round(seconds * self.rate))

    def __iter__(self) -> Iterator[Frame]:
        """Yield every frame of the window once, in presentation order (a source is read once)."""
        frame, self._first = self._first, None
        index, pts, kept = 0, None, None
        step = max(1, round(1 / (self.rate * self.time_base)))  # one frame, in time_base units
        window, shift = self.window, 0
        while frame is not None:
            # Raw elementary streams (.h264) carry no timestamps: count on at the nominal rate.
            if frame.pts is not None:
                pts = frame.pts
            else:
                pts = 0 if pts is None else pts + step
            seconds = (pts - self._origin) * self.time_base
            if window.past(seconds, index):
                break
            if not window.before(seconds):
                if kept is None:  # the slice starts where the video starts; so does its audio
                    shift = pts - self._origin
                    window.shift, window.first = shift * self.time_base, pts * self.time_base
                kept = pts
                meta = VideoFrameMeta(pts - shift, self.time_base)
                planes = self._plane_reader(frame) if self.planes else None
                if planes is not None:
                    yield Frame(None, index, meta=meta, planes=planes)
                else:
                    yield Frame(self.colour.to_rgb(frame, self._reformatter), index, meta=meta)
                index += 1
            frame = next(self._frames, None)
        self._finish(kept, step, cut=frame is not None)

    def _finish(self, last: int | None, step: int, cut: bool) -> None:
        """Settle :attr:`damage` once the window is read: ``last`` is the last kept pts, ``cut``
        whether the window ended before the video did."""
        if last is not None:
            self.window.end = (last + step) * self.time_base
        first = self.window.first
        lost = sorted(self._packet_pts - self._frame_pts)
        self.damage.lost = [float(stamp * self.time_base) for stamp in lost
                            if (first is None or stamp * self.time_base >= first)
                            and (not cut or (last is not None and stamp <= last))]
        # Decoder threads run up to a few packets ahead of the frames returned, B-frames reorder.
        self.damage.settle(window=float(_LOG_LAG_FRAMES / self.rate))
        if last is not None and not cut and self._stream.frames != len(self._frame_pts):
            self.damage.check_end((last + step) * self.time_base, self._stream, self.rate)

    def close(self) -> None:
        """Release the file."""
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._park is not None:
            self._park()
        self._container.close()


def park_decoder(codec: av.CodecContext) -> None:
    """Let a decoder's frame threads finish the packets they hold, waiting without the GIL.

    With FFmpeg's log routed into Python (:func:`~gtacity.engine.media.decodelog.watch`), a frame
    thread that logs an error (a damaged packet) takes the GIL to do so. PyAV frees a decoder
    holding the GIL and, in freeing it, FFmpeg waits for its frame threads: a source dropped while
    a thread still decodes a damaged packet deadlocks the whole process. ``flush_buffers`` waits
    for the threads with the GIL released, so they log and stop; freeing the decoder afterwards
    waits for nothing. Safe to call on a closed decoder (PyAV then does nothing).
    """
    codec.flush_buffers()


def _display_matrix(frame: av.VideoFrame) -> tuple[int, ...] | None:
    """The frame's display matrix (FFmpeg's 9 int32 layout), or None when it has none."""
    # A lookup by type, not a loop: PyAV 19 iterates the container's types, PyAV 18 and older its entries.
    side_data = frame.side_data.get(av.sidedata.sidedata.Type.DISPLAYMATRIX)
    return None if side_data is None else struct.unpack("=9i", bytes(side_data))  # native int32, as FFmpeg


class ImageFolderSource(SourceContext):
    """Every image under a folder, recursively, in sorted relative-path order.

    Files are found by extension (png, jpg, jpeg, webp, bmp, tif, tiff; any case). Hidden files are skipped:
    they are editor/OS debris (macOS ``._x.jpg``) or another run's unfinished outputs, never frames.
    ``Frame.meta`` is the file's path relative to the folder (a ``PurePosixPath``), which the folder
    sink mirrors.
    """

    kind = "images"

    def __init__(self, path: Path):
        self.path = path
        self.files = _list_images(path)
        if not self.files:
            raise SourceError(
                f"{path}: no images ({' '.join(IMAGE_EXTENSIONS)}) found in this folder or below; "
                "check the path"
            )

    def __len__(self) -> int:
        return len(self.files)

    def __iter__(self) -> Iterator[Frame]:
        """Yield each image in order; a damaged one raises :class:`SourceError` naming it."""
        for index, relative in enumerate(self.files):
            image, alpha = read_image(self.path / relative)
            yield Frame(image=image, index=index, meta=relative, alpha=alpha)

    def close(self) -> None:
        """Nothing is held open between frames."""


def _list_images(root: Path) -> list[PurePosixPath]:
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        relative_folder = PurePosixPath(Path(folder).relative_to(root).as_posix())
        found += [
            relative_folder / name
            for name in files
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS
        ]
    return sorted(found)


class ImageSource(SourceContext):
    """A single image file; it is read on open so a bad file fails before any work starts.

    ``Frame.meta`` is the file name (a ``PurePosixPath``). An image over ``limit`` is refused
    before it is decoded.
    """

    kind = "image"

    def __init__(self, path: Path, limit: PixelLimit | None = None):
        self.path = path
        self._image, self._alpha = read_image(path, limit)
        self.width, self.height = self._image.shape[1], self._image.shape[0]

    def __len__(self) -> int:
        return 1

    def __iter__(self) -> Iterator[Frame]:
        yield Frame(self._image, 0, meta=PurePosixPath(self.path.name), alpha=self._alpha)

    def close(self) -> None:
        """Drop the decoded image."""
        self._image = self._alpha = None

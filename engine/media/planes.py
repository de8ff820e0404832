"""Video frames as the codec's 4:2:0 planes, their colour converted on the device.

On the RGB path the CPU converts every frame twice with swscale: YUV -> RGB after decoding and
RGB -> YUV before encoding (engine/colour.py: ~6 ms and ~2 ms a 1080p frame on one core), and
copies 3 bytes a pixel each way. On the plane path the decoder's yuv420p (or NV12) planes are
uploaded as they are, 1.5 bytes a pixel, converted and laid out for the generator in one pass
(:func:`gtacity.kernels.yuv420p_to_model_input`), and the output comes back as yuv420p planes
(:func:`gtacity.kernels.model_output_to_yuv420p`) the encoder takes as they are. The kernels
convert like swscale to within 1 level (benchmarks/RESULTS.md), so the two paths give the same
video to within a level or so.

Where it runs: a video whose frames the decoder gives as 8-bit 4:2:0 with even sides, translated
on CUDA into a video (:func:`use_planes`). On the CPU the kernels are plain torch, slower than
swscale, so the CPU keeps RGB; tests still run the whole plane path there with those references.
"""

from __future__ import annotations

import av
import numpy as np
import torch
from av.video.reformatter import VideoReformatter

from gtacity import kernels
from gtacity.engine.frames import Frame, Planes
from gtacity.engine.media.colour import VideoColour
from gtacity.engine.stream.slots import download, upload
from gtacity.nets import MIN_SIZE, SIZE_MULTIPLE

# Decoder pixel formats handed out as planes. Everything else (10-bit, 4:2:2, 4:4:4, RGB, ...) is
# converted to RGB by swscale, which takes any format.
PLANE_FORMATS = ("yuv420p", "nv12")
# Side of the corner the chroma siting is probed on: enough random samples to tell the two apart.
_PROBE_SIDE = 64


def use_planes(device: torch.device, temporal: str) -> bool:
    """Whether a video translated on ``device`` should travel as planes.

    Only on CUDA, where the conversion fuses into the upload for free; on the CPU swscale is
    faster than the kernels' torch references. Not with ``--temporal flow``: its optical flow and
    blending read and write RGB frames on the host. (``stats`` and tiling act on the model's
    tensors, which are the same on either path.)
    """
    return device.type == "cuda" and temporal != "flow"


class PlaneReader:
    """Takes a decoder's frames as planes where the kernels convert them as swscale would.

    swscale places chroma where the decoder's frames say (``AVFrame.chroma_location``): H.264 and
    HEVC frames co-site it with the even columns ("left", their default), JPEG-style frames centre
    it between two, and the difference reaches tens of levels at colour edges. PyAV does not
    show the tag, so the first frame that could travel as planes is converted both ways with
    random planes written into it (then restored), and swscale's result says which siting the
    stream has; when neither matches (another siting), the stream stays RGB.
    """

    def __init__(self, colour: VideoColour):
        self._colour = colour
        self._chroma_left: bool | None = None
        self._probed = False

    def __call__(self, frame: av.VideoFrame) -> Planes | None:
        """``frame``'s planes as they are, or None where it needs RGB: another pixel format, an
        odd side (the output is then 4:4:4, see :class:`~gtacity.engine.media.sinks.VideoSink`), a
        side below the generator's minimum (:mod:`gtacity.engine.backends.tiling` takes those) or a chroma
        siting the kernels lack."""
        fmt = frame.format.name
        if fmt not in PLANE_FORMATS or frame.width % 2 or frame.height % 2:
            return None
        if min(frame.width, frame.height) < MIN_SIZE:
            return None
        if not self._probed:
            self._chroma_left, self._probed = self._siting(frame), True
        if self._chroma_left is None:
            return None
        # to_ndarray copies the planes out of FFmpeg's padded lines: a copy, not a conversion.
        colour = self._colour
        return Planes(frame.to_ndarray(), fmt, colour.kernel_matrix, colour.full_range,
                      self._chroma_left)

    def _siting(self, frame: av.VideoFrame) -> bool | None:
        """Whether swscale co-sites ``frame``'s chroma with the even columns (None: neither);
        compared on the top-left corner, away from where the corner's own edges clamp."""
        frame.make_writable()  # a copy if the decoder still holds the buffer
        saved = [bytes(plane) for plane in frame.planes]
        rng = np.random.default_rng(0)
        for plane in frame.planes:
            np.frombuffer(plane, np.uint8)[:] = rng.integers(16, 240, plane.buffer_size)
        data = torch.from_numpy(frame.to_ndarray())[None]  # (1, H*3/2, W)
        cpu = self._colour.to_rgb(frame, VideoReformatter())
        for plane, content in zip(frame.planes, saved):
            np.frombuffer(plane, np.uint8)[:] = np.frombuffer(content, np.uint8)
        side = min(_PROBE_SIDE, frame.height, frame.width) // 4 * 4
        y, u, v = _split(data, frame.format.name, frame.height)
        half = side // 2
        corner = (y[:, :side, :side], u[:, :half, :half], v[:, :half, :half])
        for left in (True, False):
            x = kernels.yuv420p_to_model_input(
                *corner, matrix=self._colour.kernel_matrix, full_range=self._colour.full_range,
                chroma_left=left,
            )
            rgb = kernels.from_model_output(x, side, side)[0, : side - 4, : side - 4].numpy()
            if np.abs(rgb.astype(np.int16) - cpu[: side - 4, : side - 4]).max() <= 1:
                return left
        return None


def _split(data: torch.Tensor, pix_fmt: str, height: int) -> tuple[torch.Tensor, ...]:
    """``(N, H*3/2, W)`` planes -> views ``y (N, H, W)``, ``u, v (N, H/2, W/2)`` (strided: NV12)."""
    if pix_fmt == "nv12":
        uv = data[:, height:].unflatten(2, (data.shape[2] // 2, 2))  # (N, H/2, W/2, 2)
        return data[:, :height], uv[..., 0], uv[..., 1]
    return kernels.split_yuv420p(data)


def planes_to_batch(
    frames: list[Frame], device: torch.device, dtype: torch.dtype, host: torch.Tensor | None
) -> torch.Tensor:
    """Frames carrying planes -> ``(N, 3, Hp, Wp)`` model input on ``device``, like
    :func:`gtacity.engine.stream.pipeline.to_batch` (same ``host`` buffer rules, ``(N, H*3/2, W)``)."""
    first = frames[0].planes
    data = upload([f.planes.data for f in frames], device, host)  # (N, H*3/2, W) uint8
    return kernels.yuv420p_to_model_input(
        *_split(data, first.pix_fmt, first.size[0]), matrix=first.matrix,
        full_range=first.full_range, dtype=dtype, multiple=SIZE_MULTIPLE,
        chroma_left=first.chroma_left,
    )


def planes_from_batch(
    y: torch.Tensor, frames: list[Frame], host: torch.Tensor | None
) -> list[Frame]:
    """``(N, 3, Hp, Wp)`` model output -> the frames carrying yuv420p planes in their input's
    colour, like :func:`gtacity.engine.stream.pipeline.to_frames`; only the planes are downloaded.

    Their chroma is centred, as swscale writes it on the RGB path."""
    first = frames[0].planes
    height, width = first.size
    yuv = kernels.model_output_to_yuv420p(
        y, height, width, matrix=first.matrix, full_range=first.full_range
    )  # (N, H*3/2, W) uint8, where y is
    return [
        f.with_planes(Planes(data, "yuv420p", first.matrix, first.full_range))
        for f, data in zip(frames, download(yuv, host).numpy())
    ]

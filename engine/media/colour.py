"""YUV <-> RGB with the video's own matrix and range, and the tags that say which ones.

A video's pixels are YUV; the generators see RGB. Converting with the wrong matrix (BT.601 for a
BT.709 clip) shifts every colour a little, and a wrong range washes the picture out or crushes it,
so the decoder and the encoder must agree with each other *and* with the input file. The rule:

- a tagged matrix/range is used as tagged;
- an untagged matrix is BT.709 for HD (height >= 720 or width >= 1280) and BT.601 for SD, which is
  what players assume; an untagged range is limited ("tv"), H.264's default.

The output is tagged exactly as the input was (an untagged input gives an untagged output, which a
player then reads with the same size rule we used); the only exception is a matrix the encoder
cannot reproduce (RGB, YCgCo, ...), where the output is tagged with the matrix actually used.
"""

from __future__ import annotations

from dataclasses import dataclass

import av
import numpy as np
from av.video.reformatter import ColorRange, Colorspace, Interpolation, VideoReformatter

# FFmpeg's AVColorSpace numbers (what frame/stream tags hold) -> swscale's conversion matrix.
# BT.470BG and SMPTE 170M are both BT.601 coefficients; BT.2020 CL is converted as NCL.
_AVCOL_SPC_TO_SWS = {
    1: Colorspace.ITU709,  # AVCOL_SPC_BT709
    4: Colorspace.FCC,  # AVCOL_SPC_FCC
    5: Colorspace.ITU601,  # AVCOL_SPC_BT470BG
    6: Colorspace.ITU601,  # AVCOL_SPC_SMPTE170M
    7: Colorspace.SMPTE240M,  # AVCOL_SPC_SMPTE240M
    9: Colorspace.BT2020,  # AVCOL_SPC_BT2020_NCL
    10: Colorspace.BT2020,  # AVCOL_SPC_BT2020_CL
}
_SWS_TO_AVCOL_SPC = {Colorspace.ITU709: 1, Colorspace.ITU601: 6}
# swscale's matrices by the names of gtacity.kernels.MATRICES, which converts with the same ones.
_SWS_TO_KERNEL = {
    Colorspace.ITU709: "bt709",
    Colorspace.FCC: "fcc",
    Colorspace.ITU601: "bt601",
    Colorspace.SMPTE240M: "smpte240m",
    Colorspace.BT2020: "bt2020",
}
_AVCOL_SPC_UNSPECIFIED = 2

# swscale's default 8-bit YUV -> RGB path (table-based, nearest chroma) darkens limited-range video
# by 1-1.5 levels per channel (FFmpeg 8.1); ACCURATE_RND alone is worse (-2), and only with
# FULL_CHR_H_INT is the result unbiased (error <= 1 level on flat colour), at ~6 ms per 1080p frame
# instead of ~1. For RGB -> YUV, ACCURATE_RND removes a 0.3-level bias and is also the faster path.
_DECODE_FLAGS = Interpolation.BILINEAR | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT
_ENCODE_FLAGS = Interpolation.BILINEAR | Interpolation.ACCURATE_RND


@dataclass(frozen=True)
class VideoColour:
    """How a video's YUV maps to RGB: what the file says (tags) and what we convert with.

    Attributes:
        matrix: the AVColorSpace tag, as read (2 = unspecified).
        range: the AVColorRange tag, as read (0 = unspecified, 1 = limited, 2 = full).
        primaries: the AVColorPrimaries tag, as read (2 = unspecified); carried, never converted.
        transfer: the AVColorTransferCharacteristic tag, as read (2 = unspecified); carried.
        conversion: the swscale matrix both directions use.
        full_range: whether YUV uses the full 0-255 range (else 16-235/240).
    """

    matrix: int
    range: int
    primaries: int
    transfer: int
    conversion: Colorspace
    full_range: bool

    @classmethod
    def from_tags(
        cls, *, matrix: int, range: int, primaries: int, transfer: int, width: int, height: int
    ) -> VideoColour:
        """Resolve the conversion for a stream with these tags and this frame size."""
        conversion = _AVCOL_SPC_TO_SWS.get(matrix)
        if conversion is None:
            hd = height >= 720 or width >= 1280
            conversion = Colorspace.ITU709 if hd else Colorspace.ITU601
        return cls(
            matrix=matrix,
            range=range,
            primaries=primaries,
            transfer=transfer,
            conversion=conversion,
            full_range=range == ColorRange.JPEG,
        )

    @classmethod
    def of_frame(cls, frame: av.VideoFrame) -> VideoColour:
        """A decoded frame's colour (FFmpeg fills tags the bitstream lacks from the container)."""
        return cls.from_tags(
            matrix=frame.colorspace,
            range=frame.color_range,
            primaries=frame.color_primaries,
            transfer=frame.color_trc,
            width=frame.width,
            height=frame.height,
        )

    @property
    def output_matrix(self) -> int:
        """The matrix tag for an encode: the input's, unless the input's is one we could not use."""
        if self.matrix == _AVCOL_SPC_UNSPECIFIED or self.matrix in _AVCOL_SPC_TO_SWS:
            return self.matrix
        return _SWS_TO_AVCOL_SPC[self.conversion]

    @property
    def kernel_matrix(self) -> str:
        """The conversion matrix by its :data:`gtacity.kernels.MATRICES` name (GPU conversion)."""
        return _SWS_TO_KERNEL[self.conversion]

    @property
    def _sws_range(self) -> ColorRange:
        return ColorRange.JPEG if self.full_range else ColorRange.MPEG

    def to_rgb(self, frame: av.VideoFrame, reformatter: VideoReformatter) -> np.ndarray:
        """Decoded frame (any YUV or RGB pixel format, 8-16 bit) -> ``(H, W, 3)`` uint8 RGB."""
        rgb = reformatter.reformat(
            frame,
            format="rgb24",
            src_colorspace=self.conversion,
            src_color_range=self._sws_range,
            dst_color_range=ColorRange.JPEG,
            interpolation=_DECODE_FLAGS,
        )
        return rgb.to_ndarray()

    def from_rgb(
        self, image: np.ndarray, pix_fmt: str, reformatter: VideoReformatter
    ) -> av.VideoFrame:
        """``(H, W, 3)`` uint8 RGB -> a frame in ``pix_fmt`` converted and tagged like the input."""
        # from_ndarray takes strided rows but not strided pixels (a flipped or channel-sliced view).
        rgb = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        yuv = reformatter.reformat(
            rgb,
            format=pix_fmt,
            dst_colorspace=self.conversion,
            dst_color_range=self._sws_range,
            interpolation=_ENCODE_FLAGS,
        )
        # reformat tags the frame with its own idea of the matrix (601 -> SMPTE 170M even for a
        # BT.470BG input); the encoder must see exactly the input's tags.
        return self._tagged(yuv)

    def from_planes(self, data: np.ndarray, pix_fmt: str) -> av.VideoFrame:
        """``(H * 3 // 2, W)`` 4:2:0 planes already in this video's colour -> a frame tagged like
        the input; nothing is converted."""
        return self._tagged(av.VideoFrame.from_ndarray(data, format=pix_fmt))

    def _tagged(self, frame: av.VideoFrame) -> av.VideoFrame:
        frame.colorspace = self.output_matrix
        frame.color_range = self.range
        frame.color_primaries = self.primaries
        frame.color_trc = self.transfer
        return frame

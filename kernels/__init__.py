"""Fused pixel kernels around the generator: frames and video planes in and out of model tensors.

Every function takes tensors on any device: CUDA tensors run a Triton kernel (one pass over the
memory), everything else runs the plain torch reference the kernel is tested against. Triton is
optional and imported only when a CUDA tensor arrives. This package imports nothing else of
gtacity, so it can be tested and benchmarked on its own.
"""

from .common import MATRICES
from .layout import from_model_output, to_model_input
from .yuv import model_output_to_yuv420p, nv12_to_model_input, split_yuv420p, yuv420p_to_model_input

__all__ = [
    "MATRICES",
    "from_model_output",
    "model_output_to_yuv420p",
    "nv12_to_model_input",
    "split_yuv420p",
    "to_model_input",
    "yuv420p_to_model_input",
]

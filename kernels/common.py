"""What the torch references and their Triton bodies share: sizes and the YUV fixed-point constants.

Kept apart so that :mod:`~gtacity.kernels.layout` / :mod:`~gtacity.kernels.yuv` and their Triton
bodies (imported only for CUDA tensors) depend on this module, not on each other.
"""

from __future__ import annotations

from dataclasses import dataclass

# (Kr, Kb) of each matrix swscale converts with; Kg = 1 - Kr - Kb.
MATRICES = {
    "bt601": (0.299, 0.114),
    "bt709": (0.2126, 0.0722),
    "fcc": (0.30, 0.11),
    "smpte240m": (0.212, 0.087),
    "bt2020": (0.2627, 0.0593),
}
SHIFT = 16  # fraction bits of the fixed-point coefficients


def padded(size: int, multiple: int) -> int:
    """``size`` rounded up to a multiple of ``multiple``."""
    return size + (-size % multiple)


@dataclass(frozen=True)
class YuvCoefficients:
    """Fixed-point conversion constants for one matrix and range (scaled by ``2**SHIFT``).

    ``y_*`` / ``u_*`` / ``v_*``: RGB -> YUV rows. ``r_v``, ``g_u``, ``g_v``, ``b_u``, ``luma``:
    YUV -> RGB (``g_u`` and ``g_v`` are subtracted). ``y_offset``: 16 (limited) or 0 (full).
    ``chroma_round``: added before the RGB -> YUV chroma shift (half a level, or 0 where
    swscale truncates).
    """

    y_r: int
    y_g: int
    y_b: int
    u_r: int
    u_g: int
    u_b: int
    v_r: int
    v_g: int
    v_b: int
    luma: int
    r_v: int
    g_u: int
    g_v: int
    b_u: int
    y_offset: int
    chroma_round: int

    @classmethod
    def of(cls, matrix: str, full_range: bool) -> YuvCoefficients:
        """Constants for ``matrix`` (a :data:`MATRICES` name) in full or limited range."""
        if matrix not in MATRICES:
            raise ValueError(
                f"unknown colour matrix {matrix!r}; expected one of {sorted(MATRICES)}"
            )
        kr, kb = MATRICES[matrix]
        kg = 1 - kr - kb
        y_scale, c_scale = (1.0, 1.0) if full_range else (219 / 255, 224 / 255)
        u_scale, v_scale = c_scale / (2 * (1 - kb)), c_scale / (2 * (1 - kr))

        def fixed(x: float) -> int:
            return round(x * (1 << SHIFT))

        return cls(
            *(fixed(k * y_scale) for k in (kr, kg, kb)),
            *(fixed(k * u_scale) for k in (-kr, -kg, 1 - kb)),
            *(fixed(k * v_scale) for k in (1 - kr, -kg, -kb)),
            luma=fixed(1 / y_scale),
            r_v=fixed(2 * (1 - kr) / c_scale),
            g_u=fixed(2 * (1 - kb) * kb / kg / c_scale),
            g_v=fixed(2 * (1 - kr) * kr / kg / c_scale),
            b_u=fixed(2 * (1 - kb) / c_scale),
            y_offset=0 if full_range else 16,
            chroma_round=0 if full_range else 1 << (SHIFT + 3),
        )

"""Measuring translations: bench and its report, fidelity, flicker, realism, segmentation and the HTML report."""

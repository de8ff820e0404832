"""Flicker remedies for video and the optical flow they use."""

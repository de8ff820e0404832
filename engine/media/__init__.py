"""What comes in and goes out: frame sources and sinks, colour tags, damage reports, YUV planes and the output lock."""

"""The stage graph: decode -> batch -> slots in flight -> encode, and the batch conversions it runs."""

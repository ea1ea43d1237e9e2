"""Video primitives: opening inputs, probing, decoding clips, encoding outputs."""

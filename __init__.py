"""spotart: self-supervised visual features by spotting artifacts (Jenni & Favaro 2018) and the
classic pretext tasks, fed by NVIDIA DALI pipelines over WebDataset shards."""

__version__ = "0.1.0"

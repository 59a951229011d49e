"""`spotart profile`: is the GPU starved, and by what?

config (ProfileConfig) -> run.profile: stages (the pipeline cut into truncated pipelines),
steps (the training step alone and fed by the loader, torch.profiler), sampler (CPU time per
thread from /proc, GPU utilisation from NVML) -> diagnose (the bottleneck and its knob) ->
report (report.json validated against schema, report.md, charts, report.html); compare (two
reports side by side); from_run (the same figures averaged from a run's metrics.jsonl)."""

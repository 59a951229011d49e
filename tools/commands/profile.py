"""CLI: profile."""

from __future__ import annotations

import json
import os

import click

opt = dict(show_default=True)


@click.command("profile")
@click.option("--shards", type=click.Path(file_okay=False), default=None,
              help="Shard directory made by `spotart build-shards`: profile the pipeline and step a `spotart train` "
                   "with the same --task/--preset/--set would run.")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Report directory: report.json, report.md, report.html, throughput/timeline/utilisation PNGs, "
                   "train_step_trace.json (open in Perfetto / chrome://tracing).")
@click.option("--task", default="artifacts", **opt, help="Pretext task, as `spotart train --task`.")
@click.option("--preset", default="64px", **opt, help="Sizes, as `spotart train --preset` (tiny, 64px, alexnet).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Training config override, as `spotart train --set` (batch_size, num_threads, compile, "
                   "precision, device, ...); repeatable.")
@click.option("--pipeline-set", "pipeline_overrides", multiple=True, metavar="KEY=VALUE",
              help="Pipeline knob the trainer does not expose: prefetch (queue depth), hw_decoder_load (share of "
                   "JPEGs for the hardware decoder, A100/H100), num_threads, initial_fill; repeatable.")
@click.option("--batches", type=click.IntRange(2), default=50, **opt, help="Timed batches (steps) per measurement.")
@click.option("--rounds", type=click.IntRange(1), default=3, **opt,
              help="Split the timed batches of pipeline alone / step alone / together into this many interleaved "
                   "rounds, so load changes on a shared machine hit all three alike.")
@click.option("--warmup", type=click.IntRange(0), default=5, **opt, help="Untimed batches before each measurement.")
@click.option("--profile-steps", type=click.IntRange(1), default=5, **opt, help="Steps under torch.profiler.")
@click.option("--phase", default="last", **opt,
              help="Which phase's step to profile (artifacts: autoencoder, artifacts; last = the main phase).")
@click.option("--interval", type=click.FloatRange(0.005, 10), default=0.1, **opt,
              help="Seconds between CPU/GPU utilisation samples.")
@click.option("--no-trace", is_flag=True, help="Do not write the torch.profiler Chrome trace.")
@click.option("--compare", "compare_with", type=click.Path(exists=True, file_okay=False), default=None,
              help="A previous report directory: write compare.{md,html,json,png} (before = it, after = --out) with "
                   "ratios. Without --shards, --out must already hold a report.")
@click.option("--from-run", "from_run", type=click.Path(exists=True, file_okay=False), default=None,
              help="Summarise a training run's RUN/metrics.jsonl (images/s, data wait, GPU memory, averaged) "
                   "instead of profiling; with --out, also writes run_summary.{json,md} there.")
def profile(shards, out, task, preset, overrides, pipeline_overrides, batches, rounds, warmup, profile_steps, phase,
            interval, no_trace, compare_with, from_run):
    """Is the GPU starved, and by what? In one process: the input pipeline alone (and cut into
    stages: read, decode, augment, task generator), the training step alone on batches recorded
    from that pipeline and replayed from the device, and the two together. Reports images/s of each, the fraction of the
    end-to-end step spent waiting for data, each pipeline stage's cost, the top kernels of a
    step (torch.profiler), CPU use of the pipeline threads, GPU utilisation and memory (NVML,
    when installed), and names the bottleneck with the knob to turn.

    Before/after a change: `spotart profile ... --out A`, change a knob, `spotart profile ...
    --out B --compare A`."""
    from spotart.tools.profile.compare import write_compare
    from spotart.tools.profile.report import load_report

    try:
        if from_run:
            from spotart.tools.profile.from_run import summarise_run, to_markdown

            s = summarise_run(from_run)
            md = to_markdown(s)
            if out:
                os.makedirs(out, exist_ok=True)
                with open(os.path.join(out, "run_summary.json"), "w") as f:
                    json.dump(s, f, indent=1)
                with open(os.path.join(out, "run_summary.md"), "w") as f:
                    f.write(md)
            click.echo(md)
            return
        if not out:
            raise click.UsageError("--out REPORT_DIR is required (or --from-run RUN)")
        if shards:
            from spotart.tools.profile.config import ProfileConfig
            from spotart.tools.profile.run import profile as run

            pc = ProfileConfig(shards=os.path.abspath(shards), out=out, task=task, preset=preset, overrides=overrides,
                               pipeline_overrides=pipeline_overrides, warmup=warmup, batches=batches, rounds=rounds,
                               profile_steps=profile_steps, phase=phase, sample_interval=interval, trace=not no_trace)
            report = run(pc)
            st = report["stages"]
            click.echo(f"pipeline {st['pipeline']['images_per_s']:,.0f} img/s | "
                       f"step {st['train']['images_per_s']:,.0f} img/s | together {st['end_to_end']['images_per_s']:,.0f} img/s, "
                       f"{100 * report['data_wait_frac']:.1f}% waiting for data")
            click.echo(report["bottleneck"]["sentence"])
            click.echo(f"report: {os.path.join(out, 'report.html')}")
        elif not compare_with:
            raise click.UsageError("give --shards DIR to profile, --compare OLD_REPORT to compare, or --from-run RUN")
        if compare_with:
            c = write_compare(load_report(compare_with), load_report(out), out)
            for r in c["figures"][:4]:
                if r["ratio"] is not None:
                    click.echo(f"{r['figure']}: {r['before']:.4g} -> {r['after']:.4g} (x{r['ratio']:.2f})")
            click.echo(f"comparison: {os.path.join(out, 'compare.html')}")
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        raise click.ClickException(str(err)) from None

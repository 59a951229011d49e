"""CLI: train, export-backbone."""

from __future__ import annotations

import sys

import click

opt = dict(show_default=True)


@click.command("train")
@click.argument("run_dir", metavar="RUN", type=click.Path(file_okay=False))
@click.option("--task", default=None,
              help="Task (spotart.trainer.tasks): artifacts (Learning to Spot Artifacts), context, jigsaw, "
                   "inpainting, supervised.  [default: artifacts]")
@click.option("--preset", default=None,
              help="Sizes: tiny (32 px, CPU tests), 64px (tiny-imagenet-a / STL-10 scale, batch 256 per GPU), "
                   "alexnet (224 px, the paper's AlexNet).  [default: 64px; with --resume the run's saved config]")
@click.option("--shards", type=click.Path(file_okay=False), default=None,
              help="Shard directory made by `spotart build-shards` (not needed with --synthetic).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config key; repeatable. Top-level keys (steps, batch_size, lr, log_every, "
                   "ckpt_every, stop_after, cpu_threads, min_area, ...), trunk.<key>, the task's networks and "
                   "losses as params.<key> (ae_fraction=0.5, mask_weight=0.1, rec_weight=30, mask_on_real, ...) and "
                   "its data as pipeline.<key> (theta=0.6, color_drop, grey_prob, mode, ...); a bare key is looked "
                   "up in params, then pipeline. Unknown keys are errors.")
@click.option("--steps", type=click.IntRange(1), default=None, help="Total optimisation steps, all phases.")
@click.option("--batch-size", type=click.IntRange(1), default=None, help="Batch size per process (rank).")
@click.option("--precision", type=click.Choice(["auto", "bf16", "fp16", "fp32"]), default=None,
              help="auto: bf16 autocast on GPU, fp32 on CPU; fp16 adds a GradScaler.")
@click.option("--device", default=None, help="auto, cpu, cuda or cuda:N.")
@click.option("--compile", "compile_", is_flag=True, default=None, help="torch.compile the networks.")
@click.option("--synthetic", is_flag=True,
              help="Train on the task's own pipeline over procedural images, no shards (tests, smoke runs).")
@click.option("--resume", is_flag=True,
              help="Continue RUN exactly from checkpoints/last.pt (checkpoints/previous.pt if last.pt is unreadable).")
@click.option("--max-bad-samples", type=click.IntRange(0), default=None,
              help="Undecodable samples (all ranks) left out and logged to RUN/skipped.jsonl before the run stops "
                   "with a checkpoint.  [default: 10]")
@click.option("--verify", is_flag=True, default=None,
              help="Before training, hash every shard against the manifest (default: sizes and index files only).")
@click.option("--monitor-shards", type=click.Path(file_okay=False), default=None,
              help="A labelled shard set (e.g. a val split): every monitor_every steps (--set, default 500) the "
                   "trunk's conv5 k-NN top-1 on it (k=20, cosine, DINO/solo-learn style) goes to metrics.jsonl.")
def train(task, preset, shards, run_dir, overrides, steps, batch_size, precision, device, compile_, synthetic, resume,
          max_bad_samples, verify, monitor_shards):
    """Self-supervised training into the run directory RUN (config.json, metrics.jsonl, train.log,
    checkpoints/last.pt). The artifacts task follows Jenni & Favaro (CVPR 2018): phase 1
    pre-trains an autoencoder; phase 2 freezes it, drops encoder features with the pipeline's
    mask Omega (dropped entries get a 3x3 local average), repairs them adversarially and trains
    the discriminator C to tell real from damaged and to predict Omega. C's trunk is the feature
    extractor (export it with `spotart export-backbone`). Adam lr 3e-4, beta1 0.5, linear decay.

    Several GPUs: `torchrun --nproc_per_node=K -m spotart.tools.cli train ...` (each rank reads its
    own part of the shards; batch size is per rank; each rank's GPU is cuda:LOCAL_RANK). SIGTERM/
    SIGINT save a checkpoint and exit with 128 + the signal number. A sample that does not decode
    is left out and logged (RUN/skipped.jsonl); more than --max-bad-samples, or
    max_nonfinite_steps non-finite steps in a row (a diverging GAN), stop the run with a
    checkpoint and a message saying what to change (exit 1). On a small shared CPU, `--set
    cpu_threads=1` avoids OpenMP threads spinning against DALI's workers."""
    from spotart.trainer.checkpoint import CheckpointError
    from spotart.trainer.config import config_for_run
    from spotart.trainer.data import DataError
    from spotart.trainer.loop import train as run
    from spotart.trainer.runtime import TrainingOOM

    sets = list(overrides)
    for key, value in (("shards", shards), ("steps", steps), ("batch_size", batch_size), ("precision", precision),
                       ("device", device), ("max_bad_samples", max_bad_samples), ("monitor_shards", monitor_shards)):
        if value is not None:
            sets.append(f"{key}={value}")
    if compile_:
        sets.append("compile=true")
    if synthetic:
        sets.append("data=synthetic")
    if verify:
        sets.append("verify=true")
    try:
        cfg = config_for_run(run_dir, task=task, preset=preset, overrides=sets, resume=resume)
        summary = run(cfg, run_dir, resume=resume)
    except (ValueError, FileNotFoundError, FileExistsError, CheckpointError, DataError, TrainingOOM) as err:
        raise click.ClickException(str(err)) from None
    except OSError as err:  # e.g. a full disk while writing config.json or metrics
        from .shards import disk_message

        raise click.ClickException(disk_message(err, run_dir, f"`spotart train {run_dir} --resume`")) from None
    last = summary.get("last") or {}
    shown = {k: round(v, 4) for k, v in last.items() if isinstance(v, float)}
    click.echo(f"step {summary['step']}/{cfg.steps} {last.get('phase', '')} {shown}", err=True)
    if summary.get("halted"):
        raise click.ClickException(summary["halted"])
    if summary["signal"]:
        click.echo(f"stopped by signal {summary['signal']}; continue with: spotart train {run_dir} --resume", err=True)
        sys.exit(128 + summary["signal"])


@click.command("export-backbone")
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output .pt file.")
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False), default=None,
              help="A checkpoint of RUN other than checkpoints/last.pt.")
def export_backbone(run, out, checkpoint):
    """Write the trunk of RUN's discriminator (conv1..conv5) as {"state_dict", "config"}: a plain
    file that torch.load(weights_only=True) opens; `spotart.trainer.export.load_backbone(FILE)`
    rebuilds the Trunk for transfer and linear evaluation."""
    from spotart.trainer.checkpoint import CheckpointError
    from spotart.trainer.export import export_backbone as run_export

    try:
        config = run_export(run, out, checkpoint=checkpoint)
    except (ValueError, CheckpointError) as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"wrote {out}: {config['task']} trunk ({config['preset']}), step {config['step']}")

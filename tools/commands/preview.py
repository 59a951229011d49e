"""`spotart preview`: draw one batch of a task's pipeline as a PNG grid."""

from __future__ import annotations

import click

opt = dict(show_default=True)


@click.command("preview")
@click.option("--task", type=click.Choice(["artifacts", "inpainting", "context", "jigsaw", "supervised"]),
              default="artifacts", **opt, help="Task whose inputs to draw (supervised: the plain augmented images).")
@click.option("--preset", default="64px", **opt, help="Sizes, as for `spotart train` (tiny, 64px, alexnet).")
@click.option("--shards", type=click.Path(exists=True, file_okay=False), required=True,
              help="Shard directory made by `spotart build-shards` (with manifest.json).")
@click.option("--out", type=click.Path(dir_okay=False, writable=True), required=True, help="Output PNG file.")
@click.option("--batch", "batch_size", type=click.IntRange(1, 256), default=8, **opt, help="Samples (rows) to draw.")
@click.option("--image-size", type=click.IntRange(8), default=None,
              help="Side of the square crop every task starts from, px.  [default: the preset's]")
@click.option("--seed", type=int, default=0, **opt, help="Pipeline seed: same seed, same picture.")
@click.option("--device", type=click.Choice(["cpu", "gpu"]), default="cpu", **opt,
              help="DALI backend that makes the batch (the picture is drawn on the CPU either way).")
@click.option("--eval", "evaluation", is_flag=True,
              help="Evaluation pipeline: centre crop, no flips (masks and patches stay random, seeded).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Config key, repeatable, exactly as for `spotart train --set`: every data parameter of the "
                   "task, e.g. mode=blocks (inpainting), theta=0.7 (artifacts), color_drop=false (context), "
                   "grey_prob=0 (jigsaw). Unknown keys are errors.")
def preview(task, preset, shards, out, batch_size, image_size, seed, device, evaluation, overrides):
    """Draw one batch of TASK's pipeline from SHARDS to OUT: artifacts show the dropped cells of
    Omega in red, inpainting the masked input, target and loss weights (overlap band 10x), context
    the patch pair at its relative position, jigsaw the shuffled tiles and the reassembled image."""
    from ..preview import preview as run
    from ...trainer.config import build_config
    from ...trainer.data import pipeline_config
    from ...trainer.runtime import resolve_runtime

    sets = [*overrides, f"batch_size={batch_size}", f"seed={seed}", "precision=fp32",
            f"device={'cuda' if device == 'gpu' else 'cpu'}"] + ([f"image_size={image_size}"] if image_size else [])
    try:
        cfg = build_config(task, preset, sets)
        pcfg = pipeline_config(cfg, resolve_runtime(cfg), training=not evaluation, shards=shards,
                               shard_id=0, num_shards=1)
        width, height = run(pcfg, out)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"{task}: {batch_size} samples -> {out} ({width}x{height} px)")

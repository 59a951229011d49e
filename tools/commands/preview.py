"""`spotart preview`: draw one batch of a task's pipeline as a PNG grid."""

from __future__ import annotations

import json

import click

opt = dict(show_default=True)


def parse_params(pairs: tuple[str, ...]) -> dict:
    """KEY=VALUE strings -> dict; values read as JSON when they parse (numbers, true, null), else text."""
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--set")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


@click.command("preview")
@click.option("--task", type=click.Choice(["artifacts", "inpainting", "context", "jigsaw", "images"]),
              default="artifacts", **opt, help="Pretext task whose inputs to draw.")
@click.option("--shards", type=click.Path(exists=True, file_okay=False), required=True,
              help="Shard directory made by `spotart build-shards` (with manifest.json).")
@click.option("--out", type=click.Path(dir_okay=False, writable=True), required=True, help="Output PNG file.")
@click.option("--batch", "batch_size", type=click.IntRange(1, 256), default=8, **opt, help="Samples (rows) to draw.")
@click.option("--image-size", type=click.IntRange(8), default=64, **opt,
              help="Side of the square crop every task starts from, px.")
@click.option("--seed", type=int, default=0, **opt, help="Pipeline seed: same seed, same picture.")
@click.option("--device", type=click.Choice(["cpu", "gpu"]), default="cpu", **opt,
              help="DALI backend that makes the batch (the picture is drawn on the CPU either way).")
@click.option("--eval", "evaluation", is_flag=True,
              help="Evaluation pipeline: centre crop, no flips (masks and patches stay random, seeded).")
@click.option("--set", "--param", "params", multiple=True, metavar="KEY=VALUE",
              help="Task parameter, repeatable, e.g. --set mode=blocks (inpainting), --set theta=0.3 "
                   "(artifacts), --set count=100 (jigsaw). Values are read as JSON where they parse. "
                   "Unknown keys are errors.")
def preview(task, shards, out, batch_size, image_size, seed, device, evaluation, params):
    """Draw one batch of TASK's pipeline from SHARDS to OUT: artifacts show the dropped cells of
    Omega in red, inpainting the masked input, target and loss weights (overlap band 10x), context
    the patch pair at its relative position, jigsaw the shuffled tiles and the reassembled image."""
    from ..preview import preview as run
    from ...pipeline.config import PipelineConfig

    try:
        cfg = PipelineConfig(shards=shards, task=task, batch_size=batch_size, image_size=image_size, seed=seed,
                             device=device, training=not evaluation, params=parse_params(params))
        width, height = run(cfg, out)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"{task}: {batch_size} samples -> {out} ({width}x{height} px)")

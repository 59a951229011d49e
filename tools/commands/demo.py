"""CLI: demo, the main job end to end on a built-in default."""

from __future__ import annotations

import click


@click.command("demo")
@click.option("--out", default="runs/demo", show_default=True, type=click.Path(file_okay=False),
              help="Directory for the sample images, shards, run and backbone.")
@click.option("--count", type=click.IntRange(16), default=512, show_default=True, help="Sample images to generate.")
@click.option("--steps", type=click.IntRange(2), default=300, show_default=True,
              help="Training steps, both phases together (autoencoder pretraining, then artifact spotting).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Training config overrides (see `spotart train --help`).")
def demo(out, count, steps, overrides):
    """Run the main job on a built-in default, no GPU or data needed: make a procedural sample
    collection, build shards, train the `tiny` Learning-to-Spot-Artifacts model through the DALI
    CPU pipeline, export the backbone, and print where everything is."""
    from spotart.tools.demo import run_demo

    try:
        run_demo(out, count=count, steps=steps, overrides=list(overrides), echo=click.echo)
    except (FileExistsError, ValueError, FileNotFoundError) as err:
        raise click.ClickException(str(err)) from None

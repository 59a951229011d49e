"""`spotart plot`: PNG training curves of one or more runs."""

from __future__ import annotations

import click


@click.command("plot")
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False), metavar="RUN...")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Directory for the PNG files.")
def plot(runs, out):
    """Curves of RUN's metrics.jsonl, several runs overlaid: losses.png, accuracy.png (real/fake
    accuracy, mask AUC/IoU, pretext accuracy), knn.png (the online k-NN monitor's top-1) and
    throughput.png (img/s, data-wait fraction, GPU memory); dashed lines mark phase changes."""
    from ..plot import plot_runs

    try:
        files = plot_runs(list(runs), out)
    except (ValueError, FileNotFoundError) as err:
        raise click.ClickException(str(err)) from None
    for f in files:
        click.echo(f)

"""CLI: eval linear, eval pretext."""

from __future__ import annotations

import json
import os

import click

opt = dict(show_default=True)


@click.group("eval")
def evaluate():
    """Evaluate features: `linear` (frozen trunk, a linear classifier per conv layer, the papers'
    per-layer protocol) and `pretext` (a run's own pretext accuracy on held-out data)."""


@evaluate.command("linear")
@click.argument("backbone")
@click.option("--train-shards", required=True, type=click.Path(file_okay=False),
              help="Labelled shards the classifiers train on (spotart build-shards of class folders).")
@click.option("--val-shards", required=True, type=click.Path(file_okay=False),
              help="Labelled held-out shards with the same classes: top-1/top-5 are measured here.")
@click.option("--out", default=None, type=click.Path(dir_okay=False),
              help="Output prefix: writes PREFIX.json and PREFIX.md.  [default: BACKBONE without .pt + .linear]")
@click.option("--epochs", type=click.IntRange(1), default=10, **opt, help="Passes over the training shards.")
@click.option("--batch-size", type=click.IntRange(1), default=128, **opt)
@click.option("--optimizer", type=click.Choice(["adam", "sgd"]), default="adam", **opt)
@click.option("--lr", type=float, default=1e-3, **opt, help="Learning rate (cosine decay to 0); sgd wants ~0.1.")
@click.option("--weight-decay", type=float, default=0.0, **opt)
@click.option("--dims", type=click.IntRange(1), default=9216, **opt,
              help="Features per layer after adaptive average pooling (Zhang et al.: ~9K; conv1 96x10x10, "
                   "conv5 256x6x6 on AlexNet). A layer smaller than that keeps its own size.")
@click.option("--image-size", type=click.IntRange(16), default=None,
              help="Input side.  [default: the backbone's training image size]")
@click.option("--cache-features", is_flag=True,
              help="Compute the training features once (centre crops, no augmentation) and reuse them every "
                   "epoch: much faster on a CPU. Default: recomputed each epoch with the training augmentation.")
@click.option("--max-train-batches", type=click.IntRange(0), default=0, **opt,
              help="At most this many training batches per epoch (0: all; smoke runs).")
@click.option("--device", default="auto", **opt, help="auto, cpu, cuda or cuda:N.")
@click.option("--precision", type=click.Choice(["auto", "bf16", "fp16", "fp32"]), default="auto", **opt,
              help="Autocast of the frozen trunk: auto is bf16 on GPU, fp32 on CPU.")
@click.option("--num-threads", type=click.IntRange(1), default=4, **opt, help="DALI CPU threads.")
@click.option("--seed", type=int, default=0, **opt)
def linear(backbone, train_shards, val_shards, out, epochs, batch_size, optimizer, lr, weight_decay, dims, image_size,
           cache_features, max_train_batches, device, precision, num_threads, seed):
    """Linear evaluation of BACKBONE (a file from `spotart export-backbone`, or random:PRESET[:SEED]
    for an untrained trunk, the floor): frozen trunk, conv1..conv5 each pooled to about --dims
    features, one linear classifier per layer (standardised features, softmax regression), top-1
    and top-5 on --val-shards. Writes PREFIX.json and a Markdown table PREFIX.md."""
    from spotart.trainer.eval_linear import LinearEvalConfig, linear_eval, markdown_table, write_results

    try:
        cfg = LinearEvalConfig(train_shards=train_shards, val_shards=val_shards, image_size=image_size,
                               batch_size=batch_size, epochs=epochs, optimizer=optimizer, lr=lr,
                               weight_decay=weight_decay, dims=dims, cache=cache_features, device=device,
                               precision=precision, num_threads=num_threads, seed=seed,
                               max_train_batches=max_train_batches)
        result = linear_eval(backbone, cfg, on_epoch=lambda r: click.echo(
            f"epoch {r['epoch']}/{epochs} train loss " + " ".join(f"{k} {v:.3f}" for k, v in r["train_loss"].items()),
            err=True))
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        raise click.ClickException(str(err)) from None
    if out is None:
        stem = backbone[:-3] if backbone.endswith(".pt") else backbone.replace(":", "_")
        out = stem + ".linear"
    paths = write_results(result, out)
    click.echo(markdown_table(result))
    click.echo(f"wrote {paths[0]} and {paths[1]}", err=True)


@evaluate.command("pretext")
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--shards", required=True, type=click.Path(file_okay=False),
              help="Held-out shards (not the training ones) for the run's own pipeline.")
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False), default=None,
              help="A checkpoint of RUN other than checkpoints/last.pt.")
@click.option("--batch-size", type=click.IntRange(1), default=None, help="[default: the run's]")
@click.option("--max-batches", type=click.IntRange(0), default=0, **opt, help="0: the whole shard set.")
@click.option("--device", default="auto", **opt)
@click.option("--precision", type=click.Choice(["auto", "bf16", "fp16", "fp32"]), default="auto", **opt,
              help="auto: bf16 autocast on GPU, fp32 on CPU (whatever the run trained with).")
@click.option("--num-threads", type=click.IntRange(1), default=4, **opt, help="DALI CPU threads.")
@click.option("--out", default=None, type=click.Path(dir_okay=False),
              help="Write the result as JSON here.  [default: RUN/pretext_eval.json]")
def pretext(run, shards, checkpoint, batch_size, max_batches, device, precision, num_threads, out):
    """The pretext task's own metrics on held-out data, the run's health check: context 8-way
    accuracy, jigsaw permutation accuracy, artifacts real/damaged accuracy and mask IoU,
    inpainting hole MSE, supervised top-1. Networks in eval mode, deterministic image decode."""
    from spotart.trainer.checkpoint import CheckpointError
    from spotart.trainer.eval_pretext import evaluate_pretext, markdown

    try:
        result = evaluate_pretext(run, shards, checkpoint=checkpoint, batch_size=batch_size, max_batches=max_batches,
                                  device=device, precision=precision, num_threads=num_threads)
    except (ValueError, FileNotFoundError, RuntimeError, CheckpointError) as err:
        raise click.ClickException(str(err)) from None
    out = out or os.path.join(run, "pretext_eval.json")
    with open(out + ".tmp", "w") as f:
        json.dump(result, f, indent=2)
    os.replace(out + ".tmp", out)
    click.echo(markdown(result))
    click.echo(f"wrote {out}", err=True)

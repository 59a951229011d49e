"""`spotart audit`: measure that a pretext task's countermeasures remove its low-level shortcuts."""

from __future__ import annotations

import sys

import click

opt = dict(show_default=True)


@click.command("audit")
@click.option("--task", required=True, type=click.Choice(["context", "jigsaw", "artifacts", "inpainting"]),
              help="Pretext task to audit.")
@click.option("--shards", required=True, type=click.Path(exists=True, file_okay=False),
              help="Shards (spotart build-shards) the cheaters train on.")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Report directory: report.json, report.md, report.html, audit.png.")
@click.option("--test-shards", type=click.Path(exists=True, file_okay=False), default=None,
              help="Held-out shards the cheaters are scored on.  [default: the second half of --shards]")
@click.option("--preset", default="64px", **opt, help="Sizes, as for `spotart train` (tiny, 64px, alexnet); "
              "with --run the run's own config is used instead.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Config key, repeatable, exactly as for `spotart train --set`: every data parameter of the task "
                   "(gap, color_drop, random_gap, tile_norm, count, theta, mode, ...). The audit measures the "
                   "pipeline these make; each probe then switches one countermeasure off.")
@click.option("--run", type=click.Path(exists=True, file_okay=False), default=None,
              help="A run of the task (spotart train): its pipeline and its network's own pretext accuracy "
                   "beside the cheaters. Required for artifacts and inpainting, whose cheaters judge the run's "
                   "generated images.")
@click.option("--images", type=click.IntRange(1), default=4096, **opt, help="Training images per cheater.")
@click.option("--test-images", type=click.IntRange(1), default=2048, **opt, help="Held-out images per score.")
@click.option("--batch-size", type=click.IntRange(1), default=256, **opt)
@click.option("--strip", type=click.IntRange(1), default=2, **opt,
              help="Width k of the border strips and of the band around damage or holes, px.")
@click.option("--aberration", type=click.FloatRange(-0.25, 0.25), default=0.05, **opt,
              help="Strength of the planted chromatic-aberration probes (context, jigsaw): green scaled by "
                   "1 + s about the image centre; 0 leaves them out.")
@click.option("--cue", "cues", multiple=True,
              type=click.Choice(["edges", "chroma", "stats", "lowfreq", "frequency", "band"]),
              help="Only this cue (repeatable).  [default: every cue of the task]")
@click.option("--countermeasure", "countermeasures", multiple=True, metavar="NAME",
              help="Only the probes of this countermeasure (repeatable; e.g. 'gap', 'colour dropping', "
                   "'per-tile normalisation').  [default: all]")
@click.option("--hidden", type=click.IntRange(0), default=0, **opt,
              help="0: softmax-regression cheaters; N: MLPs with N hidden units (stronger, slower).")
@click.option("--fail-above", type=click.FloatRange(0), default=None,
              help="Exit with status 1 when a cheater beats chance by more than this many points with the "
                   "default countermeasures on the data (planted probes do not count).")
@click.option("--seed", type=int, default=0, **opt)
@click.option("--device", default="auto", **opt, help="auto, cpu, cuda or cuda:N (pipeline and generator).")
@click.option("--num-threads", type=click.IntRange(1), default=2, **opt, help="DALI CPU threads.")
def audit(task, shards, out, test_shards, preset, overrides, run, images, test_images, batch_size, strip, aberration,
          cues, countermeasures, hidden, fail_above, seed, device, num_threads):
    """Train a deliberately weak cheater per low-level cue on TASK's own labels, fed by its own
    pipeline, with the countermeasures on and with each relevant one off: edge continuity (border
    strips), chromatic aberration (channel offsets; also planted), colour statistics and
    low-frequency position (context, jigsaw), the autoencoder's blur and the seams along damage or
    holes (artifacts, inpainting; judged on --run's generator). Writes OUT/report.json, .md, .html
    and audit.png."""
    from ..audit import AuditConfig
    from ..audit import audit as run_audit
    from ..audit.report import summary_lines, write_report

    try:
        cfg = AuditConfig(task=task, shards=shards, out=out, preset=preset, overrides=overrides, test_shards=test_shards,
                          run=run, images=images, test_images=test_images, batch_size=batch_size, strip=strip,
                          aberration=aberration, hidden=hidden, cues=cues, countermeasures=countermeasures, fail_above=fail_above, seed=seed,
                          device=device, num_threads=num_threads)
        report = run_audit(cfg)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        raise click.ClickException(str(err)) from None
    paths = write_report(report, out)
    for line in summary_lines(report):
        click.echo(line, err=True)
    click.echo(f"wrote {', '.join(paths)}", err=True)
    if not report["passed"]:
        sys.exit(1)

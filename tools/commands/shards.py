"""CLI: make-sample, build-shards, verify-shards, merge-manifests."""

from __future__ import annotations

import errno
import os
import shutil
import sys

import click

opt = dict(show_default=True)


def disk_message(err: Exception, out: str, again: str) -> str:
    """One line for an I/O error (OSError, or LMDB's, which on a full tmpfs is EIO rather than
    ENOSPC) of a command writing into `out`: for a full disk, how much is free and that re-running
    resumes (every step of the build is committed atomically, so what was done stays done)."""
    try:
        u = shutil.disk_usage(out if os.path.exists(out) else os.path.dirname(os.path.abspath(out)))
        free, nearly_full = f"{u.free / 2**20:.0f} MiB free", u.free < max(64 << 20, u.total // 100)
    except OSError:
        free, nearly_full = "free space unknown", False
    full = getattr(err, "errno", None) == errno.ENOSPC or type(err).__name__ == "DiskError" or nearly_full
    if not full:
        return (f"{getattr(err, 'filename', None) or out}: {getattr(err, 'strerror', None) or err}. What was done is "
                f"kept: run {again} again to resume")
    return (f"no space left on the device holding {os.path.abspath(out)} ({free}; {err}). Nothing already done is "
            f"lost: free some space and run {again} again; it resumes where it stopped.")


@click.command("make-sample")
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--count", type=click.IntRange(1), default=512, **opt, help="Images to write.")
@click.option("--size", type=click.IntRange(16), default=64, **opt, help="Typical image side in px (sizes vary 0.8-1.5x).")
@click.option("--classes", type=click.IntRange(1, 8), default=8, **opt, help="Number of shape/texture classes.")
@click.option("--seed", type=int, default=0, **opt)
def make_sample(out, count, size, classes, seed):
    """Write a labelled procedural image collection (shapes, textures, gradients; some greyscale)
    to OUT/<class>/..., for demos and tests when no real data is at hand."""
    from spotart.shards.sample import make_sample as run

    paths = run(out, count=count, size=size, seed=seed, classes=classes)
    click.echo(f"wrote {len(paths)} images in {classes} classes to {out}")


@click.command("build-shards")
@click.argument("sources", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False), help="Output directory.")
@click.option("--prefix", default="shard", **opt, help="Shard file name prefix: OUT/<prefix>-000000.tar ...")
@click.option("--max-count", type=click.IntRange(1), default=10_000, **opt, help="Samples per shard before rolling over.")
@click.option("--max-size", type=click.IntRange(1024), default=1 << 30, **opt, help="Bytes per shard before rolling over.")
@click.option("--seed", type=int, default=0, **opt, help="Shuffles samples across shards (no shard is one class).")
@click.option("--resize", type=click.IntRange(8), default=None, help="Downscale so the shorter side is at most this (px); smaller images are kept as they are.")
@click.option("--quality", type=click.IntRange(1, 100), default=95, **opt, help="JPEG quality of re-encoded images (baseline RGB JPEGs needing no change keep their bytes).")
@click.option("--keep-duplicates", is_flag=True, help="Keep byte-identical duplicate files (dropped and counted by default).")
@click.option("--max-pixels", type=click.IntRange(64), default=89_478_485, **opt, help="Larger images are skipped as decompression bombs.")
@click.option("--max-skip-fraction", type=click.FloatRange(0, 1), default=0.1, **opt, help="Fail when more than this fraction of images is unreadable.")
@click.option("--part", default=None, metavar="I/N", help="Build only the I-th of N disjoint parts (array jobs: tools/slurm/build_shards.sbatch); join with merge-manifests.")
@click.option("--labels", type=click.Path(exists=True, dir_okay=False), default=None,
              help="CSV/TSV of name,label (e.g. ImageNet val's ground truth): labels by file name or stem, for any source; they replace folder labels.")
@click.option("--classes", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Fixes the class ids, so that train and val builds agree: one class per line (wnids.txt, "
                   "LOC_synset_mapping.txt) or another build's manifest.json.")
@click.option("-j", "--workers", type=click.IntRange(1), default=1, **opt,
              help="Processes that read, decode/encode and stage images and write shards, this one included "
                   "(-j 2: one worker process and the main one). Use the number of cores.")
@click.option("--overwrite", is_flag=True, help="Delete an existing build in OUT and start over.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def build_shards(sources, out, prefix, max_count, max_size, seed, resize, quality, keep_duplicates, max_pixels,
                 max_skip_fraction, part, labels, classes, workers, overwrite, no_progress):
    """Turn image folders (class-per-subfolder gives labels), CSV/TSV file lists (path[,label]),
    tar/tar.gz archives (archives inside walked in place: ImageNet's train tar of per-class tars
    gives the classes) and LMDB databases into shuffled WebDataset shards with DALI index
    files, manifest.json and an LMDB catalog. A killed build resumes when re-run."""
    from spotart.shards.build import BuildError, build_shards as run
    from spotart.shards.spec import ShardSpec, parse_part

    try:
        pi, pn = parse_part(part)
        spec = ShardSpec(prefix=prefix, max_count=max_count, max_size=max_size, seed=seed, resize=resize,
                         quality=quality, keep_duplicates=keep_duplicates, max_pixels=max_pixels,
                         max_skip_fraction=max_skip_fraction, part_index=pi, part_count=pn, workers=workers,
                         labels=labels and os.path.abspath(labels), classes=classes and os.path.abspath(classes))
        result = run(list(sources), out, spec, overwrite=overwrite, progress=not no_progress)
    except (BuildError, ValueError) as err:
        raise click.ClickException(str(err)) from None
    except Exception as err:  # a full disk (OSError, LMDB's errors) or another I/O error
        import lmdb

        if not isinstance(err, (OSError, lmdb.Error)):
            raise
        again = f"the same `spotart build-shards ... --out {out}` command"
        raise click.ClickException(disk_message(err, out, again)) from None
    click.echo(result.summary())


@click.command("verify-shards")
@click.argument("out", type=click.Path(exists=True, file_okay=False))
@click.option("--no-decode", is_flag=True, help="Skip decoding every image (sha256, counts and index only).")
@click.option("--repair", is_flag=True,
              help="Rewrite each failed shard without the samples that do not decode (PIL or DALI's decoder) or have "
                   "a bad class id, with a new index; update the manifest and catalog; list what was dropped.")
def verify_shards(out, no_decode, repair):
    """Re-check every shard in OUT against manifest.json (sha256, counts), that each image decodes
    and that the index files match the tars. Exits non-zero on any mismatch (with --repair: on
    any shard that could not be repaired)."""
    from spotart.shards.verify import repair_shards, verify_shards as run

    if repair and no_decode:
        raise click.UsageError("--repair decodes every image of a failed shard; drop --no-decode")
    reports = []
    try:
        for rep in run(out, decode=not no_decode):
            reports.append(rep)
            click.echo(rep.line())
        bad = sum(not r.ok for r in reports)
        click.echo(f"{len(reports) - bad} of {len(reports)} shards ok")
        if not (repair and bad):
            if bad:
                sys.exit(1)
            return
        fixed = repair_shards(out, reports)
    except (FileNotFoundError, ValueError) as err:
        raise click.ClickException(str(err)) from None
    except OSError as err:
        raise click.ClickException(disk_message(err, out, f"`spotart verify-shards {out} --repair`")) from None
    for r in fixed:
        click.echo(r.line())
    dropped = sum(len(r.dropped) for r in fixed)
    click.echo(f"repaired {sum(r.error is None for r in fixed)} of {len(fixed)} shards: {dropped} samples dropped; "
               f"manifest.json, the index files and the catalog updated")
    if any(r.error for r in fixed):
        sys.exit(1)


@click.command("merge-manifests")
@click.argument("parts", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False), help="Directory for the joined manifest.json and catalog.")
def merge_manifests(parts, out):
    """Join the part directories of `build-shards --part I/N` runs into one dataset in OUT."""
    from spotart.shards.merge import MergeError, merge_manifests as run

    try:
        m = run(list(parts), out)
    except (MergeError, FileNotFoundError, ValueError) as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"merged {len(parts)} parts: {m['num_samples']} samples in {len(m['shards'])} shards -> {out}")

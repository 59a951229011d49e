"""`spotart permutations`: make a jigsaw permutation set and save it as .npy + .json."""

from __future__ import annotations

import time

import click


@click.command("permutations")
@click.option("--count", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Number of permutations = jigsaw classes (paper: 1000).")
@click.option("--criterion", type=click.Choice(["avg", "min"]), default="avg", show_default=True,
              help="Greedy criterion: 'avg' maximises the average Hamming distance to the set "
                   "(the paper's, mean 8.00 / min 2 at 1000); 'min' maximises the minimal one.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the random first permutation; the rest of the set follows from it.")
@click.option("--n", "n", type=click.IntRange(2, 10), default=9, show_default=True,
              help="Number of tiles (9 for the paper's 3x3 puzzle).")
@click.option("--out", type=click.Path(dir_okay=False, writable=True), required=True,
              help="Output .npy file; a sidecar .json with the same stem records the parameters "
                   "and Hamming statistics. Use it with the jigsaw task's `permutations` parameter.")
def permutations(count: int, criterion: str, seed: int, n: int, out: str) -> None:
    """Choose COUNT permutations of N tiles with maximal Hamming distance (Noroozi & Favaro 2016,
    Algorithm 1, with running per-candidate scores: seconds instead of hours)."""
    from ...pipeline.permutations import hamming_stats, maximal_hamming_set, save_permutations

    start = time.perf_counter()
    try:
        perms = maximal_hamming_set(count, criterion=criterion, seed=seed, n=n)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--count/--n") from err
    seconds = time.perf_counter() - start
    path = save_permutations(out, perms, {"criterion": criterion, "seed": seed})
    if len(perms) > 1:
        stats = hamming_stats(perms)
        click.echo(f"{len(perms)} permutations ({criterion}, seed {seed}): mean Hamming distance "
                   f"{stats['mean']:.3f}, min {stats['min']}, {seconds:.2f} s -> {path}")
    else:
        click.echo(f"1 permutation (seed {seed}), {seconds:.2f} s -> {path}")

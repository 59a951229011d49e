"""Permutation sets for the jigsaw task (Noroozi & Favaro 2016, Algorithm 1).

The jigsaw network classifies which permutation of a fixed set shuffled the 9 tiles. The set is
chosen greedily so that its members are far apart in Hamming distance (number of positions where
two permutations differ): start from a random permutation, then repeatedly add the permutation
of all n! that is farthest from the chosen ones.

- criterion "avg" (the paper's): farthest = largest sum (hence average) of distances to the
  chosen set. Paper: 1000 permutations give mean 8.00 / min 2, 100 give 8.08 / min 2.
- criterion "min": farthest = largest minimal distance to the chosen set (the paper's
  "minimal Hamming distance" variant); ties go to the larger sum, so the set is also spread out
  on average.

The reference generators recompute the |chosen| x n! distance matrix every step (about 1.4 h and
3 GB for 1000). Each candidate's score only changes by its distance to the one newly chosen
permutation, so we keep a running sum and a running min per candidate and update them in one
pass over n! rows per step: 1000 permutations take seconds. Remaining ties go to the
lexicographically first permutation, so a set depends only on (count, criterion, seed, n).

Permutations are stored as `.npy` (uint8 rows) with a sidecar `.json` (same stem) recording how
the set was made and its Hamming statistics.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile

import numba
import numpy as np

log = logging.getLogger(__name__)

CRITERIA = ("avg", "min")
MAX_N = 10  # 10! rows x 10 bytes = 36 MB; 11! would be 440 MB of candidates


@numba.njit(cache=True)
def _all_permutations(n):
    """All n! permutations of 0..n-1 in lexicographic order (uint8 rows)."""
    total = 1
    for k in range(2, n + 1):
        total *= k
    out = np.empty((total, n), np.uint8)
    p = np.arange(n).astype(np.uint8)
    for r in range(total):
        out[r] = p
        # next permutation in lexicographic order (Narayana Pandita)
        i = n - 2
        while i >= 0 and p[i] >= p[i + 1]:
            i -= 1
        if i < 0:
            break
        j = n - 1
        while p[j] <= p[i]:
            j -= 1
        p[i], p[j] = p[j], p[i]
        p[i + 1:] = p[i + 1:][::-1].copy()
    return out


@numba.njit(cache=True)
def _greedy(cands, count, first, use_min):
    """Indices into `cands` of the greedy maximal-Hamming set (Algorithm 1, running scores)."""
    total, n = cands.shape
    dsum = np.zeros(total, np.int32)
    dmin = np.full(total, n + 1, np.int32)
    used = np.zeros(total, np.bool_)
    chosen = np.empty(count, np.int64)
    j = first
    for step in range(count):
        chosen[step] = j
        used[j] = True
        if step == count - 1:
            break
        p = cands[j]
        best = -1
        best_key = -1
        best_sum = -1
        # one pass: fold the new member's distance into every score and pick the next argmax
        # (strict '>' keeps the first, i.e. lexicographically smallest, of tied candidates)
        for k in range(total):
            if used[k]:
                continue
            d = 0
            for t in range(n):
                if cands[k, t] != p[t]:
                    d += 1
            s = dsum[k] + d
            dsum[k] = s
            m = dmin[k] if dmin[k] < d else d
            dmin[k] = m
            key = m if use_min else s
            if key > best_key or (key == best_key and s > best_sum):
                best, best_key, best_sum = k, key, s
        j = best
    return chosen


def maximal_hamming_set(count: int, criterion: str = "avg", seed: int = 0, n: int = 9) -> np.ndarray:
    """`count` permutations of 0..n-1 (uint8 array [count, n]) chosen greedily for maximal
    average ("avg") or minimal ("min") Hamming distance; deterministic in (count, criterion,
    seed, n). The first member is a uniformly random permutation drawn with `seed`."""
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
    if not 2 <= int(n) <= MAX_N:
        raise ValueError(f"n (number of tiles) must be in [2, {MAX_N}], got {n}")
    total = math.factorial(int(n))
    if not 1 <= int(count) <= total:
        raise ValueError(f"count must be in [1, {total}] for n={n}, got {count}")
    cands = _all_permutations(int(n))
    first = int(np.random.default_rng(seed).integers(total))
    chosen = _greedy(cands, int(count), first, criterion == "min")
    return cands[chosen]


def hamming_stats(perms: np.ndarray) -> dict:
    """Mean and min pairwise Hamming distance among the rows of `perms` (over pairs i < j)."""
    perms = np.asarray(perms)
    if perms.ndim != 2 or len(perms) < 2:
        raise ValueError(f"need a [count >= 2, n] array of permutations, got shape {perms.shape}")
    m, n = perms.shape
    total, dmin = 0, n
    block = max(1, 4_000_000 // (m * n))  # rows per step: bounds memory to ~4M booleans
    for s in range(0, m, block):
        rows = np.arange(s, min(s + block, m))
        d = (perms[rows, None, :] != perms[None, :, :]).sum(-1)
        pair = d[np.arange(m)[None, :] > rows[:, None]]  # pairs i < j only
        if pair.size:
            total += int(pair.sum())
            dmin = min(dmin, int(pair.min()))
    pairs = m * (m - 1) // 2
    return {"mean": total / pairs, "min": dmin}


def check_permutations(perms: np.ndarray, source: str = "permutations") -> np.ndarray:
    """`perms` as uint8 [count, n] after checking every row is a permutation and rows differ."""
    perms = np.asarray(perms)
    if perms.ndim != 2 or perms.shape[0] < 1 or not 2 <= perms.shape[1] <= MAX_N:
        raise ValueError(f"{source}: expected a [count, n] array with 2 <= n <= {MAX_N}, got shape {perms.shape}")
    if not np.issubdtype(perms.dtype, np.integer):
        raise ValueError(f"{source}: expected integer permutations, got dtype {perms.dtype}")
    n = perms.shape[1]
    bad = np.flatnonzero((np.sort(perms, axis=1) != np.arange(n)).any(axis=1))
    if bad.size:
        raise ValueError(f"{source}: row {bad[0]} is not a permutation of 0..{n - 1}: {perms[bad[0]].tolist()}")
    if len(np.unique(perms, axis=0)) != len(perms):
        raise ValueError(f"{source}: contains duplicate permutations")
    return perms.astype(np.uint8)


def _paths(path) -> tuple[str, str]:
    path = os.fspath(path)
    stem = path[:-4] if path.endswith(".npy") else path
    return stem + ".npy", stem + ".json"


def save_permutations(path, perms: np.ndarray, meta: dict | None = None) -> str:
    """Write `perms` to PATH (".npy" appended if missing) and a sidecar PATH-stem.json holding
    `meta` plus count, n and the set's mean/min Hamming distance. Both writes are atomic."""
    perms = check_permutations(perms, os.fspath(path))
    npy, side = _paths(path)
    info = dict(meta or {})
    info.update(count=int(perms.shape[0]), n=int(perms.shape[1]))
    if len(perms) > 1:
        stats = hamming_stats(perms)
        info.update(mean_hamming=stats["mean"], min_hamming=stats["min"])
    os.makedirs(os.path.dirname(os.path.abspath(npy)), exist_ok=True)
    for target, write in ((npy, lambda f: np.save(f, perms)),
                          (side, lambda f: f.write(json.dumps(info, indent=2).encode() + b"\n"))):
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(target)), suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                write(f)
            os.replace(tmp, target)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
    return npy


def load_permutations(path) -> np.ndarray:
    """The permutation set saved at PATH (uint8 [count, n]), checked row by row and against its
    sidecar JSON when one is present."""
    npy, side = _paths(path)
    if not os.path.isfile(npy):
        raise FileNotFoundError(
            f"{npy}: no permutation file; make one with `spotart permutations --count 1000 --out {npy}`")
    try:
        perms = np.load(npy, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise ValueError(f"{npy}: not a readable .npy permutation file ({err})") from err
    perms = check_permutations(perms, npy)
    if os.path.isfile(side):
        with open(side) as f:
            meta = json.load(f)
        if meta.get("count", len(perms)) != len(perms):
            raise ValueError(f"{npy}: holds {len(perms)} permutations but {side} says {meta['count']}; "
                             "the two files are from different sets, regenerate them")
    return perms


def cache_dir() -> str:
    """Where generated sets are cached: $SPOTART_CACHE, else $XDG_CACHE_HOME/spotart, else
    ~/.cache/spotart."""
    root = os.environ.get("SPOTART_CACHE")
    if not root:
        root = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "spotart")
    return os.path.join(root, "permutations")


def default_permutations(count: int = 1000, criterion: str = "avg", seed: int = 0, n: int = 9) -> np.ndarray:
    """The set `maximal_hamming_set(count, criterion, seed, n)`, generated once and cached (keyed
    by all four parameters) so a pipeline gets a set without the user making one. Concurrent
    ranks may each generate it; the set is deterministic and the write atomic."""
    path = os.path.join(cache_dir(), f"perms_n{n}_{criterion}_c{count}_s{seed}.npy")
    if os.path.isfile(path):
        try:
            perms = load_permutations(path)
            if perms.shape == (count, n):
                return perms
        except ValueError as err:
            log.warning("regenerating damaged cached permutation set: %s", err)
    log.info("generating %d %s-criterion permutations (seed %d), cached at %s", count, criterion, seed, path)
    perms = maximal_hamming_set(count, criterion=criterion, seed=seed, n=n)
    save_permutations(path, perms, {"criterion": criterion, "seed": seed})
    return perms

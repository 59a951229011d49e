import itertools
import json
import math
import time

import numpy as np
import pytest
from click.testing import CliRunner

from spotart.pipeline import permutations as pm
from spotart.tools.cli import main


def naive_greedy(count, criterion, seed, n):
    """Algorithm 1 as the reference generators do it: recompute the full |chosen| x n! distance
    matrix every step. Ties: first (lexicographically smallest) candidate; "min" ties go to the
    larger sum first."""
    cands = np.array(list(itertools.permutations(range(n))), np.uint8)  # lexicographic
    chosen = [int(np.random.default_rng(seed).integers(len(cands)))]
    while len(chosen) < count:
        d = (cands[chosen][:, None, :] != cands[None, :, :]).sum(-1)  # [chosen, all]
        dsum, dmin = d.sum(0), d.min(0)
        dsum[chosen] = -1
        dmin[chosen] = -1
        if criterion == "avg":
            nxt = int(np.argmax(dsum))
        else:
            order = np.lexsort((-np.arange(len(cands)), dsum, dmin))  # last key is primary
            nxt = int(order[-1])
        chosen.append(nxt)
    return cands[chosen]


def is_permutation_set(perms, n):
    return (np.sort(perms, axis=1) == np.arange(n)).all() and len(np.unique(perms, axis=0)) == len(perms)


@pytest.mark.parametrize("criterion", ["avg", "min"])
@pytest.mark.parametrize("n,count,seed", [(4, 24, 0), (5, 30, 1), (6, 50, 3)])
def test_matches_naive_algorithm(criterion, n, count, seed):
    fast = pm.maximal_hamming_set(count, criterion=criterion, seed=seed, n=n)
    np.testing.assert_array_equal(fast, naive_greedy(count, criterion, seed, n))


def test_paper_numbers_100():
    perms = pm.maximal_hamming_set(100, criterion="avg", seed=0)
    assert perms.shape == (100, 9) and perms.dtype == np.uint8
    stats = pm.hamming_stats(perms)
    assert abs(stats["mean"] - 8.08) < 0.02  # paper: mean 8.08, min 2
    assert stats["min"] == 2


def test_paper_numbers_1000_in_seconds():
    pm.maximal_hamming_set(10, seed=0)  # compile outside the timing
    start = time.perf_counter()
    perms = pm.maximal_hamming_set(1000, criterion="avg", seed=0)
    seconds = time.perf_counter() - start
    assert is_permutation_set(perms, 9)
    stats = pm.hamming_stats(perms)
    assert abs(stats["mean"] - 8.00) < 0.02  # paper: mean 8.00, min 2
    assert stats["min"] == 2
    assert seconds < 20, f"1000 permutations took {seconds:.1f} s; the running scores should make it seconds"


@pytest.mark.parametrize("criterion", ["avg", "min"])
def test_rows_are_distinct_permutations_and_seeded(criterion):
    a = pm.maximal_hamming_set(60, criterion=criterion, seed=5)
    assert is_permutation_set(a, 9)
    np.testing.assert_array_equal(a, pm.maximal_hamming_set(60, criterion=criterion, seed=5))
    b = pm.maximal_hamming_set(60, criterion=criterion, seed=6)
    assert not np.array_equal(a, b)
    # a greedy set is a prefix of the larger greedy set with the same seed
    np.testing.assert_array_equal(a, pm.maximal_hamming_set(80, criterion=criterion, seed=5)[:60])


def test_min_criterion_spreads_the_closest_pair():
    avg = pm.hamming_stats(pm.maximal_hamming_set(100, criterion="avg", seed=0))
    mn = pm.hamming_stats(pm.maximal_hamming_set(100, criterion="min", seed=0))
    assert mn["min"] > avg["min"]
    assert mn["mean"] > 7.5


def test_whole_group_when_count_is_n_factorial():
    perms = pm.maximal_hamming_set(math.factorial(5), seed=2, n=5)
    assert is_permutation_set(perms, 5) and len(perms) == 120


def test_hamming_stats_brute_force():
    rng = np.random.default_rng(0)
    perms = np.array([rng.permutation(9) for _ in range(37)], np.uint8)
    d = [(perms[i] != perms[j]).sum() for i in range(37) for j in range(i + 1, 37)]
    stats = pm.hamming_stats(perms)
    assert stats["mean"] == pytest.approx(np.mean(d)) and stats["min"] == min(d)


def test_bad_arguments():
    with pytest.raises(ValueError, match="criterion"):
        pm.maximal_hamming_set(10, criterion="max")
    with pytest.raises(ValueError, match="count must be in"):
        pm.maximal_hamming_set(7, n=3)
    with pytest.raises(ValueError, match="n \\(number of tiles\\)"):
        pm.maximal_hamming_set(5, n=11)


def test_save_load_roundtrip(tmp_path):
    perms = pm.maximal_hamming_set(20, seed=1)
    path = pm.save_permutations(tmp_path / "set", perms, {"criterion": "avg", "seed": 1})
    assert path == str(tmp_path / "set.npy")
    meta = json.loads((tmp_path / "set.json").read_text())
    stats = pm.hamming_stats(perms)
    assert meta == {"criterion": "avg", "seed": 1, "count": 20, "n": 9,
                    "mean_hamming": stats["mean"], "min_hamming": stats["min"]}
    np.testing.assert_array_equal(pm.load_permutations(tmp_path / "set.npy"), perms)
    np.testing.assert_array_equal(pm.load_permutations(tmp_path / "set"), perms)


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="spotart permutations"):
        pm.load_permutations(tmp_path / "missing.npy")
    np.save(tmp_path / "notperm.npy", np.array([[0, 1, 2], [0, 0, 2]]))
    with pytest.raises(ValueError, match="row 1 is not a permutation"):
        pm.load_permutations(tmp_path / "notperm.npy")
    np.save(tmp_path / "dup.npy", np.array([[0, 1, 2], [0, 1, 2]]))
    with pytest.raises(ValueError, match="duplicate"):
        pm.load_permutations(tmp_path / "dup.npy")
    np.save(tmp_path / "flat.npy", np.arange(9))
    with pytest.raises(ValueError, match="expected a \\[count, n\\] array"):
        pm.load_permutations(tmp_path / "flat.npy")
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    with pytest.raises(ValueError, match="not a readable"):
        pm.load_permutations(tmp_path / "junk.npy")
    pm.save_permutations(tmp_path / "a.npy", pm.maximal_hamming_set(5, n=4), {})
    (tmp_path / "a.json").write_text(json.dumps({"count": 6}))
    with pytest.raises(ValueError, match="different sets"):
        pm.load_permutations(tmp_path / "a.npy")


def test_default_permutations_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("SPOTART_CACHE", str(tmp_path))
    first = pm.default_permutations(30, seed=4)
    np.testing.assert_array_equal(first, pm.maximal_hamming_set(30, seed=4))
    cached = tmp_path / "permutations" / "perms_n9_avg_c30_s4.npy"
    assert cached.is_file() and (tmp_path / "permutations" / "perms_n9_avg_c30_s4.json").is_file()

    def boom(*a, **k):
        raise AssertionError("regenerated although cached")

    monkeypatch.setattr(pm, "maximal_hamming_set", boom)
    np.testing.assert_array_equal(pm.default_permutations(30, seed=4), first)
    monkeypatch.undo()
    monkeypatch.setenv("SPOTART_CACHE", str(tmp_path))
    cached.write_bytes(b"damaged")  # a damaged cache entry is regenerated, not fatal
    np.testing.assert_array_equal(pm.default_permutations(30, seed=4), first)


def test_cli(tmp_path):
    out = tmp_path / "perms.npy"
    res = CliRunner().invoke(main, ["permutations", "--count", "100", "--criterion", "avg",
                                    "--seed", "0", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "100 permutations" in res.output and "mean Hamming distance 8.080" in res.output
    assert "min 2" in res.output and " s -> " in res.output
    np.testing.assert_array_equal(pm.load_permutations(out), pm.maximal_hamming_set(100, seed=0))
    assert json.loads((tmp_path / "perms.json").read_text())["criterion"] == "avg"

    res = CliRunner().invoke(main, ["permutations", "--count", "7", "--n", "3", "--out", str(out)])
    assert res.exit_code != 0 and "count must be in [1, 6]" in res.output
    res = CliRunner().invoke(main, ["permutations", "--criterion", "max", "--out", str(out)])
    assert res.exit_code != 0 and "--criterion" in res.output

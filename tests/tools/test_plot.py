"""`spotart plot`: curves of several runs, phases marked, clear errors."""

import json
import os

from click.testing import CliRunner

from spotart.tools.cli import main
from spotart.tools.plot import phase_starts, series


def write_run(d, recs):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "metrics.jsonl"), "w") as f:
        f.write("".join(json.dumps(r) + "\n" for r in recs))


def test_two_runs_overlaid_into_every_group(tmp_path):
    a = [{"step": s, "phase": "autoencoder" if s <= 20 else "artifacts", "ae_mse": 1.0 / s, "img_per_s": 100.0,
          "data_wait_frac": 0.01} for s in range(10, 50, 10)]
    a += [{"step": 40, "phase": "artifacts", "knn_top1": 0.2, "knn_seconds": 1.0},
          {"step": 40, "phase": "artifacts", "loss_disc": 0.6, "mask_auc": 0.7}, {"step": 40, "event": "end"}]
    b = [{"step": s, "phase": "context", "loss": 2.0 / s, "acc": s / 100} for s in range(5, 30, 5)]
    write_run(tmp_path / "art", a)
    write_run(tmp_path / "ctx", b)
    res = CliRunner().invoke(main, ["plot", str(tmp_path / "art"), str(tmp_path / "ctx"), "--out", str(tmp_path / "p")])
    assert res.exit_code == 0, res.output
    for name in ("losses", "accuracy", "knn", "throughput"):
        path = tmp_path / "p" / f"{name}.png"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 2000, name
    recs = [r for r in a if "event" not in r]
    assert phase_starts(recs) == [30]
    assert series(recs, "knn_top1") == ([40], [0.2])


def test_errors_name_the_run(tmp_path):
    (tmp_path / "empty").mkdir()
    res = CliRunner().invoke(main, ["plot", str(tmp_path / "empty"), "--out", str(tmp_path / "p")])
    assert res.exit_code != 0 and "no metrics" in res.output
    write_run(tmp_path / "fresh", [{"step": 0, "event": "end"}])
    res = CliRunner().invoke(main, ["plot", str(tmp_path / "fresh"), "--out", str(tmp_path / "p")])
    assert res.exit_code != 0 and "no training records" in res.output

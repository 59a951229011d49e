"""What must not cost a run: undecodable samples, a shard set that does not match its manifest,
non-finite steps, an unreadable or unwritable checkpoint, torchrun's device placement."""

import errno
import json
import logging
import math
import os
import shutil
import stat

import pytest
import torch

from spotart.trainer import checkpoint as ck
from spotart.trainer.checkpoint import CheckpointWriteError, load_checkpoint
from spotart.trainer.config import build_config
from spotart.trainer.data import DataError, pipeline_config
from spotart.trainer.loop import train
from spotart.trainer.metrics import read_metrics
from spotart.trainer.runtime import determinism, resolve_runtime
from spotart.trainer.synthetic import ReplayBatches, synthetic_batches

LOSSES = ("ae_mse", "loss_disc", "loss_repair", "mask_acc")


def dali_cfg(shards, *extra):
    return build_config("artifacts", "tiny", ["shards=" + shards, "device=cpu", "batch_size=8", "num_threads=1",
                                              "progress=false", "log_every=1", "ckpt_every=100", "ae_fraction=0.5",
                                              *extra])


def recs(run):
    return [r for r in read_metrics(os.path.join(run, "metrics.jsonl")) if "event" not in r]


def skipped(run):
    path = os.path.join(run, "skipped.jsonl")
    return [json.loads(ln) for ln in open(path)] if os.path.exists(path) else []


@pytest.fixture
def broken(sample_shards, tmp_path, damage):
    def make(n, seed=5, kind="zeroed"):
        d = tmp_path / f"broken{n}{kind}"
        shutil.copytree(sample_shards, d)
        return str(d), damage(str(d), n, seed=seed, kind=kind)
    return make


# ---- bad data ------------------------------------------------------------------------------------

def test_undecodable_samples_are_skipped_logged_and_counted(broken, tmp_path):
    shards, damaged = broken(2)
    run = str(tmp_path / "run")
    summary = train(dali_cfg(shards, "steps=14"), run)  # 12 batches an epoch: into the second epoch
    assert summary["finished"] and summary["halted"] is None
    lines = skipped(run)
    assert sorted((ln["shard"], ln["key"]) for ln in lines) == sorted(damaged)
    assert all(ln["rank"] == 0 and ln["epoch"] == 0 and 1 <= ln["step"] <= 12 and ln["error"] for ln in lines)
    r = recs(run)
    assert r[-1]["bad_samples"] == 2 and r[0]["bad_samples"] <= 2
    assert all(x["skipped_steps"] == 0 for x in r)


@pytest.mark.parametrize("kind", ["zeroed", "tables"])  # flagged by the guard; found after a failed batch
def test_a_run_with_bad_samples_resumes_exactly(broken, tmp_path, kind):
    shards, _ = broken(2, kind=kind)
    train(dali_cfg(shards, "steps=14"), str(tmp_path / "a"))
    train(dali_cfg(shards, "steps=14", "stop_after=7"), str(tmp_path / "b"))
    train(dali_cfg(shards, "steps=14"), str(tmp_path / "b"), resume=True)
    a, b = recs(tmp_path / "a"), recs(tmp_path / "b")
    assert len(a) == len(b) == 14
    for ra, rb in zip(a, b, strict=True):
        for k in LOSSES:
            if k in ra:
                assert ra[k] == pytest.approx(rb[k], rel=1e-6, abs=1e-7), (ra["step"], k)
    assert skipped(tmp_path / "a") == skipped(tmp_path / "b")  # each sample once, found at the same step


def test_too_many_bad_samples_stop_cleanly_and_the_repaired_set_resumes(broken, tmp_path):
    from click.testing import CliRunner

    from spotart.tools.cli import main

    shards, damaged = broken(3, seed=2)
    run = str(tmp_path / "run")
    summary = train(dali_cfg(shards, "steps=20", "max_bad_samples=1"), run)
    msg = summary["halted"]
    assert not summary["finished"] and msg
    for shard in {s for s, _ in damaged}:
        assert shard in msg
    assert "verify-shards" in msg and "--repair" in msg and "--resume" in msg and "skipped.jsonl" in msg
    assert load_checkpoint(os.path.join(run, "checkpoints", "last.pt"))["step"] == summary["step"]
    assert len(skipped(run)) == 2  # the second one crossed the limit of 1

    r = CliRunner().invoke(main, ["verify-shards", shards, "--repair"])
    assert r.exit_code == 0, r.output
    for _, key in damaged:
        assert key in r.output
    resumed = train(dali_cfg(shards, "steps=20", "max_bad_samples=1"), run, resume=True)
    assert resumed["finished"] and resumed["halted"] is None
    assert recs(run)[-1]["bad_samples"] == 0 and len(skipped(run)) == 2  # the repaired shards hold none


def test_preflight_names_the_shard_and_the_fix(sample_shards, tmp_path):
    d = tmp_path / "s"
    shutil.copytree(sample_shards, d)
    m = json.load(open(d / "manifest.json"))
    tar, idx = d / m["shards"][1]["path"], d / m["shards"][1]["index"]
    cfg = dali_cfg(str(d), "steps=2")
    # a byte changed in place: sizes agree, so only --verify's hashes see it
    with open(tar, "r+b") as f:
        f.seek(2000)
        byte = f.read(1)
        f.seek(2000)
        f.write(bytes([byte[0] ^ 0xFF]))
    assert train(cfg, str(tmp_path / "r0"))["finished"]
    with pytest.raises(DataError, match=r"shard-000001.tar: sha256 differs.*verify-shards"):
        train(cfg.replace(verify=True), str(tmp_path / "r1"))
    with open(tar, "r+b") as f:  # a truncated copy
        f.truncate(os.path.getsize(tar) - 10240)
    with pytest.raises(DataError, match=r"shard-000001.tar: \d+ bytes, manifest says \d+.*--repair"):
        train(cfg, str(tmp_path / "r2"))
    shutil.copy(os.path.join(sample_shards, m["shards"][1]["path"]), tar)
    idx.write_text("v1.2 3\n")
    with pytest.raises(DataError, match=r"shard-000001.idx: header 'v1.2 3', manifest says 40"):
        train(cfg, str(tmp_path / "r3"))


# ---- non-finite steps ----------------------------------------------------------------------------

def nan_replay(cfg, bad_steps, n=8):
    """Replayed batches of the task's pipeline; the images of the steps in `bad_steps` (1-based,
    within the first n) are NaN, as an overflowing fp16 forward would make them."""
    good = synthetic_batches(pipeline_config(cfg, resolve_runtime(cfg), seed=3), "cpu", count=2)
    batches = []
    for i in range(n):
        b = dict(good.batches[i % 2])
        if i + 1 in bad_steps:
            b["image"] = torch.full_like(b["image"], float("nan"))
        batches.append(b)
    return ReplayBatches(batches)


def tiny(*extra):
    return build_config("artifacts", "tiny", ["data=synthetic", "progress=false", "log_every=1", "batch_size=8",
                                              "device=cpu", "ckpt_every=1", "keep_checkpoints=20", *extra])


def step_ckpt(run, step):
    return load_checkpoint(os.path.join(run, "checkpoints", f"step_{step:08d}.pt"))


def same_state(a, b):
    for name in a["models"]:
        for k, v in a["models"][name].items():
            if not torch.equal(v, b["models"][name][k]):
                return False
    for name in a["optimizers"]:
        sa, sb = a["optimizers"][name]["state"], b["optimizers"][name]["state"]
        for i in set(sa) | set(sb):
            if i not in sa or i not in sb:  # a skipped first step leaves a fresh state (zeros, step 0)
                if any(v.any() for v in (sa.get(i) or sb.get(i)).values()):
                    return False
            elif any(not torch.equal(v, sb[i][k]) for k, v in sa[i].items()):
                return False
    return True


@pytest.mark.parametrize("bad", [{3}, {7}])  # the autoencoder phase; the GAN phase (repair + C)
def test_a_non_finite_step_changes_nothing_and_is_counted(tmp_path, bad):
    cfg = tiny("steps=8", "ae_fraction=0.5")
    run = str(tmp_path / "run")
    assert train(cfg, run, loader=nan_replay(cfg, bad))["finished"]
    (s,) = bad
    assert same_state(step_ckpt(run, s - 1), step_ckpt(run, s))  # weights, BN statistics, Adam moments and steps
    assert not same_state(step_ckpt(run, s), step_ckpt(run, s + 1))  # the next step trains again
    r = recs(run)
    assert [x["skipped_steps"] for x in r] == [int(x["step"] in bad) for x in r]
    assert math.isnan(r[s - 1]["ae_mse" if s <= 4 else "loss_disc"])  # a window of one skipped step: no logs
    last = load_checkpoint(os.path.join(run, "checkpoints", "last.pt"))
    assert all(torch.isfinite(v).all() for m in last["models"].values() for v in m.values() if v.is_floating_point())


def test_k_non_finite_steps_in_a_row_stop_with_the_last_good_weights(tmp_path):
    cfg = tiny("steps=8", "ae_fraction=0.5", "max_nonfinite_steps=3")
    run = str(tmp_path / "run")
    summary = train(cfg, run, loader=nan_replay(cfg, {5, 6, 7, 8}))
    assert summary["step"] == 7 and not summary["finished"]
    msg = summary["halted"]
    assert "3 steps in a row" in msg and "--set lr=" in msg and "disc_lr_mult" in msg
    last = load_checkpoint(os.path.join(run, "checkpoints", "last.pt"))
    assert last["step"] == 7 and same_state(last, step_ckpt(run, 4))


def test_the_cli_reports_a_halt_and_exits_non_zero(tmp_path, monkeypatch):
    from click.testing import CliRunner

    import spotart.trainer.loop as loop_mod
    from spotart.tools.cli import main

    real = loop_mod.train

    def nan_train(cfg, run_dir, resume=False, loader=None):
        return real(cfg, run_dir, resume, nan_replay(cfg, set(range(1, 9))))

    monkeypatch.setattr(loop_mod, "train", nan_train)
    r = CliRunner().invoke(main, ["train", str(tmp_path / "r"), "--preset", "tiny", "--synthetic", "--device", "cpu",
                                  "--set", "max_nonfinite_steps=2", "--set", "log_every=1", "--set", "progress=false",
                                  "--batch-size", "8", "--steps", "8"])
    assert r.exit_code == 1 and "non-finite" in r.output and "diverged" in r.output, r.output


# ---- checkpoints ---------------------------------------------------------------------------------

def test_checkpoints_are_fsynced_and_the_previous_one_kept(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(stat.S_ISDIR(os.fstat(fd).st_mode)), real(fd))[1])
    run = str(tmp_path / "run")
    train(tiny("steps=6", "ae_fraction=0.5", "ckpt_every=2", "keep_checkpoints=0"), run)
    assert synced.count(False) >= 3 and synced.count(True) >= 3  # each file, then its directory
    d = os.path.join(run, "checkpoints")
    assert load_checkpoint(os.path.join(d, "last.pt"))["step"] == 6
    assert load_checkpoint(os.path.join(d, "previous.pt"))["step"] == 4
    assert not [n for n in os.listdir(d) if ".tmp" in n]


def test_resume_falls_back_to_the_previous_checkpoint(tmp_path, caplog):
    args = ("steps=8", "ae_fraction=0.5", "ckpt_every=2", "keep_checkpoints=0")
    straight = str(tmp_path / "a")
    train(tiny(*args), straight)
    run = str(tmp_path / "b")
    train(tiny(*args, "stop_after=6"), run)
    last = os.path.join(run, "checkpoints", "last.pt")
    with open(last, "r+b") as f:  # a torn write the file system kept
        f.truncate(os.path.getsize(last) // 2)
    with caplog.at_level(logging.WARNING, logger="spotart"):
        summary = train(tiny(*args), run, resume=True)
    assert summary["finished"] and "resuming from" in caplog.text and "previous.pt (step 4)" in caplog.text
    assert os.path.exists(last + ".unreadable")  # set aside: it never becomes previous.pt
    a, b = recs(straight), recs(run)
    assert len(a) == len(b) == 8 and [x["step"] for x in b] == list(range(1, 9))
    assert all(x.get("loss_disc") == y.get("loss_disc") and x.get("ae_mse") == y.get("ae_mse")
               for x, y in zip(a, b, strict=True))


def failing_save(monkeypatch, calls: set):
    """torch.save (as the checkpoint writes it) raising ENOSPC on the given calls (1-based)."""
    real, n = torch.save, [0]

    def save(obj, f, *a, **kw):
        n[0] += 1
        if n[0] in calls:
            f.write(b"x" * 1000)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(obj, f, *a, **kw)

    monkeypatch.setattr(ck.torch, "save", save)


def test_a_full_disk_costs_a_periodic_checkpoint_not_the_run(tmp_path, monkeypatch, caplog):
    failing_save(monkeypatch, {2})
    run = str(tmp_path / "run")
    with caplog.at_level(logging.ERROR, logger="spotart"):
        summary = train(tiny("steps=6", "ae_fraction=0.5", "ckpt_every=2", "keep_checkpoints=0"), run)
    assert summary["finished"]
    assert "checkpoint at step 4 not written: no space left" in caplog.text
    assert "step 2 not written" not in caplog.text and "step 6 not written" not in caplog.text
    assert load_checkpoint(os.path.join(run, "checkpoints", "last.pt"))["step"] == 6
    assert not [n for n in os.listdir(os.path.join(run, "checkpoints")) if ".tmp" in n]


def test_a_full_disk_at_the_last_checkpoint_says_so_and_loses_nothing(tmp_path, monkeypatch):
    failing_save(monkeypatch, {3})
    run = str(tmp_path / "run")
    cfg = tiny("steps=6", "ae_fraction=0.5", "ckpt_every=2", "keep_checkpoints=0")
    with pytest.raises(CheckpointWriteError, match=r"step 6 not written: no space left.*last.pt still holds.*--resume"):
        train(cfg, run)
    assert load_checkpoint(os.path.join(run, "checkpoints", "last.pt"))["step"] == 4
    monkeypatch.undo()
    assert train(cfg, run, resume=True)["step"] == 6  # space freed: the run goes on


# ---- devices -------------------------------------------------------------------------------------

def test_torchrun_ranks_take_their_gpu_from_local_rank(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    cfg = build_config("artifacts", "tiny", ["device=cuda:3", "data=synthetic"])
    assert resolve_runtime(cfg, local_rank=1, world_size=2).device == torch.device("cuda:1")
    assert resolve_runtime(cfg, local_rank=0, world_size=1).device == torch.device("cuda:3")
    auto = build_config("artifacts", "tiny", ["device=cuda", "data=synthetic"])
    assert resolve_runtime(auto, local_rank=2, world_size=4).device == torch.device("cuda:2")


def test_deterministic_mode_is_set_for_the_run_and_undone():
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark)
    with determinism(True):
        assert torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.deterministic
        assert not torch.backends.cudnn.benchmark and os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark) == before


def test_a_fresh_start_after_a_kill_before_the_first_checkpoint_keeps_clean_metrics(tmp_path):
    run = str(tmp_path / "run")
    os.makedirs(run)
    with open(os.path.join(run, "metrics.jsonl"), "w") as f:  # what a run killed at step 3 leaves
        f.writelines(json.dumps({"step": s, "ae_mse": 1.0}) + "\n" for s in (1, 2, 3))
    train(tiny("steps=4", "ae_fraction=0.5", "keep_checkpoints=0"), run)
    assert [r["step"] for r in recs(run)] == [1, 2, 3, 4]


def test_a_zip_writer_error_on_a_full_disk_is_a_full_disk(tmp_path, monkeypatch):
    """torch's zip writer reports a failed write as RuntimeError ("unexpected pos"), not OSError:
    with the disk (nearly) full it is a CheckpointWriteError; with room it is raised as it is."""
    import collections

    def save(obj, f, *a, **kw):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 1937920 vs 1937808")

    monkeypatch.setattr(ck.torch, "save", save)
    usage = collections.namedtuple("usage", "total used free")
    kw = dict(models={}, optimizers={}, scaler=torch.amp.GradScaler("cpu", enabled=False), step=1, config={},
              rank_states=[])
    monkeypatch.setattr(ck.shutil, "disk_usage", lambda d: usage(10 << 30, 10 << 30, 1 << 20))
    with pytest.raises(CheckpointWriteError, match="no space left") as e:
        ck.save_checkpoint(str(tmp_path / "last.pt"), **kw)
    assert e.value.full
    monkeypatch.setattr(ck.shutil, "disk_usage", lambda d: usage(10 << 30, 1 << 30, 9 << 30))
    with pytest.raises(RuntimeError, match="unexpected pos"):
        ck.save_checkpoint(str(tmp_path / "last.pt"), **kw)
    assert os.listdir(tmp_path) == []


def test_weights_of_another_shape_fail_in_one_line_naming_the_file():
    from spotart.trainer.checkpoint import CheckpointError, load_weights
    ckpt = {"models": {"generator": torch.nn.Linear(2, 3).state_dict()}}
    with pytest.raises(CheckpointError) as e:
        load_weights(torch.nn.Linear(2, 4), ckpt, "generator", "/runs/x/last.pt")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("/runs/x/last.pt: its 'generator' weights")
    assert "size mismatch" in msg and "train a new run" in msg
    with pytest.raises(CheckpointError, match="'disc'"):
        load_weights(torch.nn.Linear(2, 3), ckpt, "disc", "/runs/x/last.pt")


def test_an_ae_init_of_another_shape_fails_in_one_line_naming_the_file_and_the_fix(tmp_path):
    from spotart.trainer.checkpoint import FORMAT, CheckpointError
    from spotart.trainer.config import build_config
    from spotart.trainer.nets.autoencoder import AutoEncoder
    from spotart.trainer.tasks import get_task

    path = str(tmp_path / "other.pt")
    torch.save({"format": FORMAT, "models": {"autoencoder": AutoEncoder(8, (8, 16, 32, 64)).state_dict()}}, path)
    cfg = build_config("artifacts", "tiny", ["data=synthetic", f"ae_init={path}"])
    with pytest.raises(CheckpointError) as e:
        get_task("artifacts").build_models(cfg)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{path}: its 'autoencoder' weights")
    assert "ae_init must name an artifacts run with this run's enc_stem and enc_channels" in msg

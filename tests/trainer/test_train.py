"""The training loop on CPU with synthetic batches: learning, exact resume, signals, export, errors."""

import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from spotart.trainer import losses as L
from spotart.trainer.checkpoint import CheckpointError, load_checkpoint
from spotart.trainer.config import build_config
from spotart.trainer.data import DataError
from spotart.trainer.export import export_backbone, load_backbone
from spotart.trainer.loop import lr_factor, train
from spotart.trainer.metrics import read_metrics
from spotart.trainer.nets.discriminator import Discriminator
from spotart.trainer.nets.trunk import Trunk
from spotart.trainer.runtime import TrainingOOM, oom_hint, resolve_runtime
from spotart.trainer.data import pipeline_config
from spotart.trainer.models import build_training
from spotart.trainer.step import optimise
from spotart.trainer.synthetic import ReplayBatches, synthetic_batches
from spotart.trainer.tasks import get_task

BASE = ["data=synthetic", "progress=false", "log_every=1", "batch_size=8", "device=cpu"]
LOSS_KEYS = ("ae_mse", "loss_disc", "loss_repair", "loss_cls", "loss_mask", "loss_adv", "rec_mse",
             "acc_real", "acc_fake", "mask_acc", "mask_iou", "mask_auc")


def tiny(*extra):
    return build_config("artifacts", "tiny", BASE + list(extra))


def records(run):
    return [r for r in read_metrics(os.path.join(run, "metrics.jsonl")) if "event" not in r]


def fixed_batch(cfg, seed=3):
    """One batch of cfg's own pipeline over procedural images, replayed every step."""
    return synthetic_batches(pipeline_config(cfg, resolve_runtime(cfg), seed=seed), "cpu", count=1)


def smooth_images(gen, n, size):
    """(n, 3, size, size) in [-1, 1]: coarse noise upsampled plus a little fine detail."""
    coarse = torch.rand(n, 3, size // 8, size // 8, generator=gen) * 2 - 1
    img = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    return (img + 0.1 * (torch.rand(n, 3, size, size, generator=gen) * 2 - 1)).clamp(-1, 1)


def test_losses_are_finite_and_fall_on_a_fixed_batch(tmp_path):
    cfg = tiny("steps=60", "ae_fraction=0.5", "lr_schedule=constant", "lr=1e-3")
    fixed = fixed_batch(cfg)
    summary = train(cfg, str(tmp_path / "run"), loader=fixed)
    assert summary["finished"] and summary["step"] == 60
    recs = records(tmp_path / "run")
    assert [r["step"] for r in recs] == list(range(1, 61))
    for r in recs:
        assert all(math.isfinite(v) for k, v in r.items() if isinstance(v, float)), r
    ae = [r["ae_mse"] for r in recs if r["phase"] == "autoencoder"]
    disc = [r["loss_disc"] for r in recs if r["phase"] == "artifacts"]
    assert len(ae) == 30 and len(disc) == 30
    assert sum(ae[-5:]) < 0.5 * sum(ae[:5])  # the autoencoder fits the batch
    # C learns to tell real from damaged (an adversarial game: the repair net fights back, so the
    # loss need not fall monotonically, but it stays well below its start at chance)
    assert min(disc) < 0.5 * disc[0] and sum(disc[-10:]) / 10 < 0.8 * disc[0], disc
    last = recs[-1]
    assert last["acc_real"] > 0.5 and last["acc_fake"] > 0.5
    assert all(0 <= r[k] <= 1 for r in recs[30:] for k in ("acc_real", "acc_fake", "mask_acc", "mask_iou"))


def plant(images, omega):
    """Images whose dropped 8x8 blocks are flattened to the block's mean colour."""
    b, _, s, _ = images.shape
    m = omega.shape[-1]
    blocks = torch.nn.functional.avg_pool2d(images, s // m)
    flat = torch.nn.functional.interpolate(blocks, size=(s, s), mode="nearest")
    keep = torch.nn.functional.interpolate(omega, size=(s, s), mode="nearest")
    return keep * images + (1 - keep) * flat


def test_mask_head_learns_a_planted_mask():
    torch.manual_seed(0)
    disc = Discriminator(Trunk("tiny"), mask_size=4, hidden=16, pool=2)
    opt = torch.optim.Adam(disc.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(1)
    for _ in range(220):
        omega = (torch.rand(16, 1, 4, 4, generator=g) >= 0.5).float()
        x = plant(smooth_images(g, 16, 32), omega)
        _, mask_logits = disc(x)
        loss = L.bce(mask_logits, omega)
        opt.zero_grad()
        loss.backward()
        opt.step()
    disc.eval()
    with torch.no_grad():  # held-out images and masks
        omega = (torch.rand(64, 1, 4, 4, generator=g) >= 0.5).float()
        _, mask_logits = disc(plant(smooth_images(g, 64, 32), omega))
    assert L.mask_accuracy(mask_logits, omega) > 0.9
    assert L.mask_iou(mask_logits, omega) > 0.8


def test_resume_continues_exactly(tmp_path):
    """N steps + resume + N steps == 2N steps straight, across the phase boundary."""
    args = ("steps=8", "ae_fraction=0.375", "ckpt_every=100")
    straight = train(tiny(*args), str(tmp_path / "a"))
    assert straight["finished"]
    first = train(tiny(*args, "stop_after=4"), str(tmp_path / "b"))
    assert first["step"] == 4 and not first["finished"]
    second = train(tiny(*args), str(tmp_path / "b"), resume=True)
    assert second["step"] == 8 and second["finished"]
    a, b = records(tmp_path / "a"), records(tmp_path / "b")
    assert [r["step"] for r in b] == list(range(1, 9)) and [r["phase"] for r in a] == [r["phase"] for r in b]
    assert a[2]["phase"] == "autoencoder" and a[3]["phase"] == "artifacts"
    assert len(a) == len(b) == 8
    for ra, rb in zip(a, b, strict=True):
        for k in LOSS_KEYS:
            if k in ra:
                assert ra[k] == rb[k], (ra["step"], k, ra[k], rb[k])
    ca = load_checkpoint(str(tmp_path / "a" / "checkpoints" / "last.pt"))
    cb = load_checkpoint(str(tmp_path / "b" / "checkpoints" / "last.pt"))
    for name in ca["models"]:
        for k, v in ca["models"][name].items():
            assert torch.equal(v, cb["models"][name][k]), (name, k)


def test_checkpoint_of_another_config_and_missing_checkpoint_are_refused(tmp_path):
    run = str(tmp_path / "run")
    train(tiny("steps=4", "ae_fraction=0.5"), run)
    with pytest.raises(FileExistsError, match="--resume"):
        train(tiny("steps=4", "ae_fraction=0.5"), run)
    with pytest.raises(CheckpointError, match="another config.*theta"):
        train(tiny("steps=4", "ae_fraction=0.5", "theta=0.3"), run, resume=True)
    # runtime keys may change on resume; an already finished run simply ends
    done = train(tiny("steps=4", "ae_fraction=0.5", "log_every=2"), run, resume=True)
    assert done["step"] == 4
    with pytest.raises(CheckpointError, match="no checkpoint"):
        train(tiny("steps=4"), str(tmp_path / "empty"), resume=True)


def test_export_backbone_round_trip(tmp_path):
    run = str(tmp_path / "run")
    train(tiny("steps=4", "ae_fraction=0.5"), run)
    out = str(tmp_path / "trunk.pt")
    config = export_backbone(run, out)
    raw = torch.load(out, weights_only=True)
    assert set(raw) == {"state_dict", "config"} and raw["config"]["trunk"]["channels"] == [16, 32, 48, 48, 32]
    assert config["step"] == 4 and config["preset"] == "tiny"
    trunk = load_backbone(out)
    ckpt = load_checkpoint(os.path.join(run, "checkpoints", "last.pt"))
    trained = {k[len("trunk."):]: v for k, v in ckpt["models"]["disc"].items() if k.startswith("trunk.")}
    assert trunk.state_dict().keys() == trained.keys()
    assert all(torch.equal(trunk.state_dict()[k], v) for k, v in trained.items())
    assert not trunk.training and len(trunk.features(torch.zeros(1, 3, 32, 32))) == 5
    with pytest.raises(ValueError, match="not a spotart backbone"):
        torch.save({"x": torch.zeros(1)}, str(tmp_path / "other.pt"))
        load_backbone(str(tmp_path / "other.pt"))


def test_data_errors_name_the_problem(tmp_path):
    with pytest.raises(DataError, match="no shards given"):
        train(build_config("artifacts", "tiny", ["progress=false", "device=cpu"]), str(tmp_path / "r1"))
    with pytest.raises(DataError, match="does not exist"):
        train(build_config("artifacts", "tiny", ["shards=" + str(tmp_path / "nope"), "device=cpu"]), str(tmp_path / "r2"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no manifest"):
        train(build_config("artifacts", "tiny", ["shards=" + str(tmp_path / "empty"), "device=cpu"]), str(tmp_path / "r3"))
    (tmp_path / "empty" / "manifest.json").write_text('{"shards": [], "num_samples": 0}')
    with pytest.raises(DataError, match="empty"):
        train(build_config("artifacts", "tiny", ["shards=" + str(tmp_path / "empty"), "device=cpu"]), str(tmp_path / "r4"))


def test_out_of_memory_becomes_a_one_line_hint():
    cfg = tiny()
    rt = resolve_runtime(cfg)
    with pytest.raises(TrainingOOM, match=r"batch_size 8 per rank.*--set batch_size=4"):
        with oom_hint(cfg, rt):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")


def test_lr_schedule_decays_linearly_then_stays():
    cfg = tiny("steps=100")
    assert lr_factor(0, 100, cfg) == 1.0
    assert lr_factor(45, 100, cfg) == pytest.approx(1 - 0.99 * 0.5)
    assert lr_factor(90, 100, cfg) == pytest.approx(0.01) and lr_factor(99, 100, cfg) == pytest.approx(0.01)


def test_synthetic_batches_are_the_pipelines_and_follow_the_loader_contract():
    cfg = tiny("batch_size=4")
    sb = synthetic_batches(pipeline_config(cfg, resolve_runtime(cfg)), "cpu", count=2, length=3)
    first = list(sb)
    assert len(first) == 3 and len(sb) == 3 and sb.epoch == 1
    assert first[2] is first[0] and not torch.equal(first[0]["mask"], first[1]["mask"])  # 2 batches, cycled
    b = first[0]
    assert b["image"].shape == (4, 3, 32, 32) and b["image"].abs().max() <= 1 and b["image"].dtype == torch.float32
    assert b["mask"].shape == (4, 1, 4, 4) and set(b["mask"].unique().tolist()) <= {0.0, 1.0}
    assert b["label"].dtype == torch.int64 and (b["label"] == -1).all()
    state = sb.state_dict()
    nxt = next(iter(sb))
    again = synthetic_batches(pipeline_config(cfg, resolve_runtime(cfg)), "cpu", count=2, length=3)
    again.load_state_dict(state)
    assert torch.equal(next(iter(again))["mask"], nxt["mask"])  # same seed, same batches, same position
    with pytest.raises(ValueError, match="another batch source"):
        ReplayBatches(first[:1]).load_state_dict(state)
    big = tiny("batch_size=256", "image_size=64", "trunk.conv1_stride=4", "enc_channels=16,32,64,128")
    drop = 1 - next(iter(synthetic_batches(pipeline_config(big, resolve_runtime(big)), "cpu", count=1)))["mask"].mean()
    assert abs(drop.item() - 0.6) < 0.02  # theta is the drop probability


def test_replay_records_a_loaders_batches_across_epochs():
    batches = [{"x": torch.tensor([i])} for i in range(3)]
    src = ReplayBatches(batches, length=3)
    rec = ReplayBatches.record(src, 5)
    assert [int(b["x"]) for b in rec.batches] == [0, 1, 2, 0, 1]


def test_autoencoder_is_unchanged_through_phase_2(tmp_path):
    run = str(tmp_path / "run")
    train(tiny("steps=8", "ae_fraction=0.5", "ckpt_every=100", "stop_after=4"), run)
    after_phase_1 = load_checkpoint(os.path.join(run, "checkpoints", "last.pt"))["models"]["autoencoder"]
    assert train(tiny("steps=8", "ae_fraction=0.5", "ckpt_every=100"), run, resume=True)["step"] == 8
    ckpt = load_checkpoint(os.path.join(run, "checkpoints", "last.pt"))
    end = ckpt["models"]["autoencoder"]
    assert after_phase_1.keys() == end.keys()
    for k, v in after_phase_1.items():  # weights and BatchNorm running statistics alike
        assert torch.equal(v, end[k]), k
    # while repair and C did train in phase 2
    assert any(s["step"] > 0 for s in ckpt["optimizers"]["disc"]["state"].values())


@pytest.mark.parametrize("name", ["artifacts", "inpainting"])
def test_each_optimiser_gets_gradients_from_its_own_loss_only(name):
    """In one shared forward, the repair (generator) loss must not reach C's parameters nor C's loss
    the repair net's: each optimiser's gradients at its step are those of its own loss alone."""
    cfg = build_config(name, "tiny", BASE + ["steps=4", "ae_fraction=0.5"] if name == "artifacts" else BASE)
    rt = resolve_runtime(cfg)
    batch = next(iter(fixed_batch(cfg)))

    def grads_at_step(keep: set) -> dict:
        tr = build_training(cfg, rt)
        phase = tr.task.phases(cfg)[-1]
        runners = tr.task.enter_phase(tr.models, phase)
        seen = {}
        for n, opt in tr.optimizers.items():
            opt.step = lambda n=n: seen.__setitem__(n, [None if p.grad is None else p.grad.clone()
                                                        for p in tr.params_of[n]])

        class OnlySome:  # the task, with the losses not in `keep` multiplied by 0
            def train_step(self, runners, batch, phase, cfg):
                losses, logs = tr.task.train_step(runners, batch, phase, cfg)
                return {n: v * (1.0 if n in keep else 0.0) for n, v in losses.items()}, logs

        torch.manual_seed(0)  # the same dropout masks in every call
        optimise(OnlySome(), runners, batch, phase, cfg, rt, tr.optimizers, tr.params_of, tr.scaler)
        frozen = [p for m in tr.models.values() for p in m.parameters() if not any(p is q for ps in tr.params_of.values() for q in ps)]
        assert all(p.grad is None for p in frozen)
        return seen

    both = grads_at_step({"repair", "disc", "generator"})
    for own in both:
        alone = grads_at_step({own})
        assert len(alone[own]) == len(both[own]) > 0
        assert any(g is not None and g.abs().sum() > 0 for g in both[own])
        for ga, gb in zip(alone[own], both[own], strict=True):
            assert (ga is None and gb is None) or torch.equal(ga, gb), own


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


def test_sigterm_leaves_a_loadable_checkpoint_and_the_run_resumes(tmp_path):
    run = str(tmp_path / "run")
    cmd = [sys.executable, "-m", "spotart.tools.cli", "train", run, "--preset", "tiny", "--synthetic",
           "--set", "steps=100000", "--set", "log_every=1", "--set", "ckpt_every=100000", "--set", "progress=false",
           "--set", "batch_size=4", "--device", "cpu"]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    metrics = os.path.join(run, "metrics.jsonl")
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if os.path.exists(metrics) and os.path.getsize(metrics) > 0:
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.stdout.read()
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, out
    assert "--resume" in out
    ckpt = load_checkpoint(os.path.join(run, "checkpoints", "last.pt"))
    assert ckpt["step"] >= 1
    cfg = build_config(base=ckpt["config"])
    models = get_task("artifacts").build_models(cfg)
    for name, m in models.items():
        m.load_state_dict(ckpt["models"][name], strict=True)
    # the interrupted run continues
    res = subprocess.run([sys.executable, "-m", "spotart.tools.cli", "train", run, "--resume", "--set", "stop_after=2"],
                         env=_env(), capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert load_checkpoint(os.path.join(run, "checkpoints", "last.pt"))["step"] == ckpt["step"] + 2


def test_a_checkpoint_from_before_a_new_config_key_still_resumes():
    """A key added to spotart after a checkpoint was written (e.g. `aberration`, `repair_lr_mult`)
    takes its default on resume instead of refusing the run; a changed value is still refused."""
    from spotart.trainer.checkpoint import check_config

    cfg = tiny("steps=4").to_dict()
    old = {k: v for k, v in cfg.items() if k != "aberration"}
    old["params"] = {k: v for k, v in cfg["params"].items() if k != "repair_lr_mult"}
    check_config({"config": old}, cfg, "last.pt")  # no error
    with pytest.raises(CheckpointError, match="aberration"):
        check_config({"config": old}, tiny("steps=4", "aberration=0.01").to_dict(), "last.pt")

"""`spotart preview`: the grid drawn from hand-made batches (geometry of every panel checked by
pixel), and the command end to end on real shards."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from spotart.pipeline.context import NEIGHBOURS
from spotart.tools.cli import main
from spotart.trainer.visuals import PAD, TEXT_H, render_preview

TOP = PAD + TEXT_H + PAD  # y of the first row of panels


def grid_size(col_widths, row_heights):
    return PAD + sum(w + PAD for w in col_widths), TOP + sum(h + TEXT_H + PAD for h in row_heights)


def panel(img, col_x, row, row_h, y, x, k):
    """Pixel (y, x) of the unscaled panel whose left edge is col_x, in row `row`."""
    return img[TOP + row * (row_h + TEXT_H + PAD) + y * k, col_x + x * k]


def load(path):
    with Image.open(path) as im:
        assert im.format == "PNG"
        return np.asarray(im.convert("RGB")).astype(int)


def test_artifacts_dropped_cells_are_red(tmp_path):
    n, s, m = 3, 16, 4
    rng = np.random.default_rng(0)
    mask = (rng.random((n, 1, m, m)) > 0.5).astype(np.float32)
    batch = {"image": torch.zeros(n, 3, s, s), "mask": torch.from_numpy(mask), "label": torch.tensor([3, -1, 0])}
    path = tmp_path / "a.png"
    size = render_preview(batch, "artifacts", str(path))
    k = 6  # 16 px enlarged to >= 96
    assert size == grid_size([96, 96], [96] * n)
    img = load(path)
    assert img.shape[1::-1] == size
    x2 = PAD + 96 + PAD
    for i, cy, cx in itertools.product(range(n), range(m), range(m)):
        y, x = cy * 4 + 1, cx * 4 + 2  # inside cell (cy, cx) of the 16 px image
        r, g, b = panel(img, x2, i, 96, y, x, k)
        if mask[i, 0, cy, cx] == 0:  # dropped: grey 0.5 under 45% red
            assert r > 170 and g < 90 and b < 90
        else:
            assert (r, g, b) == tuple(panel(img, PAD, i, 96, y, x, k)) == (128, 128, 128)


def test_inpainting_panels(tmp_path):
    n, s = 2, 32
    target = torch.rand(n, 3, s, s) * 2 - 1
    mask = torch.zeros(n, 1, s, s)
    mask[:, :, 10:20, 12:22] = 1
    weight = mask.clone()
    band = torch.zeros_like(mask, dtype=torch.bool)
    band[:, :, 8:22, 10:24] = True
    weight[band & (mask == 0)] = 10.0
    batch = {"image": target * (1 - mask), "target": target, "mask": mask, "weight": weight}
    path = tmp_path / "i.png"
    assert render_preview(batch, "inpainting", str(path)) == grid_size([96] * 3, [96] * n)
    img, k = load(path), 3
    xs = [PAD + c * (96 + PAD) for c in range(3)]
    for i in range(n):
        assert tuple(panel(img, xs[0], i, 96, 15, 15, k)) == (128, 128, 128)  # hole: fill 0 -> mid grey
        want = np.round((np.clip(target[i, :, 2, 3].numpy(), -1, 1) + 1) / 2 * 255)
        np.testing.assert_allclose(panel(img, xs[0], i, 96, 2, 3, k), want, atol=1)  # context kept
        np.testing.assert_allclose(panel(img, xs[1], i, 96, 15, 15, k), np.round((target[i, :, 15, 15].numpy() + 1) / 2 * 255), atol=1)
        assert tuple(panel(img, xs[2], i, 96, 15, 15, k)) == (128,) * 3   # weight 1
        assert tuple(panel(img, xs[2], i, 96, 9, 11, k)) == (255,) * 3    # band 10
        assert tuple(panel(img, xs[2], i, 96, 0, 0, k)) == (0,) * 3       # outside 0


def test_context_pair_drawn_at_its_position(tmp_path):
    p, gap = 8, 4
    n = len(NEIGHBOURS)
    red = torch.tensor([1.0, -1.0, -1.0]).view(3, 1, 1).expand(3, p, p)
    green = torch.tensor([-1.0, 1.0, -1.0]).view(3, 1, 1).expand(3, p, p)
    batch = {"patch1": red.expand(n, 3, p, p), "patch2": green.expand(n, 3, p, p), "position": torch.arange(n)}
    path = tmp_path / "c.png"
    side = 3 * p + 2 * gap  # 32 -> enlarged x3
    size = render_preview(batch, "context", str(path), context_gap=gap)
    assert size == grid_size([96, 96, 96], [96] * n)
    img = load(path)
    x3 = PAD + 2 * (96 + PAD)
    for i, (dy, dx) in enumerate(NEIGHBOURS):
        for cy, cx in itertools.product(range(3), range(3)):
            y, x = cy * (p + gap) + p // 2, cx * (p + gap) + p // 2
            rgb = tuple(panel(img, x3, i, 96, y, x, 96 // side))
            if (cy, cx) == (1, 1):
                assert rgb == (255, 0, 0)
            elif (cy, cx) == (1 + dy, 1 + dx):
                assert rgb == (0, 255, 0)
            else:
                assert max(rgb) < 60  # background


def jigsaw_tiles(perm, t):
    """Tile i comes from cell perm[i]; cell c is marked by c + 1 bright pixels in its top row."""
    tiles = -torch.ones(9, 3, t, t)
    for i, c in enumerate(perm):
        tiles[i, :, 0, : c + 1] = 1.0
    return tiles


def bright_in_top_row(img, col_x, row, row_h, cell_y, cell_x, t, k):
    return sum(panel(img, col_x, row, row_h, cell_y, cell_x + j, k)[0] > 128 for j in range(t))


def test_jigsaw_reassembled_by_permutation(tmp_path):
    t, gap = 10, 1  # gap: max(1, t // 8); 10 px leave room for up to 9 marks
    rng = np.random.default_rng(3)
    perms = np.stack([rng.permutation(9) for _ in range(5)]).astype(np.uint8)
    labels = [4, 0, 2]
    batch = {"tiles": torch.stack([jigsaw_tiles(perms[l], t) for l in labels]), "permutation": torch.tensor(labels)}
    side = 3 * t + 2 * gap  # 32 -> x3
    k = 3
    path = tmp_path / "j.png"
    assert render_preview(batch, "jigsaw", str(path), permutations=perms) == grid_size([96, 96], [96] * 3)
    img = load(path)
    x2 = PAD + side * k + PAD
    for row, l in enumerate(labels):
        for slot in range(9):
            cy, cx = (slot // 3) * (t + gap), (slot % 3) * (t + gap)
            # as fed: slot i holds the tile cut from cell perm[i]
            assert bright_in_top_row(img, PAD, row, 96, cy, cx, t, k) == perms[l][slot] + 1
            # reassembled: cell c holds its own tile again
            assert bright_in_top_row(img, x2, row, 96, cy, cx, t, k) == slot + 1

    # Without the set: the tiles only, one column.
    assert render_preview(batch, "jigsaw", str(tmp_path / "j2.png")) == grid_size([96], [96] * 3)


def test_images_and_half_precision(tmp_path):
    batch = {"image": torch.zeros(2, 3, 48, 48, dtype=torch.bfloat16), "label": torch.tensor([1, 2])}
    path = tmp_path / "sub" / "g.png"
    assert render_preview(batch, "images", str(path)) == grid_size([96], [96, 96])
    assert load(path)[TOP + 5, PAD + 5].tolist() == [128, 128, 128]


def test_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="cannot preview task 'rotation'"):
        render_preview({}, "rotation", str(tmp_path / "x.png"))
    with pytest.raises(ValueError, match=r"inpainting batch lacks \['weight'\]"):
        render_preview({"image": 0, "target": 0, "mask": 0}, "inpainting", str(tmp_path / "x.png"))


def test_cli_end_to_end(sample_shards, tmp_path):
    out = tmp_path / "grid.png"
    res = CliRunner().invoke(main, ["preview", "--task", "inpainting", "--shards", sample_shards, "--out", str(out),
                                    "--batch", "3", "--image-size", "32", "--set", "mode=blocks",
                                    "--set", "pipeline.overlap=2"])
    assert res.exit_code == 0, res.output
    assert "3 samples" in res.output
    with Image.open(out) as im:
        assert im.size == grid_size([96] * 3, [96] * 3)


def test_cli_takes_the_train_keys(sample_shards, tmp_path, monkeypatch):
    """--set reaches every data parameter as `spotart train --set` does, bare or as pipeline.<key>,
    and the preview draws the pipeline a training run with those keys would build."""
    import spotart.tools.preview as preview_module
    from spotart.trainer.config import build_config
    from spotart.trainer.data import pipeline_config
    from spotart.trainer.runtime import resolve_runtime

    seen = {}
    monkeypatch.setattr(preview_module, "preview", lambda cfg, out: seen.setdefault("cfg", cfg) and (1, 1))
    sets = ["grey_prob=1", "pipeline.channel_jitter=0", "tile_norm=false"]
    res = CliRunner().invoke(main, ["preview", "--task", "jigsaw", "--preset", "tiny", "--shards", sample_shards,
                                    "--out", str(tmp_path / "j.png"), "--batch", "2", "--seed", "3",
                                    *[x for kv in sets for x in ("--set", kv)]])
    assert res.exit_code == 0, res.output
    got = seen["cfg"]
    train = build_config("jigsaw", "tiny", sets + ["batch_size=2", "seed=3", "device=cpu", "precision=fp32"])
    want = pipeline_config(train, resolve_runtime(train), shards=sample_shards, shard_id=0, num_shards=1)
    assert got == want
    assert got.params.grey_prob == 1 and got.params.channel_jitter == 0 and got.params.tile_norm is False
    assert got.params.count == 100 and got.image_size == 32  # the tiny preset's


def test_cli_rejects_unknown_param(sample_shards, tmp_path):
    res = CliRunner().invoke(main, ["preview", "--task", "artifacts", "--shards", sample_shards,
                                    "--out", str(tmp_path / "x.png"), "--set", "drop=0.5"])
    assert res.exit_code != 0
    assert "unknown config key 'drop'" in res.output

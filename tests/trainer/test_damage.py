"""The damage formula against a direct computation, and the repair network's masking."""

import numpy as np
import pytest
import torch

from spotart.trainer.damage import damage, local_average, upsample_mask
from spotart.trainer.nets.autoencoder import AutoEncoder
from spotart.trainer.nets.repair import DamagedDecoder, RepairLayer, RepairNet


def direct_damage(phi, omega, k):
    """phi_hat by explicit loops: kept entries unchanged, dropped ones the mean of the k x k
    window of phi around them (only entries inside the map)."""
    phi, omega = phi.numpy().astype(np.float64), omega.numpy()
    b, c, m, n = phi.shape
    out = phi.copy()
    r = k // 2
    for bi in range(b):
        for i in range(m):
            for j in range(n):
                if omega[bi, 0, i, j] == 0:
                    win = phi[bi, :, max(0, i - r):i + r + 1, max(0, j - r):j + r + 1]
                    out[bi, :, i, j] = win.mean(axis=(1, 2))
    return out


@pytest.mark.parametrize("k", [1, 3, 5])
def test_damage_matches_direct_computation(k):
    g = torch.Generator().manual_seed(k)
    phi = torch.randn(3, 5, 6, 7, generator=g)
    omega = (torch.rand(3, 1, 6, 7, generator=g) > 0.5).float()
    got = damage(phi, omega, k)
    np.testing.assert_allclose(got.numpy(), direct_damage(phi, omega, k), rtol=1e-5, atol=1e-6)
    kept = omega.expand_as(phi) == 1
    assert torch.equal(got[kept], phi[kept])  # kept entries bit-exact
    if k == 1:
        assert torch.allclose(got, phi)  # a 1x1 "average" is the entry itself


def test_damage_rejects_mask_of_wrong_size_and_even_kernels():
    with pytest.raises(ValueError, match="does not match the encoder output"):
        damage(torch.zeros(1, 2, 4, 4), torch.ones(1, 1, 8, 8), 3)
    with pytest.raises(ValueError, match="odd"):
        local_average(torch.zeros(1, 2, 4, 4), 2)


def test_upsample_mask_is_nearest_neighbour_blocks():
    omega = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    up = upsample_mask(omega, (4, 4))
    expect = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]], dtype=torch.float32)
    assert torch.equal(up[0, 0], expect)


def test_repair_layer_changes_only_dropped_positions():
    layer = RepairLayer(4).train()
    x = torch.randn(2, 4, 8, 8)
    keep = (torch.rand(2, 1, 8, 8) > 0.5).float()
    out = layer(x, keep)
    kept = keep.expand_as(x) == 1
    assert torch.equal(out[kept], x[kept])
    assert not torch.allclose(out[~kept], x[~kept])


def test_damaged_decoder_with_nothing_dropped_is_the_plain_decoder():
    ae = AutoEncoder(8, (8, 16, 32)).eval()
    gen = DamagedDecoder(ae.decoder, RepairNet(ae.decoder)).train()
    assert not ae.decoder.training and gen.repair.training  # the frozen decoder stays in eval mode
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        phi, real = ae(x, return_code=True)
        ones = torch.ones(2, 1, 4, 4)
        assert torch.equal(gen(damage(phi, ones, 3), ones), real)
        omega = ones.clone()
        omega[:, :, 1, 2] = 0
        fake = gen(damage(phi, omega, 3), omega)
        assert not torch.allclose(fake, real)
        # dropping one entry changes the image most in that entry's 8x8 block
        diff = (fake - real).abs().mean(1)[0]
        block = diff[8:16, 16:24].mean()
        assert block > 2 * diff.mean()

"""Trunk geometry, heads, autoencoder shapes: contracts the later tasks and the evaluator rely on."""

import pytest
import torch

from spotart.trainer.nets.autoencoder import AutoEncoder
from spotart.trainer.nets.discriminator import Discriminator
from spotart.trainer.nets.heads import MaskHead
from spotart.trainer.nets.trunk import TRUNK_PRESETS, Trunk, TrunkConfig, trunk_config


@pytest.mark.parametrize("size,conv5", [(16, 1), (32, 2), (64, 4), (96, 6), (224, 14)])
def test_alexnet_trunk_runs_from_tiles_to_224px_and_conv5_is_size_over_16(size, conv5):
    trunk = Trunk("alexnet").eval()
    with torch.no_grad():
        feats = trunk.features(torch.randn(2, 3, size, size))
    assert len(feats) == 5
    assert [f.shape[1] for f in feats] == [96, 256, 384, 384, 256]
    assert feats[-1].shape[-2:] == (conv5, conv5)
    assert feats[0].shape[-1] == -(-size // 4)  # conv1: ceil(S / stride)
    assert all((f >= 0).all() for f in feats)  # post-ReLU activations
    assert torch.equal(trunk(torch.ones(1, 3, size, size)), trunk.features(torch.ones(1, 3, size, size))[-1])


def test_tiny_trunk_geometry_matches_the_tiny_mask():
    trunk = Trunk("tiny").eval()
    with torch.no_grad():
        f = trunk.features(torch.randn(2, 3, 32, 32))
    assert f[-1].shape == (2, 32, 4, 4)


def test_trunk_config_validation_and_presets():
    assert trunk_config("64px") is TRUNK_PRESETS["64px"]
    assert trunk_config({"channels": [8, 8, 8, 8, 8], "norm": "none"}).channels == (8, 8, 8, 8, 8)
    with pytest.raises(ValueError, match="unknown trunk preset"):
        trunk_config("resnet")
    with pytest.raises(ValueError, match="unknown trunk key"):
        trunk_config({"width": 3})
    with pytest.raises(ValueError, match="5 positive widths"):
        TrunkConfig(channels=(8, 8))
    with pytest.raises(ValueError, match="norm"):
        TrunkConfig(norm="group")
    plain = Trunk(TrunkConfig(channels=(8, 8, 8, 8, 8), norm="none"))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in plain.modules())
    bn = Trunk(TrunkConfig(channels=(8, 8, 8, 8, 8)))
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in bn.modules()) == 4  # conv2..conv5


def test_mask_head_is_spatially_aligned_and_refuses_other_sizes():
    head = MaskHead(4, mask_size=4)
    with torch.no_grad():
        head.conv.weight.zero_()
        head.conv.weight[0, 0, 1, 1] = 1.0  # the logit is channel 0 at the same location
        head.conv.bias.zero_()
        x = torch.zeros(1, 4, 4, 4)
        x[0, 0, 1, 3] = 5.0
        out = head(x)
        assert out.shape == (1, 1, 4, 4)
        assert out[0, 0, 1, 3] == 5.0 and out.abs().sum() == 5.0
        with pytest.raises(ValueError, match="conv5 is 8x8 but the mask is 4x4"):
            head(torch.zeros(1, 4, 8, 8))


def test_trunk_side_matches_the_network():
    for cfg in (TrunkConfig(), TrunkConfig(channels=(8, 8, 8, 8, 8), conv1_kernel=5, conv1_stride=2)):
        trunk = Trunk(cfg).eval()
        for size in (16, 31, 32, 64, 96):
            with torch.no_grad():
                feats = trunk.features(torch.zeros(1, 3, size, size))
            assert [f.shape[-1] for f in feats] == [cfg.side(size, k) for k in range(1, 6)], (cfg, size)


def test_discriminator_outputs_one_logit_per_image_and_mask_logits():
    d = Discriminator(Trunk("tiny"), mask_size=4, hidden=16, pool=2)
    logit, mask = d(torch.randn(6, 3, 32, 32))
    assert logit.shape == (6,) and mask.shape == (6, 1, 4, 4)


@pytest.mark.parametrize("channels,size", [((16, 32, 64), 32), ((64, 128, 256, 512), 64)])
def test_autoencoder_code_is_size_over_2_to_the_depth_and_output_in_range(channels, size):
    ae = AutoEncoder(16, channels).eval()
    with torch.no_grad():
        phi, out = ae(torch.randn(2, 3, size, size), return_code=True)
    m = size // 2 ** len(channels)
    assert phi.shape == (2, channels[-1], m, m)
    assert out.shape == (2, 3, size, size) and out.abs().max() <= 1
    assert len(ae.decoder.levels) == len(channels) + 1  # D1 .. D_{L+1}


def test_deterministic_forms_compute_the_same():
    """The forms used with deterministic=true (nets/deterministic.py) give what the usual
    kernels give: bilinear x2 upsampling and adaptive average pooling."""
    import torch.nn.functional as F

    from spotart.trainer.nets.deterministic import avg_pool_to, bilinear_up2

    x = torch.randn(2, 5, 6, 10, dtype=torch.float64)
    ref = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    assert torch.allclose(bilinear_up2(x, exact_kernels=True), ref, atol=1e-12)
    assert torch.equal(bilinear_up2(x), ref)  # on the CPU the usual kernel runs
    for n in (1, 2):
        assert torch.allclose(avg_pool_to(x, n, exact_kernels=True), F.adaptive_avg_pool2d(x, n), atol=1e-12)
    assert torch.equal(avg_pool_to(x, 4, exact_kernels=True), F.adaptive_avg_pool2d(x, 4))  # 6 % 4: adaptive

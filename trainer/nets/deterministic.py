"""Two operations whose CUDA backward accumulates with atomics, in no fixed order, and the same
operations in forms whose backward does not: used while deterministic algorithms are on
(`deterministic=true`, runtime.determinism), elsewhere the usual kernels run.

- bilinear x2 upsampling (align_corners False): edge-replicated by one pixel, then a depthwise
  stride-2 transposed convolution with the separable kernel [1, 3, 3, 1] / 4: the same weights
  the bilinear kernel applies (tests/trainer/test_nets.py checks them equal);
- adaptive average pooling to n x n of a map whose sides n divides: plain average pooling over
  the same windows.
The replacements run on cuDNN's (deterministic) convolution and pooling kernels."""

from __future__ import annotations

import torch
import torch.nn.functional as F

_TAPS = (0.25, 0.75, 0.75, 0.25)


def _deterministic(x: torch.Tensor) -> bool:
    return x.is_cuda and torch.are_deterministic_algorithms_enabled()


def bilinear_up2(x: torch.Tensor, exact_kernels: bool | None = None) -> torch.Tensor:
    """F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)."""
    if not (_deterministic(x) if exact_kernels is None else exact_kernels):
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    k = torch.tensor(_TAPS, dtype=x.dtype, device=x.device)
    c = x.shape[1]
    w = (k[:, None] * k[None, :]).expand(c, 1, 4, 4).contiguous()
    return F.conv_transpose2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), w, stride=2, padding=3, groups=c)


def avg_pool_to(x: torch.Tensor, n: int, exact_kernels: bool | None = None) -> torch.Tensor:
    """F.adaptive_avg_pool2d(x, n)."""
    h, w = x.shape[-2:]
    if (_deterministic(x) if exact_kernels is None else exact_kernels) and h % n == 0 and w % n == 0:
        return F.avg_pool2d(x, (h // n, w // n))
    return F.adaptive_avg_pool2d(x, n)

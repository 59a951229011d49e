"""Small helpers shared by the task generators: output dtype, [-1, 1] CHW normalisation.

Every image tensor a pipeline emits is CHW float. DALI has no bfloat16 output for its
normalising operators, so bf16 runs get float16 from DALI and the iterator casts on the device
(float16 holds [-1, 1] and per-tile standardised values with more mantissa than bf16 keeps)."""

from __future__ import annotations

import nvidia.dali.fn as fn
import nvidia.dali.types as types

# mean/std mapping uint8 [0, 255] to [-1, 1]; the autoencoder/generators end in tanh.
HALF_RANGE = 127.5


def out_dtype(cfg):
    return types.FLOAT if cfg.dtype == "float32" else types.FLOAT16


def to_chw(images, cfg, mean=HALF_RANGE, std=HALF_RANGE):
    """uint8 HWC -> CHW float in cfg's dtype, (x - mean) / std; mean/std scalars or per channel."""
    mean = [float(mean)] * 3 if isinstance(mean, (int, float)) else [float(m) for m in mean]
    std = [float(std)] * 3 if isinstance(std, (int, float)) else [float(s) for s in std]
    return fn.crop_mirror_normalize(
        images, dtype=out_dtype(cfg), output_layout="CHW", mean=mean, std=std, device=cfg.device
    )


def randint(lo: int, hi: int, shape=None, **kwargs):
    """int32 uniform on [lo, hi] inclusive. (fn.random.uniform with an integer dtype rounds a
    continuous draw, which gives both ends half the probability of the inner values.) `kwargs`
    go to fn.random.choice (e.g. seed)."""
    return fn.random.choice(hi - lo + 1, shape=shape, **kwargs) + lo


def op_seeds(n: int, salt: int) -> list[dict]:
    """Explicit seeds (as fn kwargs) for `n` random operators, derived from the seed of the
    pipeline being defined and `salt`. DALI seeds the other operators in the order it collects
    them from the outputs, so two graphs that consume the same draws differently (a task's CPU
    and GPU variants) would draw differently; these do not. No pipeline seed: automatic seeds."""
    import numpy as np
    from nvidia.dali.pipeline import Pipeline

    pipe = Pipeline.current()
    if pipe is None or pipe.seed is None:
        return [{} for _ in range(n)]
    state = np.random.SeedSequence([int(pipe.seed), salt]).generate_state(n)
    return [{"seed": int(s % (2**31 - 1))} for s in state]

"""Steps with a non-finite loss or gradient are skipped, counted, and end a run that keeps
producing them.

A GAN in fp16 can overflow; a NaN once applied to the weights never leaves them. So every step
checks its losses and its (unscaled) gradients and, when one is not finite, changes nothing: the
optimisers leave parameters, moments and step counts as they were, and the BatchNorm running
statistics its forward updated are put back. All of it happens on the device, without a sync:
the host keeps running ahead of the GPU. A rank whose batch is empty (its share of an epoch's
end under torchrun) takes part in the step with zero gradients. The flag reaches the host at the loop's log steps
(its one sync per window), with the number of skipped steps and the longest run of them; `limit`
such steps in a row stop the run (trainer/loop.py).

fp16 keeps its GradScaler: an overflow of the scaled gradients is a skipped step as before, and
the scale backs off. The skip itself is the mechanism the GradScaler uses for fused optimisers
(torch/amp/grad_scaler.py): the fused Adam kernel takes a `found_inf` tensor and does nothing
where it is set. An optimiser without that support is stepped after a host check instead
(correct, one sync per step)."""

from __future__ import annotations

import torch


def nonfinite(losses: dict, grads: list[torch.Tensor], empty: bool = False) -> torch.Tensor:
    """0-d float tensor on the device: 1 when a loss or a gradient is inf or NaN on any rank, or
    no rank had a sample. `empty`: this rank's batch had none (its share of an epoch's end can be
    empty under torchrun): its losses are NaN (means over nothing) but its gradients are zeros,
    so with data on another rank the step goes on (DDP averages the gradients with them)."""
    total = torch.zeros((), device=grads[0].device if grads else None)
    if grads:
        total = total + torch.nn.utils.get_total_norm(grads, norm_type=2.0).float()
    if not empty:
        total = total + torch.stack([v.detach().float().reshape(()) for v in losses.values()]).sum()
    flags = torch.stack([(~torch.isfinite(total)).float(), total.new_tensor(0.0 if empty else 1.0)])
    if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        # DDP averaged the gradients, but each rank has its own losses: skip on every rank or none
        torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
    return torch.maximum(flags[0], 1 - flags[1])


def step_unless(opt: torch.optim.Optimizer, found_inf: torch.Tensor):
    """opt.step(), with nothing changed where `found_inf` is 1."""
    if not all(g.get("fused") for g in opt.param_groups):
        if not found_inf.item():
            opt.step()
        return
    opt.grad_scale, opt.found_inf = None, found_inf
    try:
        opt.step()
    finally:
        del opt.grad_scale, opt.found_inf


class StepGuard:
    """The models' buffers before each forward (restored after a skipped step) and device-side
    counts of skipped steps, read back with the metrics."""

    def __init__(self, models: dict, device: torch.device):
        self.buffers = [b for m in models.values() for b in m.buffers()]
        self.saved = [torch.empty_like(b) for b in self.buffers]
        zero = torch.zeros((), dtype=torch.float32, device=device)
        self.count, self.streak, self.longest = zero.clone(), zero.clone(), zero.clone()
        self.last = zero.clone()  # 1.0 when the latest step was skipped

    def before(self):
        if self.buffers:
            torch._foreach_copy_(self.saved, self.buffers)

    def after(self, bad: torch.Tensor, empty: bool = False):
        """Put the buffers back where the step was skipped or this rank had no sample (BatchNorm
        took the statistics of nothing); count the step when skipped."""
        for b, s in zip(self.buffers, self.saved, strict=True):
            b.copy_(s if empty else torch.where(bad.bool(), s, b))
        self.last = torch.maximum(bad, bad.new_tensor(float(empty)))  # no logs of this rank's to keep
        self.count += bad
        self.streak.add_(1).mul_(bad)
        torch.maximum(self.longest, self.streak, out=self.longest)

    def read(self) -> dict:
        """Skipped steps since the last read and the longest run of them (a step is skipped when a
        loss or gradient is not finite, or no rank had a sample) (a sync; resets)."""
        out = {"skipped_steps": int(self.count.item()), "skipped_streak": int(self.longest.item())}
        self.count.zero_()
        self.longest.copy_(self.streak)
        return out


def diverged(cfg, streak: int, step: int, fp16: bool) -> str | None:
    """The message that ends a run after `streak` skipped steps in a row (None: go on)."""
    if streak < cfg.max_nonfinite_steps:
        return None
    tips = [f"a lower learning rate (--set lr={cfg.lr / 4:g}; it is {cfg.lr:g})"]
    if fp16:
        tips.append("--precision bf16 instead of fp16 (bf16 has fp32's range: no overflow)")
    for key in ("disc_lr_mult", "disc_lr_ratio"):  # the discriminator's rate in the adversarial tasks
        mult = getattr(cfg.params, key, None)
        if mult is not None and mult > 1:
            tips.append(f"a smaller discriminator rate (--set {key}=1; it is {mult:g})")
    return (f"{streak} steps in a row had a non-finite loss or gradient "
            f"(max_nonfinite_steps {cfg.max_nonfinite_steps}): "
            f"the run diverged. Stopped at step {step} with a checkpoint of the last finite weights (a skipped step "
            f"changes nothing). Try {', or '.join(tips)}, in a new run directory (--resume keeps the run's config).")

"""`ClassificationTask`: the shared body of the tasks that are one network and one softmax
cross-entropy (context prediction, jigsaw, supervised). A subclass says how to build its network,
how to get logits from a batch and which batch entry is the target; the rest (one optimiser
named "net", one phase, loss and accuracy logs) is here.

Optimisation is the trainer's, the same for every task so the comparison changes one thing
only: Adam (lr 3e-4, beta1 0.5), linear decay (config.py). The papers' own SGD schedules (jigsaw:
lr 0.01, x0.1 every 100K of 350K iterations) assume days of training; set them with --set."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .tasks import Phase, Task


class ClassificationTask(Task):
    target_key: str = ""

    def build_net(self, cfg) -> torch.nn.Module:
        raise NotImplementedError

    def logits(self, net, batch: dict) -> torch.Tensor:
        raise NotImplementedError

    def build_models(self, cfg):
        return {"net": self.build_net(cfg)}

    def trunk(self, models):
        return models["net"].trunk

    def phases(self, cfg):
        return [Phase(self.name, cfg.steps, ("net",))]

    def optimizer_params(self, models):
        return {"net": list(models["net"].parameters())}

    def enter_phase(self, models, phase):
        return {"net": models["net"].requires_grad_(True).train()}

    def model_outputs(self, models, batch, cfg):
        return {"pred": self.logits(models["net"], batch).argmax(1)}

    def train_step(self, runners, batch, phase, cfg):
        logits = self.logits(runners["net"], batch).float()
        target = batch[self.target_key]
        loss = F.cross_entropy(logits, target, ignore_index=-1)
        with torch.no_grad():
            valid = target >= 0
            hit = (logits.argmax(1) == target) & valid
            acc = hit.sum().float() / valid.sum().clamp(min=1).float()
        return {"net": loss}, {"loss": loss.detach(), "acc": acc}

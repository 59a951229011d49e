"""Run an audit: the task's pipeline per probe variant -> one cue's features -> a cheater fitted
on one split and scored on the other -> the report dict (report.py writes it out).

Splits: the cheaters train on `images` samples of `shards` and are scored on `test_images`
samples of `test_shards`, or, without those, train on the first half of `shards` and test on
the second (DALI's shard_id 0 / 1 of 2: disjoint images), with another pipeline seed. Each
variant's pipeline is run once per split and every cue that needs it reads the same batches.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from collections import defaultdict

import torch

from . import cheaters as CH
from .config import GENERATOR_TASKS, AuditConfig
from .probes import CHANCE_LABEL, CUES, WHAT, Variant, features, probes

log = logging.getLogger(__name__)
CLASSES = {"context": 8, "artifacts": 2, "inpainting": 2}


def train_config(acfg: AuditConfig):
    """The task's TrainConfig: the run's saved one or the preset, plus the audit's --set keys."""
    from ...trainer.config import build_config

    sets = [*acfg.overrides, f"device={acfg.device}", f"batch_size={acfg.batch_size}",
            f"num_threads={acfg.num_threads}"]
    if not acfg.run:
        return build_config(acfg.task, acfg.preset, sets)
    path = os.path.join(acfg.run, "config.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: not a run directory (no config.json); pass a directory made by `spotart train`")
    with open(path) as f:
        base = json.load(f)["train"]
    if base["task"] != acfg.task:
        raise ValueError(f"{acfg.run} is a {base['task']} run; the audit was asked for {acfg.task} "
                         f"(pass --task {base['task']})")
    return build_config(base=base, overrides=sets)


def split_of(acfg: AuditConfig, train: bool) -> tuple[str, int, int]:
    """(shards, shard_id, num_shards) of the training or held-out images."""
    if acfg.test_shards:
        return (acfg.shards, 0, 1) if train else (acfg.test_shards, 0, 1)
    return acfg.shards, 0 if train else 1, 2


def loader_for(acfg, cfg, rt, pipe: tuple, train: bool):
    from ...pipeline.loader import DaliLoader
    from ...trainer.data import pipeline_config

    changes, aberration = pipe
    shards, part, parts = split_of(acfg, train)
    if not os.path.isfile(os.path.join(shards, "manifest.json")):
        raise FileNotFoundError(f"{shards}: no manifest.json; build shards with `spotart build-shards SOURCE --out {shards}`")
    params = dataclasses.replace(cfg.pipeline, **dict(changes))
    pcfg = pipeline_config(cfg, rt, training=True, shards=shards, shard_id=part, num_shards=parts,
                           seed=acfg.seed + (0 if train else 7919), aberration=aberration or cfg.aberration,
                           params=params)
    loader = DaliLoader(pcfg, rt.device)
    if len(loader) == 0:
        raise ValueError(f"{shards}: too few images for one batch of {pcfg.batch_size} in each of {parts} part(s); "
                         f"lower --batch-size or pass --test-shards")
    return loader


def collect(acfg, cfg, rt, pipe, train, needs, gen) -> dict:
    """{(cue, view): {name: tensor}} over `images` (or `test_images`) samples of one variant."""
    from ...trainer.data import endless

    want = acfg.images if train else acfg.test_images
    loader = loader_for(acfg, cfg, rt, pipe, train)
    parts, got = defaultdict(lambda: defaultdict(list)), 0
    for batch in endless(loader):
        seen = gen.views(batch) if gen is not None else batch
        for cue, view in needs:
            for name, t in features(acfg.task, cue, seen, Variant(view=view), acfg.strip).items():
                parts[(cue, view)][name].append(t)
        got += next(iter(batch.values())).shape[0]
        if got >= want:
            break
    del loader
    return {key: {n: torch.cat(ts)[: want * (2 if acfg.task in GENERATOR_TASKS else 1)] for n, ts in d.items()}
            for key, d in parts.items()}


def score_jigsaw(train: dict, test: dict, perms, hidden: int, seed: int) -> dict:
    cells = CH.tile_cells(train["y"], perms)
    n = test["y"].shape[0]
    unary = CH.fit(CH.clean(train["unary"].flatten(0, 1)), cells.flatten(), 9, hidden, seed)
    logp = unary.predict_logp(CH.clean(test["unary"].flatten(0, 1))).view(n, 9, 9)
    pair = None
    if "pair" in train:
        off = ~torch.eye(9, dtype=torch.bool)
        adj = CH.adjacency_labels(cells)
        pair = torch.zeros(n, 9, 9, 2)
        for rel in range(2):
            x, y = CH.subsample_negatives(train["pair"][:, :, :, rel][:, off], adj[..., rel][:, off], seed)
            m = CH.fit(CH.clean(x), y, 2, hidden, seed)
            lp = m.predict_logp(CH.clean(test["pair"][:, :, :, rel][:, off]).flatten(0, 1)).view(n, 72, 2)
            pair[:, off, rel] = lp[..., 1] - lp[..., 0]
    tile, whole = CH.jigsaw_scores(CH.decode(perms, logp, pair), test["y"], perms)
    return {"accuracy": tile, "permutation_accuracy": whole}


def score(task: str, train: dict, test: dict, perms, hidden: int, seed: int) -> dict:
    if task == "jigsaw":
        return score_jigsaw(train, test, perms, hidden, seed)
    cheater = CH.fit(CH.clean(train["x"]), train["y"], CLASSES[task], hidden, seed)
    return {"accuracy": cheater.accuracy(CH.clean(test["x"]), test["y"])}


def network_accuracy(acfg: AuditConfig) -> dict | None:
    """The run's own pretext accuracy on the held-out images (trainer/eval_pretext.py)."""
    if not acfg.run:
        return None
    from ...trainer.eval_pretext import evaluate_pretext

    shards = acfg.test_shards or acfg.shards
    r = evaluate_pretext(acfg.run, shards, batch_size=acfg.batch_size, device=acfg.device,
                         num_threads=acfg.num_threads, seed=acfg.seed,
                         max_batches=max(1, math.ceil(acfg.test_images / acfg.batch_size)))
    m = r["metrics"]
    if "acc" in m:
        metric, acc = "acc", m["acc"]
    else:  # discriminator: real and generated images, half each
        metric, acc = "(acc_real + acc_fake) / 2", (m["acc_real"] + m["acc_fake"]) / 2
    return {"metric": metric, "accuracy": acc, "step": r["step"], "phase": r["phase"], "images": r["images"],
            "metrics": m}


def _variant_dict(v: Variant) -> dict:
    return {"changes": dict(v.changes), "aberration": v.aberration, "view": v.view}


def chance_of(task: str, perms) -> float:
    if task == "jigsaw":
        return CH.jigsaw_chance(perms)
    return 1.0 / CLASSES[task]


def audit(acfg: AuditConfig) -> dict:
    """Run every probe of the task; -> the report dict (see report.py for its fields)."""
    from ...trainer.runtime import resolve_runtime

    t0 = time.perf_counter()
    cfg = train_config(acfg)
    rt = resolve_runtime(cfg)
    torch.manual_seed(acfg.seed)
    gen = None
    if acfg.task in GENERATOR_TASKS:
        from .generators import load_generator

        _, gen = load_generator(acfg.run, acfg.task, rt.device, rt.autocast)
    perms = cfg.pipeline.load_set() if acfg.task == "jigsaw" else None
    plan = probes(acfg.task, cfg.pipeline, acfg.aberration, acfg.cues, acfg.countermeasures)

    needs = defaultdict(set)  # pipeline variant -> {(cue, view)}
    for p in plan:
        for v in (p.on, p.off):
            needs[v.pipeline].add((p.cue, v.view))
    feats = {}
    for pipe, want in needs.items():
        want = sorted(want)
        log.info("audit %s: pipeline %s, cues %s", acfg.task, pipe, want)
        train = collect(acfg, cfg, rt, pipe, True, want, gen)
        test = collect(acfg, cfg, rt, pipe, False, want, gen)
        for key in want:
            feats[(pipe, *key)] = (train[key], test[key])

    scores = {}
    rows = []
    for p in plan:
        row = {"cue": p.cue, "cue_name": CUES[p.cue], "sees": WHAT[p.cue], "countermeasure": p.countermeasure,
               "planted": p.planted, "default": p.default, "with": _variant_dict(p.on),
               "without": _variant_dict(p.off)}
        for side, v in (("with", p.on), ("without", p.off)):
            key = (v.pipeline, p.cue, v.view)
            if key not in scores:
                scores[key] = score(acfg.task, *feats[key], perms, acfg.hidden, acfg.seed)
            for name, value in scores[key].items():
                row[f"{name}_{side}"] = value
        rows.append(row)

    chance = chance_of(acfg.task, perms)
    report = {"task": acfg.task, "chance": chance, "chance_label": CHANCE_LABEL[acfg.task], "cues": rows,
              "network": network_accuracy(acfg), "config": acfg.to_dict(), "pipeline": dataclasses.asdict(cfg.pipeline),
              "image_size": cfg.image_size, "preset": cfg.preset, "seconds": 0.0}
    if perms is not None:
        report["permutation_chance"] = 1.0 / len(perms)
    report.update(verdict(report, acfg.fail_above))
    report["seconds"] = time.perf_counter() - t0
    return report


def verdict(report: dict, fail_above: float | None) -> dict:
    """Default-countermeasure probes on the data (not planted) whose cheater beats chance by more
    than `fail_above` points."""
    if fail_above is None:
        return {"fail_above": None, "failures": [], "passed": True}
    bad = [f"{r['cue']} / {r['countermeasure']}: {100 * r['accuracy_with']:.1f}% vs chance {100 * report['chance']:.1f}%"
           for r in report["cues"]
           if r["default"] and not r["planted"] and 100 * (r["accuracy_with"] - report["chance"]) > fail_above]
    return {"fail_above": fail_above, "failures": bad, "passed": not bad}

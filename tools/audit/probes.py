"""What the audit measures for each task: its probes (one cue against one countermeasure) and
how a batch of that task becomes one cue's features and labels.

A probe trains the cue's cheater twice: on the pipeline with the countermeasure on (`on`:
parameter changes from the task's defaults, usually none) and with it off (`off`). `planted`
probes add synthetic chromatic aberration of strength `aberration` to both (pipeline/
aberration.py): they show that the cheater catches the cue and that the countermeasure removes
it, and say nothing about the user's data (--fail-above ignores them). A countermeasure that is
off for the task (context's projection at the paper's defaults, colour dropping at `small`) is
measured on its own: the other one off in both.

Labels: context the neighbour's position (8-way); jigsaw the permutation, scored per tile (the
cell each tile came from, 9-way; cheaters.py); artifacts and inpainting real vs generated (the
discriminator's label) on the images of the run's own generator (generators.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from . import cues as C

CUES = {
    "edges": "edge continuity, boundary pattern",
    "chroma": "chromatic aberration",
    "stats": "intensity and colour statistics",
    "lowfreq": "position from low-frequency content",
    "frequency": "colour and frequency statistics",
    "band": "band around the damage or hole",
}
WHAT = {  # what the cheater sees, for the report
    "edges": "the k px border strips of the two patches / of each tile",
    "chroma": "per-channel spatial offsets (cross-correlation peak, gradient estimate) between colour channels",
    "stats": "per-patch / per-tile mean, std, quantiles and colour histogram",
    "lowfreq": "each patch / tile blurred down to 3x3 per channel",
    "frequency": "per-image colour statistics and high-frequency energy at two scales",
    "band": "the k px on both sides of the damage / hole boundary: jumps across it, energy beside it",
}


@dataclass(frozen=True)
class Variant:
    changes: tuple = ()     # sorted (key, value) pairs of the task's pipeline parameters
    aberration: float = 0.0
    view: str = ""          # generator tasks: which real/generated pair the cheater judges

    @classmethod
    def of(cls, aberration: float = 0.0, view: str = "", **changes) -> "Variant":
        return cls(tuple(sorted(changes.items())), aberration, view)

    @property
    def pipeline(self) -> tuple:
        """The part that needs its own pipeline run."""
        return self.changes, self.aberration


@dataclass(frozen=True)
class Probe:
    cue: str
    countermeasure: str
    on: Variant
    off: Variant
    planted: bool = False
    default: bool = True    # `on` is the task's default pipeline (what --fail-above checks)
    note: str = field(default="", compare=False)


def _context(a: float, params) -> list[Probe]:
    """Colour dropping and projection (the paper's two countermeasures against chromatic
    aberration) are each measured alone: `on` is that one on and the other off, `off` both off,
    as changes from the task's own parameters (`small` and `64px` use projection, the paper's
    default is colour dropping). The one the task uses is the default probe and also faces the
    colour statistics and low-frequency cheaters."""
    V = Variant.of
    out = [Probe("edges", "gap", V(), V(gap=0)),
           Probe("edges", "jitter", V(), V(jitter=0)),
           Probe("edges", "pixelation", V(), V(pixelate_prob=0.0))]
    planted = []
    keys = ("color_drop", "projection")
    for name, key in (("colour dropping", "color_drop"), ("projection", "projection")):
        alone = {k: k == key for k in keys}
        on = {k: v for k, v in alone.items() if getattr(params, k) != v}
        off = {k: False for k in keys if getattr(params, k)}
        default = not on
        for cue in ("stats", "lowfreq", "chroma") if default else ("chroma",):
            out.append(Probe(cue, name, V(**on), V(**off), default=default))
        if a:
            planted.append(Probe("chroma", name, V(a, **on), V(a, **off), planted=True, default=default))
    return out + planted


def _jigsaw(a: float, params) -> list[Probe]:
    V = Variant.of
    out = [Probe("edges", "gap", V(), V(tile=params.cell)),
           Probe("edges", "random gap", V(), V(random_gap=False)),
           Probe("stats", "per-tile normalisation", V(), V(tile_norm=False)),
           Probe("stats", "greyscale", V(), V(grey_prob=0.0)),
           Probe("lowfreq", "per-tile normalisation", V(), V(tile_norm=False)),
           Probe("chroma", "channel jitter", V(), V(channel_jitter=0)),
           Probe("chroma", "greyscale", V(), V(grey_prob=0.0))]
    if a:
        out += [Probe("chroma", "channel jitter", V(a), V(a, channel_jitter=0), planted=True),
                Probe("chroma", "greyscale", V(a), V(a, grey_prob=0.0), planted=True),
                Probe("chroma", "channel jitter + greyscale", V(a), V(a, channel_jitter=0, grey_prob=0.0),
                      planted=True)]
    return out


def _artifacts(a: float, params) -> list[Probe]:
    V = Variant.of
    return [Probe("frequency", "real path through the autoencoder", V(view="ae"), V(view="raw")),
            Probe("band", "damage in feature space", V(view="decoded"), V(view="pasted"))]


def _inpainting(a: float, params) -> list[Probe]:
    V = Variant.of
    return [Probe("band", "overlap band", V(view="overlap"), V(view="hole"))]


PROBES = {"context": _context, "jigsaw": _jigsaw, "artifacts": _artifacts, "inpainting": _inpainting}
CHANCE_LABEL = {"context": "neighbour position, 8-way", "jigsaw": "cell of each tile, 9-way (decoded over the permutation set)",
                "artifacts": "real vs generated", "inpainting": "real vs completed"}


def probes(task: str, params, aberration: float = 0.0, only: tuple = (), countermeasures: tuple = ()) -> list[Probe]:
    """The task's probes; `params` its pipeline parameters (the defaults the probes switch from);
    `only` / `countermeasures` keep the probes of those cues / countermeasures."""
    if task not in PROBES:
        raise ValueError(f"the audit covers {sorted(PROBES)}, not {task!r}")
    out = PROBES[task](aberration, params)
    for want, attr, what in ((only, "cue", "cue"), (countermeasures, "countermeasure", "countermeasure")):
        if not want:
            continue
        have = sorted({getattr(p, attr) for p in out})
        unknown = sorted(set(want) - set(have))
        if unknown:
            raise ValueError(f"{task} has no {what}(s) {unknown}; its {what}s: {have}")
        out = [p for p in out if getattr(p, attr) in want]
    if not out:
        raise ValueError(f"no {task} probe has both the cue(s) {list(only)} and the countermeasure(s) {list(countermeasures)}")
    return out


# ---- features of one batch ----------------------------------------------------------------

def context_features(cue: str, batch: dict, k: int) -> dict:
    p1, p2 = batch["patch1"], batch["patch2"]
    if cue == "edges":
        x = torch.cat([C.facing_edges(p1, p2, k), C.border_strips(p1, k), C.border_strips(p2, k)], 1)
    else:
        f = {"stats": C.colour_stats, "lowfreq": C.low_frequency, "chroma": C.channel_shifts}[cue]
        a, b = f(p1), f(p2)
        x = torch.cat([a, b, b - a], 1)
    return {"x": x, "y": batch["position"].cpu()}


def jigsaw_features(cue: str, batch: dict, k: int) -> dict:
    tiles = batch["tiles"]
    n, t = tiles.shape[:2]
    out = {"y": batch["permutation"].cpu()}
    flat = tiles.flatten(0, 1)
    if cue == "edges":
        out["pair"] = C.pair_edges(tiles, k)
        u = C.border_strips(flat, k)
    else:
        u = {"stats": C.colour_stats, "lowfreq": C.low_frequency, "chroma": C.channel_shifts}[cue](flat)
    u = u.view(n, t, -1)
    # each tile also against the puzzle's mean tile: the cue relative to the other eight
    out["unary"] = torch.cat([u, u - u.mean(1, keepdim=True)], 2)
    return out


def generated_features(cue: str, views: dict, view: str, k: int) -> dict:
    """Artifacts / inpainting: `views` from generators.py; real first, generated second."""
    real, fake, region = views["pairs"][view]
    x = torch.cat([real, fake])
    if cue == "frequency":
        f = C.frequency_stats(x)
    else:
        f = C.band_stats(x, torch.cat([region, region]), k)
    n = real.shape[0]
    return {"x": f, "y": torch.cat([torch.ones(n, dtype=torch.long), torch.zeros(n, dtype=torch.long)])}


def features(task: str, cue: str, batch: dict, variant: Variant, k: int) -> dict:
    if task == "context":
        return context_features(cue, batch, k)
    if task == "jigsaw":
        return jigsaw_features(cue, batch, k)
    return generated_features(cue, batch, variant.view, k)

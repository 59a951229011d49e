"""TrainConfig: presets, overrides, validation, config comparison for resume."""

import json

import pytest

from spotart.trainer.config import (PRESETS, RUNTIME_KEYS, TrainConfig, build_config, config_diff,
                                    config_for_run, parse_overrides, parse_value)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_builds_and_round_trips_through_json(preset):
    cfg = build_config("artifacts", preset)
    assert cfg.preset == preset and cfg.image_size == PRESETS[preset]["image_size"]
    d = json.loads(json.dumps(cfg.to_dict()))
    assert TrainConfig.from_dict(d) == cfg


def test_preset_geometry_mask_equals_conv5():
    from spotart.trainer.artifacts import mask_size

    for preset in PRESETS:
        cfg = build_config("artifacts", preset)
        assert cfg.image_size // cfg.trunk.downsampling == mask_size(cfg), preset


def test_overrides_parse_after_the_replaced_type():
    cfg = build_config("artifacts", "tiny", ["steps=50", "lr=1e-3", "progress=false", "theta=0.4",
                                             "params.mask_on_real=off", "trunk.channels=8,8,16,16,8",
                                             "betas=0.9,0.99", "shards=/x", "channels_last=auto"])
    assert cfg.steps == 50 and cfg.lr == 1e-3 and cfg.progress is False
    assert cfg.pipeline.theta == 0.4 and cfg.params.mask_on_real is False
    assert cfg.trunk.channels == (8, 8, 16, 16, 8) and cfg.betas == (0.9, 0.99)
    assert cfg.shards == "/x" and cfg.channels_last is None
    assert parse_value("true", None) is True and parse_value("3", None) == 3 and parse_value("a", None) == "a"


@pytest.mark.parametrize("item,match", [
    ("nope=1", "unknown config key 'nope'"),
    ("trunk.width=3", "unknown config key 'trunk.width'"),
    ("params.zzz=3", "unknown config key 'params.zzz'"),
    ("pipeline.zzz=3", "unknown config key 'pipeline.zzz'"),
    ("params.theta=0.5", "unknown config key 'params.theta'"),  # a data parameter lives in the pipeline
    ("steps", "not KEY=VALUE"),
    ("steps=0", "steps must be an integer >= 1"),
    ("theta=1.5", "theta"),
    ("precision=fp8", "precision"),
    ("ae_fraction=1.0", "ae_fraction"),
    ("image_size=36", "divisible"),
    ("trunk=tiny", "cannot be overridden"),
    ("pipeline=x", "cannot be overridden"),
    ("trunk.conv1_stride=1", "conv5 is 8x8 at 32 px but the mask Omega is 4x4"),
    ("pipeline.mask_size=8", "not the encoder's output side 4"),
    ("progress=maybe", "true/false"),
])
def test_bad_overrides_are_rejected_with_the_key_named(item, match):
    with pytest.raises(ValueError, match=match):
        build_config("artifacts", "tiny", [item])


def test_unknown_preset_and_task():
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        build_config("artifacts", "huge")
    with pytest.raises(ValueError, match="unknown task 'colorize'"):
        build_config("colorize", "tiny")
    with pytest.raises(ValueError, match="unknown train config key"):
        TrainConfig.from_dict({"bogus": 1})


def test_config_diff_ignores_runtime_keys_only():
    a = build_config("artifacts", "tiny").to_dict()
    b = build_config("artifacts", "tiny", ["log_every=3", "compile=true", "stop_after=5"]).to_dict()
    assert config_diff(a, b) == []
    c = build_config("artifacts", "tiny", ["theta=0.3", "batch_size=4"]).to_dict()
    assert config_diff(a, c) == ["batch_size", "pipeline.theta"]
    assert {"log_every", "stop_after"} <= RUNTIME_KEYS and "steps" not in RUNTIME_KEYS


def test_config_for_run_reuses_the_saved_config_on_resume(tmp_path):
    cfg = build_config("artifacts", "tiny", ["steps=77"])
    (tmp_path / "config.json").write_text(json.dumps({"train": cfg.to_dict()}))
    again = config_for_run(str(tmp_path), resume=True, overrides=["log_every=2"])
    assert again.steps == 77 and again.log_every == 2
    fresh = config_for_run(str(tmp_path), preset="tiny", resume=True)
    assert fresh.steps == PRESETS["tiny"]["steps"]
    assert parse_overrides(["a=b=c"]) == {"a": "b=c"}


def test_every_data_parameter_has_one_definition_and_is_forwarded_whole():
    """The trainer defines no data parameter of its own: each task's params and its pipeline's
    params share no name, and the pipeline a run builds holds exactly the config's pipeline
    parameters, so what config.json shows is what shaped the data."""
    import dataclasses

    from spotart.pipeline.config import task_params_class
    from spotart.trainer.data import pipeline_config
    from spotart.trainer.runtime import resolve_runtime
    from spotart.trainer.tasks import get_task, task_names

    for name in task_names():
        task = get_task(name)
        model = {f.name for f in dataclasses.fields(task.params_class)}
        data = {f.name for f in dataclasses.fields(task_params_class(task.pipeline_task))}
        assert not model & data, (name, model & data)
        cfg = build_config(name, "tiny", ["device=cpu", "seed=5", "min_area=0.5", "flip=false"])
        pcfg = pipeline_config(cfg, resolve_runtime(cfg))
        assert pcfg.params == cfg.pipeline and pcfg.task == task.pipeline_task
        assert (pcfg.seed, pcfg.min_area, pcfg.flip, pcfg.image_size) == (5, 0.5, False, cfg.image_size)
        assert cfg.to_dict()["pipeline"] == json.loads(json.dumps(dataclasses.asdict(pcfg.params)))


def test_artifacts_data_defaults_are_the_released_codes_and_resolved():
    cfg = build_config("artifacts", "tiny")
    assert cfg.pipeline.theta == 0.6  # June 2018 release: keep probability 0.4
    assert cfg.pipeline.mask_size == 4 == cfg.trunk.side(cfg.image_size, 5)  # resolved, equal to conv5
    assert cfg.to_dict()["pipeline"]["mask_size"] == 4
    assert build_config("artifacts", "tiny", ["theta=0.7"]).pipeline.theta == 0.7


@pytest.mark.parametrize("task", ["artifacts", "context", "jigsaw", "inpainting", "supervised"])
def test_small_preset_builds_for_every_task_with_its_own_steps_and_input_size(task):
    cfg = build_config(task, "small")
    per_task = PRESETS["small"]["tasks"][task]
    assert cfg.steps == per_task["steps"]
    assert cfg.image_size == per_task.get("image_size", PRESETS["small"]["image_size"])
    assert cfg.trunk.channels == (48, 96, 144, 144, 96) and cfg.trunk.downsampling == 16
    # an override still wins over the per-task value
    assert build_config(task, "small", ["steps=7"]).steps == 7

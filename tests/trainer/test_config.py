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
    assert cfg.params.theta == 0.4 and cfg.params.mask_on_real is False
    assert cfg.trunk.channels == (8, 8, 16, 16, 8) and cfg.betas == (0.9, 0.99)
    assert cfg.shards == "/x" and cfg.channels_last is None
    assert parse_value("true", None) is True and parse_value("3", None) == 3 and parse_value("a", None) == "a"


@pytest.mark.parametrize("item,match", [
    ("nope=1", "unknown config key 'nope'"),
    ("trunk.width=3", "unknown config key 'trunk.width'"),
    ("params.zzz=3", "unknown config key 'params.zzz'"),
    ("steps", "not KEY=VALUE"),
    ("steps=0", "steps must be an integer >= 1"),
    ("theta=1.5", "theta"),
    ("precision=fp8", "precision"),
    ("ae_fraction=1.0", "ae_fraction"),
    ("image_size=36", "divisible"),
    ("trunk=tiny", "cannot be overridden"),
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
    assert config_diff(a, c) == ["batch_size", "params.theta"]
    assert {"log_every", "stop_after"} <= RUNTIME_KEYS and "steps" not in RUNTIME_KEYS


def test_config_for_run_reuses_the_saved_config_on_resume(tmp_path):
    cfg = build_config("artifacts", "tiny", ["steps=77"])
    (tmp_path / "config.json").write_text(json.dumps({"train": cfg.to_dict()}))
    again = config_for_run(str(tmp_path), resume=True, overrides=["log_every=2"])
    assert again.steps == 77 and again.log_every == 2
    fresh = config_for_run(str(tmp_path), preset="tiny", resume=True)
    assert fresh.steps == PRESETS["tiny"]["steps"]
    assert parse_overrides(["a=b=c"]) == {"a": "b=c"}

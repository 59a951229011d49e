"""tools/bench/inpainting_step.py runs both decoders on a preset and reports their ratio."""

import importlib.util
import json
import os

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "..", "..", "tools", "bench", "inpainting_step.py")


def load():
    spec = importlib.util.spec_from_file_location("inpainting_step", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_reports_both_decoders_and_their_ratio(tmp_path):
    out = tmp_path / "r.json"
    res = load().main(["--preset", "tiny", "--steps", "1", "--repeats", "1", "--warmup", "0", "--json", str(out)])
    assert res["image_size"] == 32 and res["batch"] == 16
    assert res["ms_whole_image"] > 0 and res["ms_centre_square"] > 0
    assert res["speedup"] == pytest.approx(res["ms_whole_image"] / res["ms_centre_square"], rel=0.05)
    assert json.loads(out.read_text()) == res

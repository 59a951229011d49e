"""JSON schema of report.json (a Python dict, so it ships with the package without package
data). `validate(report)` checks a report with jsonschema when it is installed (the `test`
extra); `spotart profile` validates every report it writes and `--compare` every one it reads."""

from __future__ import annotations

_num = {"type": "number"}
_pos = {"type": "number", "exclusiveMinimum": 0}
_nonneg = {"type": "number", "minimum": 0}
_frac = {"type": "number", "minimum": 0, "maximum": 1}

_cpu = {"type": "object", "additionalProperties": {
    "type": "object", "required": ["cores", "threads"],
    "properties": {"cores": _nonneg, "threads": {"type": "integer", "minimum": 1}}}}

_gpu = {"oneOf": [{"type": "null"}, {"type": "object", "required": ["util_pct_mean", "mem_gib_max", "samples"],
                                      "properties": {"util_pct_mean": {"type": "number", "minimum": 0, "maximum": 100},
                                                     "mem_gib_max": _nonneg,
                                                     "samples": {"type": "integer", "minimum": 1}}}]}

_timed = {"batches": {"type": "integer", "minimum": 1}, "seconds": _pos, "images_per_s": _pos, "ms_per_batch": _pos}

_run = {"type": "object", "required": [*_timed, "median_ms_per_batch", "cpu", "pipeline_cores", "gpu"],
        "properties": {**_timed, "cpu": _cpu, "pipeline_cores": _nonneg, "gpu": _gpu, "data_wait_frac": _frac,
                       "torch_peak_mem_gib": _nonneg, "median_ms_per_batch": _pos,
                       "rounds": {"type": "integer", "minimum": 1}}}

_stage = {"type": "object", "required": [*_timed, "own_ms_per_batch", "cpu"],
          "properties": {**_timed, "own_ms_per_batch": _num, "cpu": _cpu}}

SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "spotart profile report",
    "type": "object",
    "required": ["schema", "created", "machine", "versions", "config", "method", "stages", "pipeline_stages",
                 "data_wait_frac", "consistency", "timeline", "utilisation", "kernels", "bottleneck", "files"],
    "properties": {
        "schema": {"const": "spotart.profile/1"},
        "created": {"type": "string"},
        "machine": {"type": "object", "required": ["platform", "cpu_model", "cpu_count", "device", "gpu"],
                    "properties": {"cpu_count": {"type": "integer", "minimum": 1},
                                   "gpu": {"oneOf": [{"type": "null"}, {"type": "object", "required": ["name"]}]}}},
        "versions": {"type": "object", "required": ["python", "torch", "dali", "spotart"],
                     "additionalProperties": {"type": "string"}},
        "config": {"type": "object", "required": ["profile", "train", "pipeline", "runtime"]},
        "method": {"type": "object", "required": ["pipeline_stages", "data_wait", "rounds", "cpu", "gpu", "kernels"],
                   "additionalProperties": {"type": "string"}},
        "stages": {"type": "object", "required": ["pipeline", "train", "end_to_end"],
                   "additionalProperties": False,
                   "properties": {"pipeline": _run, "train": _run,
                                  "end_to_end": {**_run, "required": [*_run["required"], "data_wait_frac"]}}},
        "pipeline_stages": {"type": "object", "required": ["read", "decode", "augment", "generate"],
                            "additionalProperties": _stage},
        "data_wait_frac": _frac,
        "consistency": {"type": "object", "required": ["end_to_end_over_slowest_alone",
                                                       "median_end_to_end_over_slowest_alone"],
                        "properties": {"end_to_end_over_slowest_alone": _pos,
                                       "median_end_to_end_over_slowest_alone": _pos}},
        "timeline": {"type": "object", "required": ["wait_ms", "compute_ms"],
                     "properties": {"wait_ms": {"type": "array", "items": _nonneg, "minItems": 1},
                                    "compute_ms": {"type": "array", "items": _nonneg, "minItems": 1}}},
        "utilisation": {"type": "object", "required": ["cpu", "gpu", "marks"], "properties": {
            "cpu": {"type": "array", "items": {"type": "object", "required": ["t", "process_cores", "pipeline_cores"]}},
            "gpu": {"type": "array", "items": {"type": "object", "required": ["t", "util_pct", "mem_gib"]}},
            "marks": {"type": "array", "minItems": 7, "items": {
                "type": "object", "required": ["stage", "start", "end"],
                "properties": {"stage": {"type": "string"}, "start": _nonneg, "end": _nonneg}}}}},
        "kernels": {"type": "object", "required": ["device", "time", "steps", "total_ms_per_step", "kernels"],
                    "properties": {"steps": {"type": "integer", "minimum": 1}, "total_ms_per_step": _pos,
                                   "kernels": {"type": "array", "minItems": 1, "items": {
                                       "type": "object", "required": ["name", "calls", "self_ms", "share"],
                                       "properties": {"name": {"type": "string"},
                                                      "calls": {"type": "integer", "minimum": 1},
                                                      "self_ms": _pos, "share": _frac}}}}},
        "bottleneck": {"type": "object", "required": ["kind", "stage", "knob", "sentence"], "properties": {
            "kind": {"enum": ["data", "interference", "compute"]},
            "knob": {"enum": ["threads", "hardware decoder load", "prefetch depth", "batch size", "compile"]},
            "sentence": {"type": "string", "minLength": 20}}},
        "files": {"type": "array", "items": {"type": "string"}},
    },
}


def validate(report: dict) -> bool:
    """Raise jsonschema.ValidationError when `report` breaks the schema; False when jsonschema is
    not installed (nothing checked), True otherwise."""
    try:
        import jsonschema
    except ImportError:
        return False
    jsonschema.validate(report, SCHEMA)
    return True

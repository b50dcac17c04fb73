"""Suite expansion: the trial list each ablation file yields per scale, and its order."""

from pathlib import Path

import pytest

from ld.config import ConfigError
from ld.suite import load_suite

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name,scale,points,seeds", [
    ("figure5", "small", 13, 3),   # default + L{1,2,4} + H{12,48} + beta{0,0.03,0.1,0.3,100} + K{10,50}
    ("figure5", "paper", 12, 5),
    ("figure3", "small", 24, 3),   # 4 datasets (2 per family) x 6 modeling selections
    ("figure3", "smoke", 12, 1),
])
def test_ablation_suites_expand_to_the_documented_grid(name, scale, points, seeds):
    suite = load_suite(ROOT / "ablations" / f"{name}.yaml")
    trials = suite.trials(scale)
    assert len(trials) == points * seeds
    assert len({repr(sorted(t.config.flat().items())) for t in trials}) == len(trials)


def test_trials_are_seed_major_so_a_partial_sweep_holds_whole_seeds():
    suite = load_suite(ROOT / "ablations" / "figure5.yaml")
    trials = suite.trials("small")
    seeds = [t.config.seed for t in trials]
    assert seeds == sorted(seeds)
    per_seed = len(trials) // 3
    first = [(t.axis, repr(t.value)) for t in trials[:per_seed]]
    second = [(t.axis, repr(t.value)) for t in trials[per_seed:2 * per_seed]]
    assert first == second


def test_figure5_one_at_a_time_points_vary_one_field_from_the_base():
    suite = load_suite(ROOT / "ablations" / "figure5.yaml")
    base = suite.base_values("small")
    for t in suite.trials("small"):
        if t.axis == "default":
            continue
        flat = t.config.flat()
        changed = [a for a in base if flat.get(a) != base[a]]
        assert changed == [t.axis], (t.axis, t.value, changed)


def test_an_unknown_scale_is_a_config_error():
    suite = load_suite(ROOT / "ablations" / "figure5.yaml")
    with pytest.raises(ConfigError):
        suite.trials("huge")


def _write(tmp_path, body) -> Path:
    import yaml

    p = tmp_path / "suite.yaml"
    p.write_text(yaml.safe_dump(body))
    return p


BASE = {"name": "t", "base": {"dataset": "x.hdf5"}}
SEARCH = {"metric": "normalized_score", "space": {"beta": {"uniform": [1.0, 2.0]}}}


@pytest.mark.parametrize("body,needle", [
    ({**BASE, "grids": {}}, "grids: unknown field; allowed here: name, description, base, scales, grid, search"),
    ({**BASE, "grid": {"mode": "zip"}}, "grid.mode: Input should be 'one_at_a_time' or 'product' (got 'zip')"),
    ({**BASE, "grid": {"axes": {"beta": []}}}, "grid.axes.beta: must be a non-empty list of values"),
    ({**BASE, "scales": {"huge": {}}}, "scales: unknown scale 'huge'; allowed: smoke, small, paper"),
    ({**BASE, "scales": {"small": {"seed": [0]}}},
     "scales.small.seed: unknown field; allowed here: preset, seeds, set, axes"),
    ({**BASE, "scales": {"small": [0]}}, "scales.small: must be a mapping of preset, seeds, set, axes"),
    ({**BASE, "scales": {"small": {"preset": "tiny"}}},
     "scales.small.preset: Input should be 'smoke', 'small' or 'paper'"),
    ({**BASE, "search": {**SEARCH, "scheduler": "asha"}}, "search.scheduler: removed."),
    ({**BASE, "search": {"space": SEARCH["space"]}}, "search.metric: required"),
    ({**BASE, "search": {"metric": "m"}}, "search.space: required"),
    ({**BASE, "search": {**SEARCH, "samplers": 3}},
     "search.samplers: unknown field; allowed here: metric, mode, samples, space, seed"),
    ({**BASE, "search": {**SEARCH, "mode": "maximize"}}, "search.mode: Input should be 'max' or 'min'"),
    ({**BASE, "search": {**SEARCH, "space": {"beta": {"normal": [1, 2]}}}},
     ("search.space.beta: expected one of {uniform, loguniform, choice, randint, quniform: ...}, "
      "got {'normal': [1, 2]}")),
    ({**BASE, "search": {**SEARCH, "space": {"beta": {"uniform": [2, 1]}}}},
     "search.space.beta: uniform: the lower bound"),
    # the ends of every range are built into the base config at load time: a typo or an out-of-range end
    ({**BASE, "search": {**SEARCH, "space": {"guidance_scal": {"uniform": [1, 2]}}}},
     "search.space.guidance_scal = 1.0: invalid config: guidance_scal: unknown field"),
    ({**BASE, "search": {**SEARCH, "space": {"temperature": {"uniform": [0.5, 1.5]}}}},
     "search.space.temperature = 1.5: invalid config: temperature: Input should be less than or equal to 1"),
])
def test_a_bad_suite_file_is_one_config_error_naming_the_field(tmp_path, body, needle):
    with pytest.raises(ConfigError) as e:
        load_suite(_write(tmp_path, body))
    msg = str(e.value)
    assert needle in msg and "\n" not in msg, msg
    if "invalid config" not in needle:  # the file's own fields: the message names the file
        assert msg.startswith(f"suite file {tmp_path / 'suite.yaml'}: ")


def test_suite_model_defaults_and_search(tmp_path):
    body = {**BASE, "scales": {"small": {"seeds": [0, 1], "set": None}, "paper": {"preset": None}},
            "search": {**SEARCH, "space": {"beta": {"loguniform": [0.3, 30]},
                                           "energy.loss": {"choice": ["mse", "emse"]}}}}
    suite = load_suite(_write(tmp_path, body))
    assert suite.name == "t" and suite.path == tmp_path / "suite.yaml"
    assert suite.base_layer("small") == ({"dataset": "x.hdf5"}, "small")  # a scale's preset defaults to its name
    assert suite.base_layer("smoke") == ({"dataset": "x.hdf5"}, "smoke")  # an unlisted scale: its preset, seed 0
    assert suite.base_layer("paper")[1] is None  # preset: null -> no preset
    assert suite.seeds("small") == [0, 1] and suite.seeds("smoke") == [0]
    s = suite.search
    assert (s.metric, s.mode, s.samples, s.seed) == ("normalized_score", "max", 8, 0)
    assert {k: (d.kind, d.args) for k, d in s.space.items()} == {"beta": ("loguniform", [0.3, 30.0]),
                                                               "energy.loss": ("choice", ["mse", "emse"])}
    # the model dumps as the file was written, and reloads to the same trials
    dumped = suite.model_dump(mode="json")
    assert dumped["search"]["space"]["beta"] == {"loguniform": [0.3, 30.0]} and "scheduler" not in dumped["search"]
    again = type(suite).model_validate(dumped)
    assert [t.config for t in again.trials("small")] == [t.config for t in suite.trials("small")]


def test_a_suite_without_name_takes_the_file_stem(tmp_path):
    p = tmp_path / "my_suite.yaml"
    p.write_text("base: {dataset: x.hdf5}\ngrid: {mode: product, axes: {beta: [1.0, 3.0]}}\n")
    suite = load_suite(p)
    assert suite.name == "my_suite" and [t.label for t in suite.trials("smoke")] == [
        "product=beta=1.0", "product=beta=3.0"]

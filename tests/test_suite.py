"""Suite expansion: the trial list each ablation file yields per scale, and its order."""

from pathlib import Path

import pytest

from ld.config import ConfigError
from ld.suite import load_suite

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name,scale,points,seeds", [
    ("figure5", "small", 12, 3),   # default + L{1,2,4} + H{12,48} + beta{0,1,10,100} + K{10,50}
    ("figure5", "paper", 12, 5),
    ("figure3", "small", 12, 3),   # 2 datasets x 6 modeling selections
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

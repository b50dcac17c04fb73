"""Config layering and validation: one clear message naming the field and what is allowed."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ld.config import Config, ConfigError, build, parse_overrides, preset, resolve


def test_presets_validate_and_differ():
    smoke, small, paper = (build(preset_name=p) for p in ("smoke", "small", "paper"))
    assert smoke.vae.steps < small.vae.steps < paper.vae.steps
    # the paper preset carries the paper's numbers (Appendix E.2)
    assert paper.diffusion_steps == 100 and paper.beta == 3 and paper.temperature == 0.5
    assert paper.prior.cond_dropout == 0.25 and paper.support_size == 16
    vae = paper.vae
    assert (vae.id_hidden, vae.id_layers, vae.value_hidden, vae.value_layers) == (512, 2, 1024, 3)
    assert (paper.energy.hidden, paper.energy.layers, paper.energy.lr, paper.energy.batch_size) == (256, 4, 3e-4, 256)
    assert paper.n_latents == 40


def test_overrides_are_typed():
    cfg = resolve(preset_name="smoke", sets=["beta=0", "energy.loss=emse", "vae.lr=1e-4", "sampler.steps=5"])
    assert cfg.beta == 0.0 and cfg.energy.loss == "emse" and cfg.vae.lr == 1e-4 and cfg.sampler.steps == 5
    assert parse_overrides(["prior.dim_mults=[1,2]"]) == {"prior": {"dim_mults": [1, 2]}}


def test_yaml_file_then_sets(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("preset: smoke\nbeta: 1.5\nenergy: {target: return}\n")
    cfg = resolve(f, None, ["beta=2"])
    assert cfg.beta == 2.0 and cfg.energy.target == "return" and cfg.vae.steps == build(preset_name="smoke").vae.steps


@pytest.mark.parametrize(
    "sets, needle",
    [
        (["sampler.name=euler"], "sampler.name: Input should be 'ddpm', 'ddim' or 'dpm_solver'"),
        (["modeling=pixels"], "modeling: Input should be 'latent', 'raw' or 'skill'"),
        (["energy.loss=hinge"], "energy.loss"),
        (["energy.target=value"], "energy.target"),
        (["horizon=13"], "horizon (13) must be a multiple of latent_step (3)"),
        (["beta=-1"], "beta: Input should be greater than or equal to 0"),
        (["vae.nlayers=3"], "vae.nlayers: unknown field; allowed here:"),
        (["seed=abc"], "seed"),
        (["sampler.steps=500"], "sampler.steps (500) cannot exceed diffusion_steps"),
        (["vae.n_heads=3"], "must divide vae.embed_dim"),
        (["return_bootstrap=td"], "return_bootstrap: Input should be 'none' or 'tail_mean'"),
        (["return_bootstrap=tail_mean", "gamma=1"], "return_bootstrap=tail_mean needs gamma < 1"),
    ],
)
def test_bad_values_name_the_field(sets, needle):
    with pytest.raises(ConfigError) as e:
        resolve(preset_name="smoke", sets=sets)
    assert needle in str(e.value)


def test_bad_files_and_presets(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        resolve(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("beta: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        resolve(bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        resolve(lst)
    with pytest.raises(ConfigError, match="allowed: smoke, small, paper"):
        preset("huge")
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["beta"])


def test_cli_bad_config_exits_2_and_writes_nothing(tmp_path):
    out = tmp_path / "out"
    p = subprocess.run([sys.executable, "-m", "ld.cli", "run", "--preset", "smoke", "--set", "modeling=pixels",
                        "--out", str(out)], capture_output=True, text=True)
    assert p.returncode == 2
    assert "modeling" in p.stderr and "'latent', 'raw' or 'skill'" in p.stderr
    assert p.stderr.count("\n") == 1  # one message, no traceback
    assert not out.exists()


def test_flat_names_match_sweep_axes():
    flat = Config().flat()
    for axis in ("latent_step", "horizon", "diffusion_steps", "beta", "guidance_scale", "temperature",
                 "support_size", "modeling", "energy.target", "energy.loss", "sampler.name", "sampler.steps",
                 "seed", "dataset"):
        assert axis in flat


def test_a_preset_layer_per_task_family(monkeypatch):
    """A preset's `families:` layer applies to the datasets of that family, under whatever the user sets."""
    import ld.config as C

    real = C.preset
    monkeypatch.setattr(C, "preset", lambda name: {**real(name), "families": {"maze": {"prior": {"steps": 7}}}})
    maze = build({"dataset": "builtin:pointmaze-umaze"}, "small")
    hop = build({"dataset": "builtin:hopper-medium-expert"}, "small")
    assert maze.prior.steps == 7 and hop.prior.steps == real("small")["prior"]["steps"]
    assert build(None, "small").prior.steps == 7  # the default dataset is the maze
    assert build({"dataset": "minari:D4RL/pointmaze/medium-v2"}, "small").prior.steps == 7
    assert build({"dataset": "builtin:pointmaze-umaze", "prior": {"steps": 9}}, "small").prior.steps == 9
    assert resolve(preset_name="small", sets=["dataset=builtin:pointmaze-umaze", "prior.steps=11"]).prior.steps == 11
    assert maze.prior.dim == hop.prior.dim  # the family layer is merged, not a replacement of the section

"""Stages as plain functions (no Ray): each loss falls on tiny data, artifacts are complete and
self-describing, and a seed reproduces the same weights on CPU."""

from __future__ import annotations

import pytest
import torch

from ld.config import build
from ld.data import load_dataset
from ld.data.builtin import make
from ld.pipeline import train_stages
from ld.stages.artifact import ArtifactStore


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.set_num_threads(1)
    path = make("pointmaze-umaze", tmp_path_factory.mktemp("d") / "u.hdf5", episodes=4, progress=False)
    return load_dataset(str(path))


def _cfg(tiny, **over):
    layer = {"dataset": "unused", "vae": {"steps": 200}, "prior": {"steps": 200}, "energy": {"steps": 200}}
    for k, v in over.items():
        layer[k] = v
    return build(layer, "smoke")


@pytest.mark.parametrize("modeling", ["latent", "raw"])
def test_each_stage_learns_and_records_its_manifest(tiny, tmp_path, modeling):
    cfg = _cfg(tiny, modeling=modeling)
    arts, records = train_stages(cfg, tiny, ArtifactStore(tmp_path), torch.device("cpu"), progress=False)
    prefix = "raw_" if modeling == "raw" else ""
    first = "raw_dynamics" if modeling == "raw" else "vae"
    assert [r.stage for r in records] == [first, f"{prefix}prior", f"{prefix}support", f"{prefix}energy", "bc"]
    for stage in (first, f"{prefix}prior", f"{prefix}energy", "bc"):
        m = arts[stage].manifest
        assert m["metrics"]["final_loss"] < m["metrics"]["first_loss"], (stage, m["metrics"])
        assert m["dataset"]["fingerprint"] == tiny.fingerprint and m["seed"] == cfg.seed
        assert m["package_version"] and m["wall_time_s"] >= 0 and m["config"]
    assert arts[f"{prefix}prior"].manifest["upstream"] == {first: arts[first].key}
    support = arts[f"{prefix}support"].load("support")
    assert support["x"].shape[1] == cfg.support_size
    # the energy stage records how peaked its contrastive target is (ESS as a fraction of M)
    em = arts[f"{prefix}energy"].manifest["metrics"]
    assert 1.0 / cfg.support_size <= em["target_ess_p10"] <= em["target_ess_mean"] <= 1.0
    assert em["nonfinite_step"] is None
    # BC reads only its own fields, not the VAE's
    assert set(arts["bc"].manifest["config"]) == {f"bc.{k}" for k in ("hidden", "layers", "lr", "batch_size", "steps")}
    # weights load back with weights_only=True (Artifact.load) as plain tensors
    assert all(isinstance(v, torch.Tensor) for v in arts[first].load("model").values())


def test_same_seed_same_weights_other_seed_differs(tiny, tmp_path):
    cfg = _cfg(tiny, vae={"steps": 30}, prior={"steps": 30}, beta=0.0)
    a, _ = train_stages(cfg, tiny, ArtifactStore(tmp_path / "a"), torch.device("cpu"), progress=False)
    b, _ = train_stages(cfg, tiny, ArtifactStore(tmp_path / "b"), torch.device("cpu"), progress=False)
    wa, wb = a["prior"].load("model"), b["prior"].load("model")
    assert a["prior"].key == b["prior"].key
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    c, _ = train_stages(cfg.model_copy(update={"seed": 1}), tiny, ArtifactStore(tmp_path / "c"),
                        torch.device("cpu"), progress=False)
    wc = c["prior"].load("model")
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)


def test_prior_targets_are_encoded_with_the_training_mask(tiny):
    # time-limit padding (mask 0) is zeroed at the encoder input in training; the prior's targets must be too
    from ld.config import build as build_cfg
    from ld.models.vae import TrajectoryVAE
    from ld.stages.codec import LatentCodec
    from ld.stages.common import StageInputs
    from ld.stages.data import training_data

    cfg = build_cfg({"dataset": "unused"}, "smoke")
    data = training_data(cfg, StageInputs(dataset=tiny, store=None))
    padded = [i for i in range(data.n) if data.batch([i])["mask"].min() == 0]
    assert padded, "the tiny maze data has windows running past a time limit"
    batch = data.batch(padded[:8])
    torch.manual_seed(0)
    vae = TrajectoryVAE(data.obs_dim, data.act_dim, cfg.horizon, cfg.latent_step, cfg.vae).eval()
    want, _ = vae.encode(batch["states"], batch["actions"], batch["rewards"], batch["returns"], mask=batch["mask"])
    unmasked, _ = vae.encode(batch["states"], batch["actions"], batch["rewards"], batch["returns"])
    got = LatentCodec(vae).encode(batch)
    assert torch.allclose(got, want)
    assert not torch.allclose(got, unmasked)


def test_emse_instability_is_recorded_not_fatal(tiny, tmp_path):
    # the paper's E-MSE with a large beta overflows exp(-beta E): training stops at that step with the last
    # finite weights, the manifest and the trial's rows say where, and the trial still evaluates
    from ld.pipeline import evaluate_trial

    cfg = _cfg(tiny, beta=500.0, energy={"loss": "emse", "steps": 50},
               eval={"episodes": 1, "max_steps": 8, "bc_baseline": False})
    arts, records = train_stages(cfg, tiny, ArtifactStore(tmp_path), torch.device("cpu"), progress=False)
    m = arts["energy"].manifest["metrics"]
    assert m["nonfinite_step"] is not None and m["nonfinite_step"] < 50
    weights = arts["energy"].load("model")
    assert all(bool(torch.isfinite(v).all()) for v in weights.values())
    df = evaluate_trial(cfg, tiny, arts, records, torch.device("cpu"), progress=False)
    assert (df["stage.energy.nonfinite_step"] == m["nonfinite_step"]).all()
    assert set(df["variant"]) == {"latentdiffuser", "prior"}


def test_bc_convergence_flag():
    from ld.stages.bc import converged

    # still falling 10% over the last 20% of training: not converged; flat: converged
    assert not converged([(100, 1.0), (800, 0.5), (1000, 0.45)])
    assert converged([(100, 1.0), (800, 0.30), (1000, 0.298)])
    assert not converged([(1000, 0.3)])


def test_baselines_are_evaluated_once_per_policy(tiny, tmp_path):
    # two trials that differ only in beta share codec, prior and BC: the second reads the first's prior and BC
    # episodes from the store (identical rows, marked cached) and evaluates only its own guided planner; a
    # field the prior's episodes depend on (the replanning interval) gives a new evaluation
    from ld.evaluation import reuse
    from ld.pipeline import run_trial

    ev = {"episodes": 2, "max_steps": 10}
    a = run_trial(_cfg(tiny, beta=3.0, eval=ev), tmp_path, dataset=tiny, progress=False).frame
    b = run_trial(_cfg(tiny, beta=10.0, eval=ev), tmp_path, dataset=tiny, progress=False).frame
    cols = ["episode", "env_seed", "episode_return", "normalized_score", "length", "energy", "eval_key"]
    for variant in reuse.REUSED_VARIANTS:
        ra, rb = a[a.variant == variant], b[b.variant == variant]
        assert not ra["eval_cached"].any() and rb["eval_cached"].all(), variant
        assert (ra["eval_key"].str.len() == 16).all()
        assert ra[cols].reset_index(drop=True).equals(rb[cols].reset_index(drop=True)), variant
    assert not b.loc[b.variant == "latentdiffuser", "eval_cached"].any()
    assert (b.loc[b.variant == "latentdiffuser", "eval_key"] == "").all()
    prior_b = b[b.variant == "prior"]
    assert (prior_b["beta"] == 0.0).all() and (prior_b["trial_id"] != a["trial_id"].iloc[0]).all()
    assert len(list((tmp_path / reuse.STAGE).glob("*/manifest.json"))) == 2

    c = run_trial(_cfg(tiny, beta=3.0, eval={**ev, "replan_every": 2}), tmp_path, dataset=tiny, progress=False).frame
    assert not c.loc[c.variant == "prior", "eval_cached"].any()
    assert c.loc[c.variant == "bc", "eval_cached"].all()  # BC does not replan
    assert len(list((tmp_path / reuse.STAGE).glob("*/manifest.json"))) == 3


def test_baseline_reuse_can_be_turned_off(tiny, tmp_path, monkeypatch):
    from ld.pipeline import run_trial

    monkeypatch.setenv("LD_REUSE_EVAL", "0")
    ev = {"episodes": 1, "max_steps": 6}
    run_trial(_cfg(tiny, eval=ev), tmp_path, dataset=tiny, progress=False)
    df = run_trial(_cfg(tiny, beta=10.0, eval=ev), tmp_path, dataset=tiny, progress=False).frame
    assert not df["eval_cached"].any() and not (tmp_path / "eval").exists()


def test_eval_key_covers_what_decides_the_episodes(tiny, tmp_path):
    from ld.evaluation import reuse

    cfg = _cfg(tiny)
    arts, _ = train_stages(cfg, tiny, ArtifactStore(tmp_path), torch.device("cpu"), progress=False)
    base, spec = reuse.eval_key(cfg, "prior", arts, "cpu")
    assert set(spec["artifacts"]) == {"vae", "prior"} and spec["code"] == reuse.code_fingerprint()
    assert reuse.eval_key(_cfg(tiny, beta=10.0), "prior", arts, "cpu")[0] == base  # beta: not the prior's
    for over in ({"guidance_scale": 1.5}, {"temperature": 1.0}, {"seed": 1}, {"eval": {"episodes": 3}},
                 {"sampler": {"name": "ddim"}}, {"energy": {"target": "return"}}):
        assert reuse.eval_key(_cfg(tiny, **over), "prior", arts, "cpu")[0] != base, over
    assert reuse.eval_key(cfg, "prior", arts, "cuda")[0] != base
    bc = reuse.eval_key(cfg, "bc", arts, "cpu")[0]
    assert bc != base and reuse.eval_key(_cfg(tiny, guidance_scale=1.5), "bc", arts, "cpu")[0] == bc


def test_separate_inverse_dynamics_trains_first_then_stays_frozen(tiny, tmp_path):
    """The paper's separate inverse-dynamics loop (`vae.id_steps`) runs before the VAE and f is frozen while the
    VAE trains, so the decoder learns to place states where the f that planning executes reads the right action:
    the saved f is exactly what the separate loop produced, and the VAE loss still moved the decoder."""
    from ld.stages import vae as vae_stage
    from ld.stages.artifact import ArtifactWriter
    from ld.stages.common import StageInputs
    from ld.stages.data import training_data

    cfg = _cfg(tiny, vae={"steps": 30, "id_steps": 40, "id_batch_size": 8})
    inputs = StageInputs(dataset=tiny, store=None, progress=False)
    (tmp_path / "vae").mkdir()
    vae_stage.produce_vae(cfg, inputs, ArtifactWriter(tmp_path / "vae"))
    saved = torch.load(tmp_path / "vae" / "model.pt", weights_only=True)

    data = training_data(cfg, inputs)
    torch.manual_seed(cfg.seed)  # the stage's initialization, then the separate loop alone
    model = vae_stage.build_model(vae_stage._arch(cfg, data.obs_dim, data.act_dim))
    init = {k: v.clone() for k, v in model.state_dict().items()}
    vae_stage.train_inverse_dynamics(model.inverse_dynamics, data, cfg, inputs)
    f_only = {k: v for k, v in model.state_dict().items() if k.startswith("inverse_dynamics.")}
    assert f_only and all(not torch.equal(v, init[k]) for k, v in f_only.items())
    assert all(torch.equal(saved[k], v) for k, v in f_only.items()), "f moved during VAE training"
    decoder = [k for k in saved if not k.startswith("inverse_dynamics.") and saved[k].is_floating_point()]
    assert any(not torch.equal(saved[k], init[k]) for k in decoder)


def test_separate_inverse_dynamics_resumes_each_loop_from_its_own_checkpoint(tiny, tmp_path):
    """Both loops of that stage checkpoint under one stage key. Killed in the VAE loop, the stage reruns the
    (seeded) inverse-dynamics loop, which must not load the VAE's state, and resumes the VAE where it stopped,
    bit for bit."""
    import copy

    from ld.stages import vae as vae_stage
    from ld.stages.artifact import ArtifactWriter
    from ld.stages.common import StageInputs
    from ld.stages.training import TrainHooks, training_hooks

    cfg = _cfg(tiny, vae={"steps": 30, "id_steps": 40, "id_batch_size": 8})
    inputs = StageInputs(dataset=tiny, store=None, progress=False)

    def run(name, hooks=None):
        (tmp_path / name).mkdir()
        with training_hooks(hooks):
            vae_stage.produce_vae(cfg, inputs, ArtifactWriter(tmp_path / name))
        return torch.load(tmp_path / name / "model.pt", weights_only=True)

    full = run("full")
    saved, seen = {}, []

    def kill_in_the_vae_loop(step):
        seen.append(step)
        if step == 23 and seen.count(23) == 2:  # the second loop's step 23
            raise KeyboardInterrupt("killed")

    with pytest.raises(KeyboardInterrupt):
        run("killed", TrainHooks(checkpoint_every=10, save=lambda s: saved.update(copy.deepcopy(s)),
                                 on_step=kill_in_the_vae_loop))
    assert saved["desc"] == "vae" and saved["step"] == 20
    hooks = TrainHooks(checkpoint_every=10, save=lambda s: None, restore=lambda: saved)
    resumed = run("resumed", hooks)
    assert hooks.resumed_from == [20]
    assert all(torch.equal(full[k], resumed[k]) for k in full)

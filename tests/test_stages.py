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
    assert [r.stage for r in records] == [first, f"{prefix}prior", f"{prefix}support", f"{prefix}energy"]
    for stage in (first, f"{prefix}prior", f"{prefix}energy"):
        m = arts[stage].manifest
        assert m["metrics"]["final_loss"] < m["metrics"]["first_loss"], (stage, m["metrics"])
        assert m["dataset"]["fingerprint"] == tiny.fingerprint and m["seed"] == cfg.seed
        assert m["package_version"] and m["wall_time_s"] >= 0 and m["config"]
    assert arts[f"{prefix}prior"].manifest["upstream"] == {first: arts[first].key}
    support = arts[f"{prefix}support"].load("support")
    assert support["x"].shape[1] == cfg.support_size
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

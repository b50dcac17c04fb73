"""The declared stage DAG is what runs, and stale reuse is impossible:

- every config field a stage's `produce` reads (recorded on a real run of every stage, every selection) is
  covered by its key: its own `reads`, an upstream's, or a field that never changes a result;
- a stage's code is fingerprinted per version, so changed math cannot keep an old key;
- the pipeline walks exactly the declared plan, and the docs print the same declaration.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pydantic import BaseModel

from ld.config import build
from ld.data import load_dataset
from ld.data.builtin import make
from ld.pipeline import train_stages
from ld.stages import dag
from ld.stages.artifact import ArtifactStore, ArtifactWriter
from ld.stages.common import UNKEYED_READS, Stage, StageInputs, build_stage

ROOT = Path(__file__).resolve().parents[1]


class ReadRecorder:
    """A read-only stand-in for a Config that logs the dotted path of every field read through it. A whole
    section used at once (`cfg.vae.model_dump()`) is logged as the section; properties are evaluated on the
    recorder itself, so `cfg.guided` logs `beta`."""

    def __init__(self, obj: BaseModel, log: set[str], path: str = ""):
        object.__setattr__(self, "_obj", obj)
        object.__setattr__(self, "_log", log)
        object.__setattr__(self, "_path", path)

    def __getattr__(self, name: str):
        obj, path = self._obj, self._path
        prop = getattr(type(obj), name, None)
        if isinstance(prop, property):
            return prop.fget(self)
        full = f"{path}.{name}" if path else name
        if name in type(obj).model_fields:
            value = getattr(obj, name)
            if isinstance(value, BaseModel):
                return ReadRecorder(value, self._log, full)
            self._log.add(full)
            return value
        self._log.add(path or "<whole config>")  # a method over the whole (sub)model
        return getattr(obj, name)

    def __setattr__(self, name, value):
        raise AttributeError(f"a stage must not modify its config (tried to set {name})")


def covered(field: str, declared: set[str]) -> bool:
    """A field is covered by itself or by a declared section above it (`vae` covers `vae.steps`)."""
    parts = field.split(".")
    return any(".".join(parts[:i]) in declared for i in range(1, len(parts) + 1))


def undeclared_reads(stage: Stage, cfg, inputs: StageInputs, tmp: Path) -> set[str]:
    log: set[str] = set()
    tmp.mkdir(parents=True, exist_ok=True)
    stage.produce(ReadRecorder(cfg, log), inputs, ArtifactWriter(tmp))
    allowed = dag.closure_reads(stage, cfg) | UNKEYED_READS
    return {f for f in log if not covered(f, allowed)}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.set_num_threads(1)
    path = make("pointmaze-umaze", tmp_path_factory.mktemp("d") / "u.hdf5", episodes=4, progress=False)
    return load_dataset(str(path))


def _cfg(**layer):
    base = {"dataset": "unused", "vae": {"steps": 30}, "prior": {"steps": 30}, "energy": {"steps": 30},
            "bc": {"steps": 200}, "critic": {"steps": 30}, "eval": {"bc_baseline": True}}
    base.update(layer)
    return build(base, "smoke")


@pytest.mark.parametrize("modeling", ["latent", "skill", "raw"])
def test_every_field_a_stage_reads_is_in_its_key(tiny, tmp_path, modeling):
    cfg = _cfg(modeling=modeling, planning={"candidates": 2, "selection": "critic"})
    store = ArtifactStore(tmp_path / "store")
    inputs = StageInputs(dataset=tiny, store=store, progress=False)
    walked = []
    for stage in dag.plan(cfg):
        bad = undeclared_reads(stage, cfg, inputs, tmp_path / f"scratch-{stage.name}")
        assert not bad, (f"stage {stage.name} reads {sorted(bad)} but its key does not cover them: add them to "
                         f"its `reads` in ld/stages/dag.py")
        build_stage(stage, cfg, inputs)  # the real artifact, as the next stage's upstream
        walked.append(stage.name)
    prefix = "raw_" if modeling == "raw" else ""
    assert walked == ["raw_dynamics" if modeling == "raw" else "vae", f"{prefix}prior", f"{prefix}support",
                      f"{prefix}energy", "critic", "bc"]


def test_the_recorder_catches_an_undeclared_read(tiny, tmp_path):
    """The check above is only as good as the recorder: a stage that reads `temperature` (a planning knob)
    without declaring it is flagged, and one read of a declared section is not."""

    def produce(cfg, inputs, out):
        _ = cfg.bc.hidden, cfg.temperature, cfg.train.log_every, cfg.guided

    sneaky = Stage(name="sneaky", role="bc", reads=("bc",), upstream=(), trains=False, version=1, code=(),
                   produce=produce)
    inputs = StageInputs(dataset=tiny, store=ArtifactStore(tmp_path), progress=False)
    assert undeclared_reads(sneaky, _cfg(), inputs, tmp_path / "x") == {"temperature", "beta"}


def test_key_follows_declared_reads_and_nothing_else(tiny, tmp_path):
    inputs = StageInputs(dataset=tiny, store=ArtifactStore(tmp_path), progress=False)
    cfg = _cfg()
    key = dag.VAE.key(cfg, inputs)
    assert dag.VAE.key(_cfg(vae={"steps": 31}), inputs) != key
    assert dag.VAE.key(_cfg(return_bootstrap="tail_mean"), inputs) != key  # the windows' G are its targets
    assert dag.VAE.key(_cfg(beta=10.0, temperature=1.0), inputs) == key  # not the VAE's business
    assert dag.VAE.key(cfg.model_copy(update={"seed": 1}), inputs) != key


def test_plan_follows_the_config():
    names = [s.name for s in dag.plan(_cfg(beta=0.0, eval={"bc_baseline": False}))]
    assert names == ["vae", "prior"]  # beta = 0 is the unguided prior: no supports, no energy
    assert [s.name for s in dag.plan(_cfg(modeling="raw"))] == [
        "raw_dynamics", "raw_prior", "raw_support", "raw_energy", "bc"]
    assert [s.trains for s in dag.plan(_cfg())] == [True, True, False, True, True]
    # selection by the critic adds its stage; with one candidate there is nothing to select, so no critic
    critic = {"candidates": 4, "selection": "critic"}
    assert [s.name for s in dag.plan(_cfg(planning=critic))] == ["vae", "prior", "support", "energy", "critic", "bc"]
    assert "critic" not in [s.name for s in dag.plan(_cfg(planning={**critic, "candidates": 1}))]
    assert "critic" not in [s.name for s in dag.plan(_cfg(planning={"candidates": 4}))]


def test_pipeline_walks_the_declared_plan(tiny, tmp_path):
    cfg = _cfg()
    arts, records = train_stages(cfg, tiny, ArtifactStore(tmp_path), torch.device("cpu"), progress=False)
    assert [r.stage for r in records] == [s.name for s in dag.plan(cfg)]
    assert all(r.trained for r in records)
    for stage in dag.plan(cfg):
        m = arts[stage.name].manifest
        assert m["stage_version"] == stage.version
        assert set(m["upstream"]) == {dag.stage_for(cfg, r).name for r in stage.upstream}
    _, again = train_stages(cfg, tiny, ArtifactStore(tmp_path), torch.device("cpu"), progress=False)
    assert all(r.reused for r in again)


def test_every_stage_code_matches_its_recorded_version():
    problems = dag.fingerprint_problems()
    assert not problems, "\n".join(problems)


def test_changed_math_changes_the_fingerprint_and_prose_does_not():
    src = (ROOT / "ld" / "stages" / "codec.py").read_text()
    assert "def trajectory_energy" in src
    base = dag.source_tokens(src)
    # the change issue 11 found reusing stale artifacts: the window mean in place of the paper's sum
    mean = src.replace('return -decoded["q"].sum(-1)', 'return -decoded["q"].mean(-1)')
    assert mean != src, "trajectory_energy changed shape: update this test's edit"
    assert dag.source_tokens(mean) != base
    prose = src.replace('"""', '"""Reworded. ', 1) + "\n# a comment\n"
    prose = prose.replace("\n\n\n", "\n\n\n\n")
    assert dag.source_tokens(prose) == base


def test_docs_print_the_declaration():
    doc = (ROOT / "docs" / "stages.md").read_text()
    assert dag.describe() in doc, "docs/stages.md is stale: paste `python -m ld.stages.dag` into it"

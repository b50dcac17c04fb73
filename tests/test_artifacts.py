"""The artifact store: content keys, reuse, atomic publish, one build under concurrency, clear errors."""

from __future__ import annotations

import multiprocessing as mp
import time

import pytest
import torch

from ld.stages.artifact import ArtifactError, ArtifactStore, stage_key


def test_key_depends_on_every_input():
    base = dict(stage="vae", config={"a": 1}, upstream={"x": "k"}, dataset="fp", seed=0)
    k = stage_key(**base)
    assert k == stage_key(**base)
    for change in ({"stage": "prior"}, {"config": {"a": 2}}, {"upstream": {"x": "j"}}, {"dataset": "fq"},
                   {"seed": 1}):
        assert stage_key(**{**base, **change}) != k


def test_build_then_reuse(tmp_path):
    store = ArtifactStore(tmp_path)
    calls = []

    def produce(w):
        calls.append(1)
        w.save("model", {"w": torch.ones(2)})
        w.metrics["loss"] = 0.5

    art, reused = store.build("vae", "abc", {"config": {}}, produce)
    assert not reused and calls == [1]
    assert torch.equal(art.load("model")["w"], torch.ones(2))
    assert art.manifest["metrics"]["loss"] == 0.5 and art.manifest["package_version"]
    again, reused = store.build("vae", "abc", {"config": {}}, produce)
    assert reused and calls == [1] and again.path == art.path


def test_failed_build_leaves_nothing(tmp_path):
    store = ArtifactStore(tmp_path)

    def boom(w):
        w.save("model", {"w": torch.ones(2)})
        raise RuntimeError("killed mid-stage")

    with pytest.raises(RuntimeError):
        store.build("vae", "abc", {}, boom)
    assert store.get("vae", "abc") is None
    assert [p.name for p in (tmp_path / "vae").iterdir()] == []  # no temp dir left behind


def test_corrupt_files_are_clear_errors(tmp_path):
    store = ArtifactStore(tmp_path)
    art, _ = store.build("vae", "abc", {}, lambda w: w.save("model", {"w": torch.ones(1)}))
    (art.path / "model.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ArtifactError, match="corrupt"):
        art.load("model")
    with pytest.raises(ArtifactError, match="has no missing.pt"):
        art.load("missing")
    (art.path / "manifest.json").write_text("{truncated")
    with pytest.raises(ArtifactError, match="delete"):
        store.get("vae", "abc")


def _slow_build(root, log):
    store = ArtifactStore(root)

    def produce(w):
        with open(log, "a") as fh:
            fh.write("trained\n")
        time.sleep(0.5)
        w.save("model", {"w": torch.zeros(1)})

    store.build("prior", "shared", {}, produce)


def test_concurrent_builders_train_once(tmp_path):
    log = tmp_path / "log.txt"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_slow_build, args=(tmp_path / "store", log)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert log.read_text().count("trained") == 1

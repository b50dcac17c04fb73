"""What a sweep trial asks Ray for follows its config: checked on CPU by building the plan a GPU cluster gets."""

from __future__ import annotations

import pytest

from ld.config import ConfigError, TrainConfig, resolve
from ld.distributed.resources import placement, resolve_use_gpu
from ld.distributed.trial import TrialTask


def test_a_default_trial_runs_in_process_on_one_cpu():
    p = placement(TrainConfig(), cluster_gpus=8)
    assert not p.worker_group and not p.use_gpu
    assert p.trial_resources == {"CPU": 1.0}
    assert p.max_concurrent({"CPU": 16, "GPU": 8}) == 16
    with pytest.raises(AssertionError):
        p.scaling_config()


@pytest.mark.parametrize("setting,gpus,expected", [("auto", 0, False), ("auto", 2, True), (True, 0, True),
                                                    (False, 4, False)])
def test_use_gpu_auto_follows_the_cluster(setting, gpus, expected):
    assert resolve_use_gpu(setting, gpus) is expected


def test_a_gpu_cluster_gets_gpu_worker_groups_sized_by_the_suite():
    p = placement(TrainConfig(use_gpu="auto", num_workers=2), cluster_gpus=4)
    assert p.worker_group and p.use_gpu
    assert p.trial_resources == {"CPU": 0.01}  # the Tune trial only waits on its TorchTrainer
    sc = p.scaling_config()
    assert (sc.num_workers, sc.use_gpu) == (2, True)
    bundles = sc.as_placement_group_factory().bundles
    assert bundles == [{"CPU": 0.99, "GPU": 1.0}] * 2
    assert p.max_concurrent({"CPU": 64, "GPU": 4}) == 2  # two 2-GPU groups at once
    assert p.max_concurrent({"CPU": 64, "GPU": 1}) == 1


def test_cpu_worker_groups_are_sized_by_cpus():
    p = placement(TrainConfig(num_workers=2), cluster_gpus=0)
    assert p.worker_group and not p.use_gpu
    assert p.scaling_config().as_placement_group_factory().bundles == [{"CPU": 0.99}] * 2
    assert p.max_concurrent({"CPU": 8}) == 4


def test_the_paper_preset_asks_for_gpus_where_there_are_some():
    cfg = resolve(None, "paper", [])
    assert cfg.train.use_gpu == "auto"
    on_gpus = TrialTask(config=cfg.model_dump(), suite="s", storage="/tmp/x", cluster_gpus=8)
    on_cpus = TrialTask(config=cfg.model_dump(), suite="s", storage="/tmp/x", cluster_gpus=0)
    assert on_gpus.distributed and on_gpus.placement.use_gpu
    assert not on_cpus.distributed
    # small and smoke stay CPU trials everywhere
    assert resolve(None, "small", []).train.use_gpu is False


def test_use_gpu_rejects_other_words():
    with pytest.raises(ConfigError, match="use_gpu"):
        resolve(None, "smoke", ["train.use_gpu=sometimes"])

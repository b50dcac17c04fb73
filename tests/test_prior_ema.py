"""The prior keeps an exponential moving average of its weights (prior.ema_decay, Diffuser's 0.995): the saved
`model` -- what the supports and the planner sample from -- is the average, `model_online` the last weights,
the average does not perturb training, and a build resumed from a mid-stage checkpoint continues it exactly."""

from __future__ import annotations

import copy

import pytest
import torch

from ld.config import build
from ld.data import load_dataset
from ld.data.builtin import make
from ld.pipeline import train_stages
from ld.stages import prior as prior_stage
from ld.stages.artifact import ArtifactStore
from ld.stages.training import TrainHooks, train_loop


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.set_num_threads(1)
    path = make("pointmaze-umaze", tmp_path_factory.mktemp("d") / "u.hdf5", episodes=4, progress=False)
    return load_dataset(str(path))


def _cfg(**prior):
    return build({"dataset": "unused", "beta": 0.0, "vae": {"steps": 20}, "prior": {"steps": 3, **prior},
                  "eval": {"bc_baseline": False}}, "smoke")


def test_fold_is_the_warmed_up_moving_average():
    net = torch.nn.Linear(3, 2)
    trainee = prior_stage.EMATrainee(net, 0.995)
    w0 = net.weight.detach().clone()
    with torch.no_grad():
        net.weight.add_(1.0)
    trainee.fold(1)
    d1 = 2 / 11  # min(0.995, (1 + 1) / (10 + 1))
    torch.testing.assert_close(trainee.ema.weight, d1 * w0 + (1 - d1) * (w0 + 1.0))
    before = trainee.ema.weight.clone()
    trainee.fold(1)  # the same step twice (the loop's last step, then after the loop) folds once
    assert torch.equal(trainee.ema.weight, before)
    trainee.fold(10_000)
    torch.testing.assert_close(trainee.ema.weight, 0.995 * before + 0.005 * (w0 + 1.0))
    assert list(trainee.ema.parameters())[0].requires_grad is False


def test_the_saved_and_sampled_prior_is_the_average(tiny, tmp_path):
    cfg = _cfg(steps=1, ema_decay=0.995)
    arts, _ = train_stages(cfg, tiny, ArtifactStore(tmp_path / "ema"), torch.device("cpu"), progress=False)
    saved, online = arts["prior"].load("model"), arts["prior"].load("model_online")
    # one step: ema = d * initial + (1 - d) * after-one-step, d = 2 / 11; the initial weights are the seeded init
    arch = arts["prior"].load_json("arch")
    torch.manual_seed(cfg.seed)
    init = prior_stage.build_model(arch).state_dict()
    d = 2 / 11
    moved = 0
    for k, v in saved.items():
        if not torch.is_floating_point(v):
            continue
        torch.testing.assert_close(v, d * init[k] + (1 - d) * online[k], rtol=1e-5, atol=1e-7)
        moved += int(not torch.equal(online[k], init[k]))
    assert moved > 0
    # the module every sampler gets holds the averaged weights, not the last ones
    loaded = prior_stage.load(arts["prior"])
    for k, v in loaded.net.state_dict().items():
        assert torch.equal(v, saved[k]), k
    assert any(not torch.equal(saved[k], online[k]) for k in saved if torch.is_floating_point(saved[k]))


def test_the_average_does_not_change_training_and_zero_turns_it_off(tiny, tmp_path):
    on, _ = train_stages(_cfg(steps=5, ema_decay=0.9), tiny, ArtifactStore(tmp_path / "on"), torch.device("cpu"),
                         progress=False)
    off, _ = train_stages(_cfg(steps=5, ema_decay=0.0), tiny, ArtifactStore(tmp_path / "off"),
                          torch.device("cpu"), progress=False)
    assert on["prior"].key != off["prior"].key  # prior.ema_decay is in the key (the `prior` section)
    last_on, last_off = on["prior"].load("model_online"), off["prior"].load("model")
    assert all(torch.equal(last_on[k], last_off[k]) for k in last_off)
    assert not (off["prior"].path / "model_online.pt").exists()
    saved_on = on["prior"].load("model")
    assert any(not torch.equal(saved_on[k], last_on[k]) for k in last_on if torch.is_floating_point(last_on[k]))


def test_a_resumed_build_continues_the_average_bit_for_bit():
    def run(hooks=None):
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
        trainee = prior_stage.EMATrainee(net, 0.9)

        def loss_fn(step, rng, gen):
            trainee.fold(step)
            x = torch.randn(16, 4, generator=gen)
            return ((net(x) - x.sum(-1, keepdim=True)) ** 2).mean(), {}

        r = train_loop(trainee, loss_fn, steps=8, lr=1e-2, seed=0, desc="ema", progress=False, hooks=hooks)
        trainee.fold(r.steps)
        return trainee

    whole = run()
    saved: dict = {}
    # a checkpoint is written out when saved (a copy, as a file would be): the live tensors keep training
    run(TrainHooks(checkpoint_every=4, save=lambda state: saved.setdefault("state", copy.deepcopy(state))))
    resumed = run(TrainHooks(restore=lambda: saved["state"]))
    assert saved["state"]["step"] == 4
    for part in ("net", "ema"):
        a, b = getattr(whole, part).state_dict(), getattr(resumed, part).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), part
    assert not torch.equal(whole.ema[0].weight, whole.net[0].weight)

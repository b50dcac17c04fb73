"""What the simulator-cloning test modules share: a umaze whose goal and reset cell are pinned."""

from __future__ import annotations

from ld.data.builtin import maze
from ld.data.types import DatasetInfo


def umaze_info() -> DatasetInfo:
    """pointmaze-umaze's info with a fixed goal (cell (1, 1)) and reset cell (3, 1), as a built-in set records them."""
    info = maze.dataset_info("pointmaze-umaze", seed=0)
    info.extra["maze"] = {"goal_cell": [1, 1], "reset_cell": [3, 1], "goal_xy": [-1.0, 1.0], "goal_radius": 0.5}
    return info


def tiny_trained_maze(tmp, sets: list[str]):
    """A 6-episode umaze, every stage of a smoke config (plus `sets`) trained for a few steps ->
    (cfg, artifacts, stage records, dataset, the first observation of 4 episodes)."""
    import numpy as np
    import torch

    from ld.config import resolve
    from ld.data import load_dataset
    from ld.data.builtin import make
    from ld.pipeline import setup_torch, train_stages
    from ld.stages.artifact import ArtifactStore

    path = make("pointmaze-umaze", tmp / "umaze.hdf5", episodes=6, progress=False)
    cfg = resolve(None, "smoke", [f"dataset={path}", "vae.steps=20", "prior.steps=20", "energy.steps=20",
                                  "eval.bc_baseline=false", *sets])
    device = setup_torch(cfg)
    torch.set_num_threads(1)
    ds = load_dataset(cfg.dataset)
    artifacts, records = train_stages(cfg, ds, ArtifactStore(tmp / "artifacts"), device, progress=False)
    obs = np.stack([ep.observations[0] for ep in ds.episodes[:4]])
    return cfg, artifacts, records, ds, obs

"""What the simulator-cloning test modules share: a umaze whose goal and reset cell are pinned."""

from __future__ import annotations

from ld.data.builtin import maze
from ld.data.types import DatasetInfo


def umaze_info() -> DatasetInfo:
    """pointmaze-umaze's info with a fixed goal (cell (1, 1)) and reset cell (3, 1), as a built-in set records them."""
    info = maze.dataset_info("pointmaze-umaze", seed=0)
    info.extra["maze"] = {"goal_cell": [1, 1], "reset_cell": [3, 1], "goal_xy": [-1.0, 1.0], "goal_radius": 0.5}
    return info

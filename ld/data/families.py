"""Task families (locomotion, maze, adroit, kitchen) from a dataset's name or env id.

One rule for the two places that group by family: the figures (a panel per family) and the presets (a
preset may set different defaults per family, e.g. `small` trains the maze's prior shorter)."""

from __future__ import annotations

from typing import Optional


def task_family(dataset_name: str, env_id: Optional[str] = None) -> str:
    """locomotion | maze | adroit | kitchen | other, from the env id (or the dataset name)."""
    s = f"{env_id or ''} {dataset_name or ''}".lower()
    if "maze" in s:
        return "maze"
    if any(k in s for k in ("halfcheetah", "hopper", "walker", "ant", "humanoid", "swimmer")):
        return "locomotion"
    if any(k in s for k in ("pen", "hammer", "door", "relocate", "adroit")):
        return "adroit"
    if "kitchen" in s:
        return "kitchen"
    return "other"

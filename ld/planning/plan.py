"""What one planning decision returns, and the tail every planning path shares: decode -> energy -> action.

Both the reference path (`Planner.plan`) and the static / CUDA-graph path (`ld.planning.fast`) end in
`decode_tail`, so the decoding, the trajectory energy and the inverse-dynamics action exist once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from ld.data.normalizer import DatasetNormalizer
from ld.stages.codec import trajectory_energy


@dataclass
class Plan:
    actions: np.ndarray  # [B, act] first action, environment units
    states: torch.Tensor  # [B, T, obs] planned states, normalized
    predicted_return: np.ndarray  # [B] Q(s_1, a_1) in environment return units
    energy: np.ndarray  # [B] E of the planned trajectory (normalized units)
    milliseconds: float  # wall time of this batched call


def decode_tail(codec, x0: torch.Tensor, s1: torch.Tensor, target: str) -> dict[str, torch.Tensor]:
    """Sampled sequences x0 (codec space, not standardized) -> first actions, planned states, Q(s_1, a_1) and
    the trajectory energy, all normalized; the first action moves s_1 towards the plan's next state."""
    decoded = codec.decode(x0, s1)
    energy = trajectory_energy(decoded, target)
    states = decoded["states"]
    nxt = states[:, 1] if states.shape[1] > 1 else states[:, 0]
    actions = codec.inverse_dynamics(s1, nxt)
    return {"actions": actions, "states": states, "q0": decoded["q"][:, 0], "energy": energy}


def to_plan(normalizer: DatasetNormalizer, out: dict[str, torch.Tensor], t0: float, clone: bool = False) -> Plan:
    """The tail's tensors in environment units, timed from `t0` (perf_counter)."""
    actions = out["actions"].cpu().numpy()  # the one host synchronisation of the decision
    q0 = normalizer.unnormalize("returns", out["q0"].cpu().numpy())
    return Plan(
        actions=normalizer.unnormalize("actions", actions),
        states=out["states"].clone() if clone else out["states"],
        predicted_return=np.asarray(q0, dtype=float),
        energy=out["energy"].cpu().numpy().astype(float),
        milliseconds=(time.perf_counter() - t0) * 1000.0,
    )

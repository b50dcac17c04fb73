"""A behavior policy's actor evaluated in integer fixed point, so that a rollout is the same on every machine.

Floating-point matrix products are not the same on every machine: BLAS picks its kernel by CPU (and thread
count), kernels sum in different orders, and a 1-ulp difference in one action is amplified by the chaotic
dynamics of a running cheetah into a different data set (the same shipped policy gave fingerprints
d19201a876c0bed3 and a9507d949a4a864e on two machines of one kind). Integer addition is associative, so an
integer matrix product has one answer whatever the kernel, order or thread count. The actor therefore
runs with its weights, biases and activations rounded to multiples of 2**-FRAC_BITS; only the final tanh is
floating point, computed per element by the C library (`math.tanh`, no SIMD dispatch) and rounded to the
same grid, so a last-ulp difference in tanh would have to straddle a rounding boundary to show (about one
chance in 1e10 per action).

The weights as stored (float16 snapshots, float32 actors) define the policy; this module defines how it is
evaluated. The torch actor that trained it and this one agree to about 1e-5 per action.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

FRAC_BITS = 20
_ONE = 1 << FRAC_BITS
_LIMIT = 1 << 62  # int64 headroom: an accumulator beyond this would overflow on the next add


def _fixed(x: Any, bits: int = FRAC_BITS) -> np.ndarray:
    return np.rint(np.asarray(x, dtype=np.float64) * float(1 << bits)).astype(np.int64)


class NumpyActor:
    """The deterministic TD3 actor max_action * tanh(MLP(obs)), evaluated in int64 fixed point (see module doc).

    `state_dict`: an `nn.Sequential(Linear, ReLU, Linear, ReLU, ..., Linear)` state dict (keys `0.weight`,
    `0.bias`, `2.weight`, ...), any float dtype.
    """

    def __init__(self, state_dict: Mapping[str, Any], max_action: float = 1.0):
        self.layers: list[tuple[np.ndarray, np.ndarray]] = []
        i = 0
        while f"{i}.weight" in state_dict:
            w = np.asarray(state_dict[f"{i}.weight"], dtype=np.float64)
            b = np.asarray(state_dict[f"{i}.bias"], dtype=np.float64)
            # weights at scale 2**F; biases at 2**2F, the scale of the accumulated products
            self.layers.append((np.ascontiguousarray(_fixed(w).T), _fixed(b, 2 * FRAC_BITS)))
            i += 2
        if not self.layers:
            raise ValueError("actor state dict has no '0.weight': not an nn.Sequential MLP")
        self.max_action = float(max_action)
        self.obs_dim = self.layers[0][0].shape[0]
        self.act_dim = self.layers[-1][0].shape[1]

    def logits(self, obs: np.ndarray) -> np.ndarray:
        """The pre-tanh outputs (float64, exact multiples of 2**-2F up to float64 rounding)."""
        h = _fixed(obs)
        last = len(self.layers) - 1
        for j, (w, b) in enumerate(self.layers):
            acc = h @ w + b
            if np.abs(acc).max(initial=0) >= _LIMIT:
                raise FloatingPointError("fixed-point actor overflow: observation or weights out of range")
            if j == last:
                return acc.astype(np.float64) / float(1 << (2 * FRAC_BITS))
            h = np.maximum(acc >> FRAC_BITS, 0)  # floor back to scale 2**F, then ReLU
        raise AssertionError("unreachable")

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        z = self.logits(obs)
        a = np.array([math.tanh(v) for v in z.ravel()], dtype=np.float64).reshape(z.shape)
        return np.rint(a * self.max_action * _ONE) / _ONE

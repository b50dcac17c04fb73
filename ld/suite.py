"""Suite files: a base config, a grid over named axes, seeds, and per-scale sizes -> a list of trials.

A suite YAML (see `ablations/figure5.yaml`) looks like::

    name: figure5
    description: one factor at a time around the default (paper Figure 5)
    base:                          # a Config layer, exactly like an `ld run` YAML
      dataset: builtin:halfcheetah-medium-expert
    scales:                        # chosen with --scale; each may name a preset, seeds and any Config layer
      smoke: {preset: smoke, seeds: [0], set: {eval: {episodes: 2}}, axes: {horizon: [6, 12]}}
      small: {preset: small, seeds: [0, 1, 2]}
      paper: {preset: paper, seeds: [0, 1, 2, 3, 4], set: {eval: {episodes: 20}}}
    grid:
      mode: one_at_a_time          # or: product
      axes:
        latent_step: [1, 2, 3, 4]
        beta: [0, 1, 3, 10, 100]
    search:                        # optional: an Optuna search instead of (or on top of) the grid
      metric: normalized_score
      mode: max
      samples: 16
      space: {guidance_scale: {uniform: [1.0, 2.0]}, beta: {loguniform: [0.3, 30.0]}}

Expansion is a pure function, so the same trials come out of `ld sweep`, a test, or a notebook.
`one_at_a_time` varies each axis alone with every other axis at the base value; the base point itself is
one trial (axis "default") that every panel shares, so it is trained once. Axis values may be dicts for
coupled changes (e.g. `{modeling: raw}` or `{energy.loss: emse}` under a `selection` axis).
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ld.config import Config, ConfigError, _deep_merge, build, parse_overrides, read_yaml

SCALES = ("smoke", "small", "paper")
GRID_MODES = ("one_at_a_time", "product")
SUITE_KEYS = ("name", "description", "base", "scales", "grid", "search")


@dataclass
class Trial:
    """One point of the grid x one seed."""

    config: Config
    axis: str  # the varied axis ("default" for the base point; "product" for full grids)
    value: Any  # the axis value (for plots: a label)
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.axis}={self.value}"


@dataclass
class Suite:
    name: str
    description: str
    base: dict[str, Any]
    scales: dict[str, dict[str, Any]]
    grid: dict[str, Any]
    search: Optional[dict[str, Any]]
    path: Optional[Path] = None

    def seeds(self, scale: str) -> list[int]:
        return list(self._scale(scale).get("seeds", [0]))

    def _scale(self, scale: str) -> dict[str, Any]:
        if scale not in SCALES:
            raise ConfigError(f"unknown scale {scale!r}; allowed: {', '.join(SCALES)}")
        return self.scales.get(scale, {"preset": scale})

    def base_layer(self, scale: str) -> tuple[dict[str, Any], str]:
        sc = self._scale(scale)
        layer = _deep_merge(self.base, sc.get("set", {}) or {})
        return layer, sc.get("preset", scale)

    def axes(self, scale: Optional[str] = None) -> dict[str, list]:
        """The grid axes, with a scale's own `axes:` entries replacing the shared ones of the same name."""
        axes = dict((self.grid or {}).get("axes", {}) or {})
        if scale is not None:
            axes.update(self._scale(scale).get("axes", {}) or {})
        return axes

    def points(self, scale: Optional[str] = None) -> list[tuple[str, Any, dict[str, Any]]]:
        """(axis, value, nested override) for every grid point, seeds not yet applied."""
        axes = self.axes(scale)
        mode = (self.grid or {}).get("mode", "one_at_a_time")
        if not axes:
            return [("default", "default", {})]
        if mode == "one_at_a_time":
            pts = [("default", "default", {})]
            for axis, values in axes.items():
                for v in values:
                    pts.append((axis, _label(v), _override(axis, v)))
            return pts
        keys = list(axes)
        pts = []
        for combo in itertools.product(*(axes[k] for k in keys)):
            over: dict[str, Any] = {}
            for k, v in zip(keys, combo):
                over = _deep_merge(over, _override(k, v))
            pts.append(("product", ",".join(f"{k}={_label(v)}" for k, v in zip(keys, combo)), over))
        return pts

    def trials(self, scale: str, extra_sets: Optional[list[str]] = None) -> list[Trial]:
        """Every trial at `scale`, validated; grid points equal to the base point are merged into it."""
        layer, preset_name = self.base_layer(scale)
        layer = _deep_merge(layer, parse_overrides(extra_sets or []))
        base_cfg = _build(layer, preset_name, f"{self.name}: base")
        out: list[Trial] = []
        seen: set[str] = set()
        points = []
        for axis, value, over in self.points(scale):
            cfg = _build(_deep_merge(layer, over), preset_name, f"{self.name}: {axis}={value}")
            if axis not in ("default", "product") and cfg.flat() == base_cfg.flat():
                continue  # the default value of a one-at-a-time axis: the shared base point covers it
            points.append((axis, value, over, cfg))
        # seed-major: every grid point of seed 0 before any of seed 1, so a sweep cut short (or still
        # running) holds whole seeds -- every bar on the same seeds -- rather than all seeds of a few bars
        for seed in self.seeds(scale):
            for axis, value, over, cfg in points:
                c = cfg.model_copy(update={"seed": seed})
                c = Config.model_validate(c.model_dump())
                key = repr(sorted(c.flat().items()))
                if key in seen:
                    continue
                seen.add(key)
                out.append(Trial(c, axis, value, over))
        return out

    def base_values(self, scale: str) -> dict[str, Any]:
        """The base config's value of each grid axis (where panels meet, for the analysis)."""
        layer, preset_name = self.base_layer(scale)
        flat = build(layer, preset_name).flat()
        return {a: flat.get(a) for a in self.axes(scale)}


def _label(v: Any) -> Any:
    if isinstance(v, dict):
        return ",".join(f"{k}={x}" for k, x in v.items())
    return v


def _override(axis: str, value: Any) -> dict[str, Any]:
    """An axis value as a nested Config layer: `beta: 3` -> {beta: 3}; `selection: {modeling: raw}` ->
    {modeling: raw}; dotted axes (`energy.loss: emse`) nest."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out = _deep_merge(out, _override(k, v))
        return out
    node: dict[str, Any] = {}
    root = node
    parts = axis.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = copy.deepcopy(value)
    return root


def _build(layer: dict[str, Any], preset_name: str, where: str) -> Config:
    try:
        return build(layer, preset_name)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


def load_suite(path: str | Path) -> Suite:
    p = Path(path)
    raw = read_yaml(p, "suite file")
    if not isinstance(raw, dict):
        raise ConfigError(f"suite file {p} must be a mapping with keys {', '.join(SUITE_KEYS)}")
    unknown = sorted(set(raw) - set(SUITE_KEYS))
    if unknown:
        raise ConfigError(f"suite file {p}: unknown keys {unknown}; allowed: {', '.join(SUITE_KEYS)}")
    grid = raw.get("grid") or {}
    mode = grid.get("mode", "one_at_a_time")
    if mode not in GRID_MODES:
        raise ConfigError(f"suite file {p}: grid.mode {mode!r}; allowed: {', '.join(GRID_MODES)}")
    for axis, values in (grid.get("axes") or {}).items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"suite file {p}: grid.axes.{axis} must be a non-empty list of values")
    scales = raw.get("scales") or {}
    for s, body in scales.items():
        if not isinstance(body, dict) or set(body) - {"preset", "seeds", "set", "axes"}:
            raise ConfigError(f"suite file {p}: scales.{s} must be a mapping of preset, seeds, set, axes")
        if s not in SCALES:
            raise ConfigError(f"suite file {p}: unknown scale {s!r}; allowed: {', '.join(SCALES)}")
    suite = Suite(
        name=str(raw.get("name") or p.stem),
        description=str(raw.get("description") or ""),
        base=raw.get("base") or {},
        scales=scales,
        grid=grid,
        search=raw.get("search"),
        path=p,
    )
    for s in SCALES:  # validate every scale now: a typo must not surface hours into a cluster run
        suite.trials(s)
    return suite

"""Suite files: a base config, a grid over named axes, seeds, and per-scale sizes -> a list of trials.

A suite YAML (see `ablations/figure5.yaml`) looks like::

    name: figure5
    description: one factor at a time around the default (paper Figure 5)
    base:                          # a Config layer, exactly like a `latentdiffuser run` YAML
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

Expansion is a pure function, so the same trials come out of `latentdiffuser sweep`, a test, or a notebook.
`one_at_a_time` varies each axis alone with every other axis at the base value; the base point itself is
one trial (axis "default") that every panel shares, so it is trained once. Axis values may be dicts for
coupled changes (e.g. `{modeling: raw}` or `{energy.loss: emse}` under a `selection` axis).

The file is a typed model like `Config` (`Suite`, with `ScaleSpec`, `GridSpec`, `SearchSpec` and its `Domain`s;
unknown keys are errors), validated once by `load_suite`: a bad file is one `ConfigError` naming the file, the
field and what is allowed. Every scale's trials -- and every end of every search range -- are built then too,
so a typo never surfaces hours into a cluster run.
"""

from __future__ import annotations

import copy
import itertools
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from ld.config import Config, ConfigError, build, deep_merge, parse_overrides, read_yaml

ScaleName = Literal["smoke", "small", "paper"]
SCALES: tuple[str, ...] = typing.get_args(ScaleName)
PresetName = Literal["smoke", "small", "paper"]  # ld.config.PRESETS
DOMAINS = ("uniform", "loguniform", "choice", "randint", "quniform")  # ray.tune's sampling functions


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


# ----------------------------------------------------------------------------------------------------
# the suite file as a typed model


class _SuiteModel(BaseModel):
    # Unknown keys are errors, as in Config: a typo in a suite file must not silently fall back to a default.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _axis_values(v: Any) -> Any:
    if not isinstance(v, list) or not v:
        raise ValueError(f"must be a non-empty list of values (got {v!r})")
    return v


def _scale_name(v: Any) -> Any:
    if v not in SCALES:
        raise ValueError(f"unknown scale {v!r}; allowed: {', '.join(SCALES)}")
    return v


def _empty_if_none(v: Any) -> Any:
    return {} if v is None else v


AxisValues = Annotated[list[Any], BeforeValidator(_axis_values)]
ScaleKey = Annotated[ScaleName, BeforeValidator(_scale_name)]


class ScaleSpec(_SuiteModel):
    """One scale of a suite (`--scale`): the preset it starts from, its seeds, a Config layer over the suite's
    `base` and grid axes of its own. A scale the file does not list is its preset with seed 0."""

    preset: Optional[PresetName] = Field(
        None, description="the Config preset under `base`; default: the preset named like the scale (null: none; "
        "filled in by Suite)")
    seeds: list[Annotated[int, Field(ge=0)]] = Field(
        default_factory=lambda: [0], min_length=1, description="the seeds every grid point runs on")
    set: dict[str, Any] = Field(
        default_factory=dict, description="a Config layer over `base` at this scale (e.g. {eval: {episodes: 20}})")
    axes: dict[str, AxisValues] = Field(
        default_factory=dict, description="grid axes that replace the shared `grid.axes` of the same name")

    _none_is_empty = field_validator("set", "axes", mode="before")(_empty_if_none)


class GridSpec(_SuiteModel):
    """The grid of trials: named axes, each a list of values."""

    mode: Literal["one_at_a_time", "product"] = Field(
        "one_at_a_time", description="one_at_a_time: each axis alone around the base point (one shared base "
        "trial); product: every combination of the axes' values")
    axes: dict[str, AxisValues] = Field(
        default_factory=dict, description="axis -> values; the axis is a dotted Config key (`energy.loss`), or any "
        "name when its values are dicts of coupled changes (`selection: [{modeling: raw}, ...]`)")

    _none_is_empty = field_validator("axes", mode="before")(_empty_if_none)


class Domain(_SuiteModel):
    """The range of one searched field: exactly one of these keys (Ray Tune's sampling function of that name),
    e.g. `{uniform: [1.0, 2.0]}`."""

    uniform: Optional[tuple[float, float]] = Field(None, description="[lower, upper]")
    loguniform: Optional[tuple[float, float]] = Field(None, description="[lower, upper], both > 0")
    choice: Optional[list[Any]] = Field(None, min_length=1, description="the values to choose from")
    randint: Optional[tuple[int, int]] = Field(None, description="[lower, upper): integers, upper excluded")
    quniform: Optional[tuple[float, float, float]] = Field(None, description="[lower, upper, q]: multiples of q")

    @model_validator(mode="before")
    @classmethod
    def _one_kind(cls, data: Any) -> Any:
        if (not isinstance(data, dict) or len(data) != 1 or next(iter(data)) not in DOMAINS
                or next(iter(data.values())) is None):
            raise ValueError(f"expected one of {{{', '.join(DOMAINS)}: ...}}, got {data!r}")
        return data

    @model_validator(mode="after")
    def _bounds(self) -> "Domain":
        kind, args = self.kind, self.args
        if kind == "choice":
            return self
        lo, hi = args[0], args[1]
        if not lo < hi:
            raise ValueError(f"{kind}: the lower bound ({lo}) must be below the upper bound ({hi})")
        if kind == "loguniform" and lo <= 0:
            raise ValueError(f"loguniform: the bounds must be > 0 (got lower bound {lo})")
        if kind == "quniform" and args[2] <= 0:
            raise ValueError(f"quniform: q must be > 0 (got {args[2]})")
        return self

    @model_serializer
    def _as_written(self) -> dict[str, list[Any]]:
        return {self.kind: self.args}

    @property
    def kind(self) -> str:
        return next(k for k in DOMAINS if getattr(self, k) is not None)

    @property
    def args(self) -> list[Any]:
        return list(getattr(self, self.kind))

    def ends(self) -> list[Any]:
        """The values a sample can take at the edges of the range (every value of a choice)."""
        if self.kind == "choice":
            return self.args
        lo, hi = self.args[:2]
        return [lo, hi - 1] if self.kind == "randint" else [lo, hi]


class SearchSpec(_SuiteModel):
    """An Optuna search (ray.tune.search.optuna) over fields of the base config: each sample is one Tune trial
    that runs the sampled point on every seed of the scale and reports the seed mean of `metric`."""

    metric: str = Field(description="the reported score to optimize, e.g. normalized_score")
    mode: Literal["max", "min"] = Field("max", description="maximize or minimize the metric")
    samples: int = Field(8, gt=0, description="points Optuna samples (one Tune trial each)")
    space: dict[str, Domain] = Field(
        description="a dotted Config key (as in --set) -> its range, e.g. {guidance_scale: {uniform: [1.0, 2.0]}}")
    seed: int = Field(0, ge=0, description="seed of Optuna's sampler")
    scheduler: None = Field(None, exclude=True, description="removed (see _no_scheduler); not offered as a key")

    @field_validator("space")
    @classmethod
    def _not_empty(cls, v: dict[str, Domain]) -> dict[str, Domain]:
        if not v:
            raise ValueError("needs at least one field to search, e.g. {guidance_scale: {uniform: [1.0, 2.0]}}")
        return v

    @field_validator("scheduler", mode="before")
    @classmethod
    def _no_scheduler(cls, v: Any) -> None:
        raise ValueError("removed. A trial reports its score once, when it ends, so an early-stopping scheduler "
                         "(ASHA) has nothing to act on; delete the key")

    def probe_points(self) -> list[dict[str, Any]]:
        """One {field: value} per end of every range (and per value of every choice): what load_suite builds
        into the base config to check the space before anything runs."""
        return [{name: v} for name, dom in self.space.items() for v in dom.ends()]


class Suite(_SuiteModel):
    """A suite file: a base config, per-scale sizes and seeds, a grid over named axes and/or a search."""

    name: str = Field(description="names the results (results/<name>/) and the Tune experiment; default: the "
                      "file's stem")
    description: str = Field("", description="one paragraph: what the suite reproduces")
    base: dict[str, Any] = Field(default_factory=dict,
                                 description="a Config layer, exactly like a `latentdiffuser run` YAML")
    scales: dict[ScaleKey, ScaleSpec] = Field(
        default_factory=dict, description="smoke | small | paper -> that scale's preset, seeds, set and axes")
    grid: GridSpec = Field(default_factory=GridSpec, description="the grid of trials")
    search: Optional[SearchSpec] = Field(None, description="an Optuna search instead of (or on top of) the grid")

    _path: Optional[Path] = PrivateAttr(None)

    _none_is_empty = field_validator("base", "scales", "grid", mode="before")(_empty_if_none)

    @field_validator("name", "description", mode="before")
    @classmethod
    def _text(cls, v: Any) -> Any:
        return "" if v is None else str(v) if isinstance(v, (int, float, bool)) else v

    @model_validator(mode="after")
    def _default_presets(self) -> "Suite":
        for scale, spec in self.scales.items():
            if "preset" not in spec.model_fields_set:
                spec.preset = scale  # a scale starts from the preset of its name unless it says otherwise
        return self

    @property
    def path(self) -> Optional[Path]:
        """The file it was loaded from (None for a suite built in code)."""
        return self._path

    def seeds(self, scale: str) -> list[int]:
        return list(self._scale(scale).seeds)

    def _scale(self, scale: str) -> ScaleSpec:
        if scale not in SCALES:
            raise ConfigError(f"unknown scale {scale!r}; allowed: {', '.join(SCALES)}")
        return self.scales.get(scale) or ScaleSpec(preset=scale)

    def base_layer(self, scale: str) -> tuple[dict[str, Any], Optional[str]]:
        sc = self._scale(scale)
        return deep_merge(self.base, sc.set), sc.preset

    def axes(self, scale: Optional[str] = None) -> dict[str, list]:
        """The grid axes, with a scale's own `axes:` entries replacing the shared ones of the same name."""
        axes = dict(self.grid.axes)
        if scale is not None:
            axes.update(self._scale(scale).axes)
        return axes

    def points(self, scale: Optional[str] = None) -> list[tuple[str, Any, dict[str, Any]]]:
        """(axis, value, nested override) for every grid point, seeds not yet applied."""
        axes = self.axes(scale)
        if not axes:
            return [("default", "default", {})]
        if self.grid.mode == "one_at_a_time":
            pts = [("default", "default", {})]
            for axis, values in axes.items():
                for v in values:
                    pts.append((axis, _label(v), axis_override(axis, v)))
            return pts
        keys = list(axes)
        pts = []
        for combo in itertools.product(*(axes[k] for k in keys)):
            over: dict[str, Any] = {}
            for k, v in zip(keys, combo):
                over = deep_merge(over, axis_override(k, v))
            pts.append(("product", ",".join(f"{k}={_label(v)}" for k, v in zip(keys, combo)), over))
        return pts

    def trials(self, scale: str, extra_sets: Optional[list[str]] = None) -> list[Trial]:
        """Every trial at `scale`, validated; grid points equal to the base point are merged into it."""
        layer, preset_name = self.base_layer(scale)
        layer = deep_merge(layer, parse_overrides(extra_sets or []))
        base_cfg = _build(layer, preset_name, f"{self.name}: base")
        out: list[Trial] = []
        seen: set[str] = set()
        points = []
        for axis, value, over in self.points(scale):
            cfg = _build(deep_merge(layer, over), preset_name, f"{self.name}: {axis}={value}")
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

    def check_search(self, scale: str) -> None:
        """Build every end of every search range into the scale's base point(s): a misspelt field or a range
        the config does not allow is a ConfigError now, not the first failed Tune trial."""
        if self.search is None:
            return
        trials = self.trials(scale)
        for t in trials:
            if t.config.seed != trials[0].config.seed:
                continue  # the other seeds' configs differ only in the seed
            for point in self.search.probe_points():
                (k, v), = point.items()
                _build(deep_merge(t.config.model_dump(), axis_override(k, v)), None,
                       f"{self.name}: search.space.{k} = {v!r}")


def _label(v: Any) -> Any:
    if isinstance(v, dict):
        return ",".join(f"{k}={x}" for k, x in v.items())
    return v


def axis_override(axis: str, value: Any) -> dict[str, Any]:
    """An axis value (of a grid axis or a search point) as a nested Config layer: `beta: 3` -> {beta: 3};
    `selection: {modeling: raw}` -> {modeling: raw}; dotted axes (`energy.loss: emse`) nest."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out = deep_merge(out, axis_override(k, v))
        return out
    node: dict[str, Any] = {}
    root = node
    parts = axis.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = copy.deepcopy(value)
    return root


def _build(layer: dict[str, Any], preset_name: Optional[str], where: str) -> Config:
    try:
        return build(layer, preset_name)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


# ----------------------------------------------------------------------------------------------------
# loading


def _unwrap(t: Any) -> Any:
    """Optional[X] / Annotated[X, ...] -> X."""
    while True:
        origin = typing.get_origin(t)
        if origin is Annotated:
            t = typing.get_args(t)[0]
        elif origin is typing.Union:
            t = next(a for a in typing.get_args(t) if a is not type(None))
        else:
            return t


def _model_at(loc: list[Any]) -> Any:
    """The suite model (or type) at a validation error's location, e.g. ("scales", "small") -> ScaleSpec."""
    t: Any = Suite
    for part in loc:
        t = _unwrap(t)
        if isinstance(t, type) and issubclass(t, BaseModel):
            t = t.model_fields[part].annotation
        elif typing.get_origin(t) in (dict, list):
            t = typing.get_args(t)[-1]
    return _unwrap(t)


def _keys(model: Any) -> list[str]:
    """The keys a suite file may write for `model` (declaration order)."""
    return [n for n, f in model.model_fields.items() if not f.exclude]


def _explain(err: ValidationError) -> str:
    """A suite ValidationError as one line: `<field>: <what is wrong / what is allowed>`, joined by `; `."""
    lines = []
    for e in err.errors():
        loc = list(e["loc"])
        if loc and loc[-1] == "[key]":  # a bad key of a mapping (an unknown scale): the message names it
            loc = loc[:-2]
        where = ".".join(str(x) for x in loc) or "suite"
        kind, got = e["type"], e.get("input")
        if kind == "extra_forbidden":
            lines.append(f"{where}: unknown field; allowed here: {', '.join(_keys(_model_at(loc[:-1])))}")
        elif kind == "model_type":
            lines.append(f"{where}: must be a mapping of {', '.join(_keys(_model_at(loc)))}")
        elif kind == "missing":
            parent, name = _model_at(loc[:-1]), loc[-1]
            lines.append(f"{where}: required ({parent.model_fields[name].description})")
        elif kind == "value_error":  # our validators' messages, complete (they name the input where it helps)
            lines.append(f"{where}: {e['msg'].removeprefix('Value error, ')}")
        else:
            lines.append(f"{where}: {e['msg']}" + ("" if isinstance(got, dict) else f" (got {got!r})"))
    return "; ".join(lines)


def load_suite(path: str | Path) -> Suite:
    p = Path(path)
    raw = read_yaml(p, "suite file")
    if not isinstance(raw, dict):
        raise ConfigError(f"suite file {p} must be a mapping with keys {', '.join(_keys(Suite))}")
    try:
        suite = Suite.model_validate({**raw, "name": raw.get("name") or p.stem})
    except ValidationError as e:
        raise ConfigError(f"suite file {p}: {_explain(e)}") from None
    suite._path = p
    for s in SCALES:  # validate every scale now: a typo must not surface hours into a cluster run
        suite.trials(s)
        suite.check_search(s)
    return suite

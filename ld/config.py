"""Typed, validated run configuration.

One `Config` describes one trial: which data, which modeling selection, the sizes of every stage and how
to plan and evaluate. It is built in layers -- defaults, then a preset (`smoke`, `small`, `paper`), then a
YAML file, then `--set key=value` overrides -- and validated once at the edge, so a bad value is reported
as one message naming the field and what is allowed (`ConfigError`, exit code 2 in the CLI) before
anything is written.

The sweep axes are top-level or one level deep and keep the names that sweep files, manifests and the
Parquet columns share: `latent_step`, `horizon`, `diffusion_steps`, `beta`, `guidance_scale`,
`temperature`, `support_size`, `modeling`, `energy.target`, `energy.loss`, `sampler.name`,
`sampler.steps`, `seed`, `dataset` (and, beyond the paper, `planning.candidates`, `planning.selection`,
`planning.execution`).
"""

from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ld.data.families import task_family

PRESETS = ("smoke", "small", "paper")


class ConfigError(ValueError):
    """A configuration problem, already phrased for the user (field, value, what is allowed)."""


class _Strict(BaseModel):
    # Unknown keys are errors: a typo in a sweep file must not silently fall back to a default.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class VAEConfig(_Strict):
    """Latent action representation: encoder q_phi, state decoder p_psi and the modular heads."""

    embed_dim: int = Field(128, gt=0, description="transformer width")
    n_layers: int = Field(4, gt=0, description="transformer blocks in the encoder and in the decoder")
    n_heads: int = Field(4, gt=0, description="attention heads (must divide embed_dim)")
    latent_dim: int = Field(16, gt=0, description="channels of one latent action z_i")
    dropout: float = Field(0.1, ge=0, lt=1)
    kl_weight: float = Field(1e-6, ge=0, description="KL to N(0, I); the paper uses ~1e-6")
    id_hidden: int = Field(512, gt=0, description="inverse-dynamics MLP width (paper: 2 x 512)")
    id_layers: int = Field(2, gt=0)
    id_batch_size: Optional[int] = Field(
        None, gt=0, description="batch of a separate inverse-dynamics loop (paper: 32); null = trained jointly "
        "with the VAE on its batches and steps")
    id_steps: Optional[int] = Field(None, gt=0, description="steps of that separate loop (paper: 2e6)")
    value_hidden: int = Field(1024, gt=0, description="reward/return decoder width (paper: 3 x 1024)")
    value_layers: int = Field(3, gt=0)
    lr: float = Field(2e-4, gt=0)
    batch_size: int = Field(64, gt=0)
    steps: int = Field(20000, gt=0, description="gradient steps")

    @model_validator(mode="after")
    def _heads_divide(self) -> "VAEConfig":
        if self.embed_dim % self.n_heads:
            raise ValueError(f"vae.n_heads ({self.n_heads}) must divide vae.embed_dim ({self.embed_dim})")
        if (self.id_batch_size is None) != (self.id_steps is None):
            raise ValueError("vae.id_batch_size and vae.id_steps go together: set both (a separate inverse-"
                             "dynamics loop) or neither (trained jointly with the VAE)")
        return self


class PriorConfig(_Strict):
    """Score-based prior p_theta(z | s_1): a temporal U-Net trained with the epsilon-prediction loss."""

    dim: int = Field(32, gt=0, description="base channels of the temporal U-Net")
    dim_mults: list[int] = Field(default_factory=lambda: [1, 2, 4], min_length=1)
    embed_dim: int = Field(128, gt=0, description="timestep and condition embedding size (paper: 128)")
    embed_hidden: int = Field(256, gt=0, description="hidden width of the embedding MLPs (paper: 256)")
    cond_dropout: float = Field(0.25, ge=0, le=1, description="classifier-free dropout of s_1 (paper: 0.25)")
    lr: float = Field(2e-4, gt=0)
    batch_size: int = Field(32, gt=0)
    steps: int = Field(20000, gt=0)
    ema_decay: float = Field(
        0.995, ge=0, lt=1, description="decay of an exponential moving average of the U-Net's weights, updated "
        "every step (warm-up: min(decay, (1 + n) / (10 + n)) at update n); the saved prior, which the supports "
        "and the planner sample from, is the average (Diffuser and Decision Diffuser: 0.995). 0 = off: the last "
        "optimizer weights")


class EnergyConfig(_Strict):
    """Intermediate energy f_eta(z_k, s_1, k) and how it is trained."""

    target: Literal["q_sum", "return"] = Field(
        "q_sum", description="q_sum: E = -sum_t Q(s_t, a_t) over the window (the paper); return: E = -G_1, the "
        "discounted reward-to-go from the window's start to the episode's end (Diffuser's value)"
    )
    loss: Literal["contrastive", "emse", "mse"] = Field(
        "contrastive", description="contrastive (eq. 8, exact); emse and mse are the inexact baselines"
    )
    hidden: int = Field(256, gt=0, description="MLP width (paper: 256)")
    layers: int = Field(4, gt=0, description="MLP depth (paper: 4)")
    lr: float = Field(3e-4, gt=0)
    batch_size: int = Field(256, gt=0, description="initial states per step; each carries support_size latents")
    steps: int = Field(20000, gt=0)
    scale: float = Field(1.0, ge=0, description="energy-guidance scale on grad f_eta at sampling time")


class BCConfig(_Strict):
    """The behavior-cloning baseline: CORL's BC (an MLP s -> a, 2 x 256 ReLU, Adam 3e-4, batch 256, MSE on
    standardized actions), trained until its loss has converged (`steps` is sized for that per preset; the
    manifest records the loss curve and whether the last 20% of training still improved it by > 2%)."""

    hidden: int = Field(256, gt=0, description="MLP width (CORL: 256)")
    layers: int = Field(2, gt=0, description="hidden layers (CORL: 2)")
    lr: float = Field(3e-4, gt=0)
    batch_size: int = Field(256, gt=0)
    steps: int = Field(100000, gt=0, description="gradient steps (CORL: 1e6 on D4RL's 1-2M transitions)")


class CriticConfig(_Strict):
    """IQL's critic of real (s, a) pairs (Kostrikov et al., 2022), fitted on the data's transitions for
    `planning.selection=critic` (beyond the paper). IQL's D4RL locomotion hyperparameters, fewer steps."""

    hidden: int = Field(256, gt=0, description="MLP width of Q1, Q2 and V (IQL: 256)")
    layers: int = Field(2, gt=0, description="hidden layers (IQL: 2)")
    lr: float = Field(3e-4, gt=0)
    batch_size: int = Field(256, gt=0)
    steps: int = Field(30000, gt=0, description="gradient steps (IQL: 1e6 on D4RL's 1-2M transitions)")
    expectile: float = Field(0.7, gt=0, lt=1, description="tau of V's expectile regression on Q (IQL: 0.7)")
    discount: float = Field(0.99, gt=0, le=1)
    target_update: float = Field(0.005, gt=0, le=1, description="Polyak rate of the target Qs")


class SamplerConfig(_Strict):
    """How plans are drawn from the trained prior (one model serves every sampler).

    The default is DPM-Solver++ with 10 steps, temperature applied to x_T: with the default K = 100 it plans
    ~9x faster than the paper's DDPM-100 with a score inside DDPM-100's 95% CI on the built-in maze
    (bench/RESULTS.md). The `paper` preset keeps the paper's DDPM over all K steps; `small` (K = 20) uses
    DDPM over its 20 steps, which planned better there than 10 DPM-Solver++ steps.
    """

    name: Literal["ddpm", "ddim", "dpm_solver"] = "dpm_solver"
    steps: Optional[int] = Field(10, gt=0, description="sampling steps; None = diffusion_steps")


class PlanningConfig(_Strict):
    """How one decision turns sampled plans into an action. The defaults are the paper's planner: one sample,
    its first action f(real s_t, planned s_t+1). More candidates is selection among plans, beyond the paper:
    its rows are labelled `latentdiffuser+select` / `prior+select`, never mixed into the paper's bars."""

    candidates: int = Field(1, ge=1, description="N plans sampled per decision (one batched call); 1 = the paper")
    selection: Literal["argmin", "resample", "critic"] = Field(
        "argmin", description="with N > 1, which plan is executed: argmin = the lowest decoded energy E (the "
        "codec's -sum_t Q, not f_eta); resample = one drawn with probability softmax(-beta E), self-normalized "
        "importance resampling toward Theorem 1's pi* when the candidates come from the prior; critic = the "
        "highest Q(s_t, a_t) of the real state and the plan's first action by an IQL critic fitted on the data "
        "(the `critic` stage; IDQL's selection)")
    selection_beta: Optional[float] = Field(
        None, ge=0, description="beta of `resample`'s softmax(-beta E); null = the trial's `beta` (0 = uniform)")
    execution: Literal["real_to_plan", "plan_pair", "real_plus_delta"] = Field(
        "real_to_plan", description="the pair the inverse dynamics f executes, at a decision and between replans "
        "(plan step i, real state s_t): real_to_plan = f(s_t, s^_i+1) (the paper's planner as ld runs it); "
        "plan_pair = f(s^_i, s^_i+1), the pair f is trained on, open loop; real_plus_delta = "
        "f(s_t, s_t + s^_i+1 - s^_i), the plan's step applied to the real state")


class EvalConfig(_Strict):
    """Evaluation by planning in the dataset's real environment."""

    episodes: int = Field(10, gt=0, description="episodes per trial, run batched in one vector env")
    max_steps: Optional[int] = Field(None, gt=0, description="cap on episode length; None = the env's own")
    replan_every: int = Field(1, gt=0, description="receding-horizon replanning interval in env steps")
    bc_baseline: bool = Field(True, description="also train and evaluate a behavior-cloning policy (`bc`) on the "
                              "same data, so every score has an imitation baseline beside it")
    fast: Union[bool, Literal["auto", "eager", "graph", "compile"]] = Field(
        False, description="plan through the static path (`ld.planning.fast`: fixed shapes, one CUDA graph per "
        "batch size on a GPU; the same numbers as the reference path on CPU): false, true (= auto), or a mode")


class TrainConfig(_Strict):
    """Where training runs; used by the Ray Train wrapper, ignored by the in-process path."""

    device: str = Field("cpu", description="'cpu', 'cuda' or 'auto'")
    num_workers: int = Field(1, gt=0)
    use_gpu: Union[bool, Literal["auto"]] = Field(
        False, description="sweep trials as Ray Train worker groups with one GPU per worker: true, false, or 'auto' "
        "= when the cluster has GPUs (the paper preset); `latentdiffuser run` uses `device` instead")
    log_every: int = Field(200, gt=0)
    cpu_threads: Optional[int] = Field(
        None, ge=0, description="torch intra-op threads on CPU. null = what the process was given: "
        "$OMP_NUM_THREADS if set (Ray sets it to a trial's CPUs, so a sweep running one trial per core keeps 1), "
        "else every core (a lone `latentdiffuser run`: 1.5x faster on 2 cores than 1 thread); 0 = torch's default")


class Config(_Strict):
    """One trial of LatentDiffuser (or of one of its modeling selections)."""

    dataset: str = Field("builtin:pointmaze-umaze", description="HDF5 path, minari:<id> or builtin:<name>")
    seed: int = Field(0, ge=0)
    modeling: Literal["latent", "raw", "skill"] = Field(
        "latent", description="latent: the method; raw: diffusion over raw (s, a) windows; skill: no r, G tokens"
    )
    latent_step: int = Field(3, gt=0, description="L: raw steps per latent action (TAP's 3; not in the paper)")
    horizon: int = Field(24, gt=0, description="T: raw window length; N = T / L latent actions")
    diffusion_steps: int = Field(100, gt=0, description="K (paper: 100)")
    beta: float = Field(3.0, ge=0, description="inverse temperature of the energy (paper: 3; 0 = no guidance)")
    guidance_scale: float = Field(1.2, ge=0, description="w of classifier-free guidance (paper: 1.2-1.8)")
    temperature: float = Field(0.5, ge=0, le=1, description="alpha, low-temperature sampling (paper: 0.5)")
    support_size: int = Field(16, gt=1, description="M support latents per initial state (paper: 16 / 32)")
    gamma: float = Field(0.99, gt=0, le=1, description="discount of the reward-to-go G_t")
    return_bootstrap: Literal["none", "tail_mean"] = Field(
        "none", description="what G_t counts past the end of an episode cut by a time limit or the end of the "
        "data (never past a terminal): none = nothing, so G falls with time-to-go near the cut, which the state "
        "does not show (Diffuser, TAP); tail_mean = the episode's mean reward over its last 1 / (1 - gamma) "
        "steps, forever, i.e. that mean / (1 - gamma): the same behavior going on at its recent pace")
    support_from: Literal["cfg", "mu"] = Field(
        "cfg", description="the prior the support latents are drawn from: cfg = with the trial's classifier-free "
        "guidance w (ld's choice so far); mu = w = 1, the conditional prior itself, the behavior distribution "
        "mu(z | s_1) the contrastive objective (QGPO / CEP) assumes")
    max_support_states: Optional[int] = Field(
        2000, gt=0, description="cap on the dataset states s_1 that get support latents (a random subset); null = "
        "every state, as the paper does")
    vae: VAEConfig = Field(default_factory=VAEConfig)
    prior: PriorConfig = Field(default_factory=PriorConfig)
    energy: EnergyConfig = Field(default_factory=EnergyConfig)
    bc: BCConfig = Field(default_factory=BCConfig)
    critic: CriticConfig = Field(default_factory=CriticConfig)
    sampler: SamplerConfig = Field(default_factory=SamplerConfig)
    planning: PlanningConfig = Field(default_factory=PlanningConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)

    @model_validator(mode="after")
    def _consistent(self) -> "Config":
        if self.modeling != "raw" and self.horizon % self.latent_step:
            raise ValueError(
                f"horizon ({self.horizon}) must be a multiple of latent_step ({self.latent_step}); "
                f"allowed latent_step values for this horizon: "
                f"{[d for d in range(1, self.horizon + 1) if self.horizon % d == 0]}"
            )
        if self.return_bootstrap != "none" and self.gamma >= 1:
            raise ValueError(
                f"return_bootstrap={self.return_bootstrap} needs gamma < 1 (an undiscounted tail is infinite); "
                f"set gamma below 1 or return_bootstrap=none"
            )
        if self.sampler.steps is not None and self.sampler.steps > self.diffusion_steps and (
            "steps" in self.sampler.model_fields_set
        ):
            raise ValueError(
                f"sampler.steps ({self.sampler.steps}) cannot exceed diffusion_steps ({self.diffusion_steps}); "
                f"set sampler.steps to at most {self.diffusion_steps}, or null for all K steps"
            )
        return self

    @property
    def guided(self) -> bool:
        """beta = 0 is the unguided prior: no energy model is trained and planning samples the prior alone.
        The one place this rule lives (the stage DAG, the planner and the evaluation variants read it)."""
        return self.beta > 0

    @property
    def n_latents(self) -> int:
        """N = T / L latent actions per plan (T for raw modeling, which has no latent)."""
        return self.horizon if self.modeling == "raw" else self.horizon // self.latent_step

    @property
    def sampling_steps(self) -> int:
        """Network evaluations per plan: sampler.steps, capped at K (the default 10 on a K < 10 model)."""
        return min(self.sampler.steps or self.diffusion_steps, self.diffusion_steps)

    def flat(self) -> dict[str, Any]:
        """Dotted-key view used for Parquet columns and manifests (`energy.loss`, `vae.steps`, ...)."""
        return flatten(self.model_dump())


# ----------------------------------------------------------------------------------------------------
# building a Config from layers


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def preset(name: str) -> dict[str, Any]:
    """The raw override dict of a preset (`ld/presets/<name>.yaml`)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; allowed: {', '.join(PRESETS)}")
    text = resources.files("ld").joinpath("presets", f"{name}.yaml").read_text()
    return yaml.safe_load(text) or {}


def _parse_value(raw: str) -> Any:
    # YAML scalars: "3" -> 3, "1e-4" -> 1e-4 (YAML 1.1 needs the dot, so try float too), "null", "[1,2]".
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """`["energy.loss=emse", "beta=0"]` -> nested dict."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {key}: {p} is not a section")
        node[parts[-1]] = _parse_value(raw)
    return out


def read_yaml(path: str | Path, what: str = "config file") -> Any:
    """Parse a YAML file, or raise one ConfigError naming the file (missing / not YAML)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what} not found: {p}")
    try:
        return yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{what} {p} is not valid YAML: {e}") from None


def load_yaml(path: str | Path) -> dict[str, Any]:
    """A config file as a layer (its optional `preset:` key included)."""
    data = read_yaml(path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of fields, got {type(data).__name__}")
    return data


def _explain(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"]) or "config"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            parent = e["loc"][:-1]
            model: Any = Config
            for p in parent:
                model = model.model_fields[p].annotation
            allowed = ", ".join(sorted(model.model_fields))
            lines.append(f"{loc}: unknown field; allowed here: {allowed}")
            continue
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        got = e.get("input")
        got_s = "" if isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"{loc}: {msg}{got_s}")
    return "invalid config: " + "; ".join(lines)


def build(overrides: dict[str, Any] | None = None, preset_name: str | None = None) -> Config:
    """Defaults <- preset <- the preset's layer for the dataset's task family <- overrides, validated.

    A preset's `families:` maps a task family (`ld.data.families.task_family` of `dataset`) to settings that
    differ by family, e.g. `small` trains the maze's prior shorter than locomotion's; whatever the user sets
    (file, `--set`, a sweep axis) still wins, and the resolved values are what the trial records."""
    layers: dict[str, Any] = {}
    if preset_name:
        layers = preset(preset_name)
    by_family = layers.pop("families", None) or {}
    overrides = overrides or {}
    if by_family:
        dataset = overrides.get("dataset", layers.get("dataset", Config.model_fields["dataset"].default))
        layers = deep_merge(layers, by_family.get(task_family(str(dataset)), {}))
    if overrides:
        layers = deep_merge(layers, overrides)
    try:
        return Config.model_validate(layers)
    except ValidationError as e:
        raise ConfigError(_explain(e)) from None


def resolve(
    config_file: str | Path | None = None,
    preset_name: str | None = None,
    sets: list[str] | None = None,
    default_preset: str | None = None,
) -> Config:
    """The CLI's view: `preset_name` wins over the file's own `preset:`, which wins over `default_preset`."""
    file_layer = load_yaml(config_file) if config_file else {}
    file_preset = file_layer.pop("preset", None)
    overrides = deep_merge(file_layer, parse_overrides(sets or []))
    return build(overrides, preset_name or file_preset or default_preset)


def subset(cfg: Config, keys: list[str]) -> dict[str, Any]:
    """The config fields one stage reads (dotted keys, or a section name for all of it)."""
    flat = cfg.flat()
    out: dict[str, Any] = {}
    for k in keys:
        if k in flat:
            out[k] = flat[k]
        else:
            matched = {fk: fv for fk, fv in flat.items() if fk.startswith(k + ".")}
            if not matched:
                raise KeyError(f"no config field {k!r}")
            out.update(matched)
    return out

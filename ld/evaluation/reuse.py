"""Baselines are evaluated once per policy, not once per trial.

A trial's unguided prior (`prior`, beta = 0) is the same policy for every trial that shares its codec and
prior artifacts: every beta of a Figure 5 panel, every energy target and energy loss of Figure 3. Its BC
baseline is the same policy for every trial of a (dataset, seed). Evaluating them again in each sibling
trial re-runs identical episodes: same artifacts, same planning settings, same planner and environment seeds.
So a baseline's episodes are stored in the artifact store (`<store>/eval/<key>/episodes.json`) under a key of
exactly what decides them, and a sibling trial reads them back instead of stepping the environment again.
The method itself (`latentdiffuser`) is evaluated in every trial: it is what the trials differ in.

What the key covers, and why:
- the variant and the artifact keys of the policy's stages (codec + prior, + the critic when it selects, or
  BC): these already cover the
  data fingerprint, the seed, the stage fields and the stage code versions;
- the fields read while the policy acts and is scored (`EVAL_READS`): the planner's sampling settings, its
  candidates, selection and execution pair (`planning`; with candidates, the trial's beta too), the
  receding-horizon interval, the episode count and step limit, the energy target the plan's energy is
  recorded under;
- the seed (planner generator and environment seeds) and the device type (CPU and CUDA sample differently);
- a fingerprint of the code that plans and steps the environments (`EVAL_CODE`), computed from the modules
  themselves, so an edit of the planner or the rollout re-evaluates rather than serving episodes of old code.

Stored through the store's own `build` (temp directory + rename or manifest-last upload, a lock or lease per
key), so two trials that need the same baseline at once evaluate it once, and a trial killed mid-evaluation
leaves nothing behind. `LD_REUSE_EVAL=0` turns reuse off (every trial evaluates its baselines itself).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from typing import Any, Callable

from ld.config import Config, subset
from ld.evaluation.rollout import EpisodeResult
from ld.stages import dag
from ld.stages.artifact import Artifact, ArtifactStore, ArtifactWriter

STAGE = "eval"
VERSION = 1
REUSED_VARIANTS = ("prior", "prior+select", "bc")
_PRIOR_READS = ("guidance_scale", "temperature", "sampler", "energy.target", "planning", "eval.episodes",
                "eval.max_steps", "eval.replan_every", "eval.fast")
EVAL_READS = {
    "prior": _PRIOR_READS,
    # the prior selecting among candidates: resample's beta defaults to the trial's
    "prior+select": (*_PRIOR_READS, "beta"),
    "bc": ("eval.episodes", "eval.max_steps"),
}
EVAL_CODE = ("ld.evaluation.rollout", "ld.envs", "ld.planning.planner", "ld.planning.plan", "ld.planning.fast",
             "ld.diffusion.guided", "ld.diffusion.samplers", "ld.diffusion.schedule", "ld.stages.codec",
             "ld.stages.vae", "ld.stages.prior", "ld.stages.bc", "ld.stages.critic", "ld.models.critic",
             "ld.models.vae", "ld.models.transformer",
             "ld.models.mlp", "ld.models.unet", "ld.data.normalizer", "ld.data.types")


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    return dag.modules_fingerprint(EVAL_CODE, "baseline evaluation")


def enabled() -> bool:
    return os.environ.get("LD_REUSE_EVAL", "1").strip().lower() not in ("0", "false", "no", "off")


def policy_stages(cfg: Config, variant: str) -> list[str]:
    """The artifacts (stage names) the variant's policy is made of."""
    if variant in ("prior", "prior+select"):
        names = [dag.stage_for(cfg, "codec").name, dag.stage_for(cfg, "prior").name]
        return names + [dag.CRITIC.name] if dag.uses_critic(cfg) else names
    if variant == "bc":
        return [dag.BC.name]
    raise ValueError(f"only {REUSED_VARIANTS} are reused across trials, not {variant!r}")


def eval_key(cfg: Config, variant: str, artifacts: dict[str, Artifact], device_type: str) -> tuple[str, dict]:
    """(key, manifest) of one baseline evaluation: everything that decides its episodes, nothing else."""
    spec: dict[str, Any] = {
        "variant": variant,
        "artifacts": {name: artifacts[name].key for name in policy_stages(cfg, variant)},
        "config": subset(cfg, list(EVAL_READS[variant])),
        "seed": cfg.seed,
        "device": device_type,
        "code": code_fingerprint(),
        "version": VERSION,
    }
    blob = json.dumps(spec, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16], spec


def evaluate_once(store: ArtifactStore, cfg: Config, variant: str, artifacts: dict[str, Artifact],
                  device_type: str, run: Callable[[], list[EpisodeResult]]) -> tuple[list[EpisodeResult], str, bool]:
    """The variant's episodes -> (results, key, reused): read from the store if a sibling trial already
    evaluated this policy, else `run()` them and publish them for the next one."""
    key, spec = eval_key(cfg, variant, artifacts, device_type)

    def produce(out: ArtifactWriter) -> None:
        out.save_json("episodes", [r.to_dict() for r in run()])

    # the base build on purpose: a worker group evaluates on rank 0 alone, so no collective may wait on it
    art, reused = ArtifactStore.build(store, STAGE, key, spec, produce)
    return [EpisodeResult(**r) for r in art.load_json("episodes")], key, reused

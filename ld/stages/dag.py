"""The stage DAG of a trial, declared once: data -> codec -> prior -> support -> energy -> evaluate (+ BC).

    role      latent / skill   raw            reads (besides seed and the dataset)         upstream
    codec     vae              raw_dynamics   the window and the VAE / heads               -
    prior     prior            raw_prior      K and the U-Net                              codec
    support   support          raw_support    M, the states sampled, w                     prior
    energy    energy           raw_energy     beta and the energy model                    codec, prior, support
    bc        bc               bc             the BC fields                                -
    critic    critic           critic         the critic fields (planning.selection=critic) -

(`python -m ld.stages.dag` prints the full declaration; `docs/stages.md` is that output, checked by a test.)

Everything that needs the DAG reads the objects below: `ld.pipeline` walks `plan(cfg)`, the artifact key is computed
from each `Stage`'s own `reads`, `version` and upstream, the Ray layer asks `Stage.trains` (a stage that only
samples runs on one rank), `latentdiffuser run` prints the plan. A modeling selection swaps whole stage objects
(`SELECTIONS`); beta = 0 drops the support and energy stages (`Config.guided`); `eval.bc_baseline` adds BC;
`planning.selection=critic` with N > 1 candidates adds the critic. The math of each stage is in its own module
(`ld.stages.vae`, `.prior`, `.support`, `.energy`, `.bc`, `.critic`).

Stale reuse is made impossible two ways, both enforced by `tests/test_stage_dag.py`: every config field a
stage's `produce` reads must be in its `reads` (or an upstream's; the test records the reads of a real run),
and the code a stage runs (`code`: its modules) is fingerprinted per `version` in `fingerprints.json`, so a
change of a stage's math fails the test until its version is bumped (`python -m ld.stages.dag --record` then
records the new version).
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import importlib.util
import io
import json
import sys
import tokenize
from dataclasses import dataclass
from pathlib import Path

from ld.config import Config
from ld.stages import bc, critic, energy, prior, support, vae
from ld.stages.common import Stage

FINGERPRINTS = Path(__file__).with_name("fingerprints.json")

TRAINING = ("ld.stages.training",)
WINDOWS = ("ld.stages.data", "ld.data.windows", "ld.data.normalizer")

VAE = Stage(
    name=vae.NAME, role="codec", trains=True, upstream=(),
    reads=("modeling", "latent_step", "horizon", "gamma", "return_bootstrap", "vae"),
    # 2: r and G are reconstructed from (s_1, z) by the decoder (was: a value head on the true (s, a))
    # 3: the reconstruction covers the decoded actions f(s_hat_t, s_hat_t+1) (the paper's a_hat_t)
    # 4: `return_bootstrap`; the separate inverse-dynamics loop (vae.id_steps) runs first and f is frozen
    version=4,
    code=("ld.stages.vae", "ld.stages.codec", "ld.models.vae", "ld.models.transformer", "ld.models.mlp",
          *WINDOWS, *TRAINING),
    produce=vae.produce_vae,
    summary="trajectory VAE: windows of T steps -> N = T / L latent actions; inverse dynamics; r, G decoded from z",
)
RAW_DYNAMICS = Stage(
    name=vae.RAW_NAME, role="codec", trains=True, upstream=(),
    reads=("horizon", "gamma", "return_bootstrap", "vae.id_hidden", "vae.id_layers", "vae.value_hidden",
           "vae.value_layers", "vae.lr", "vae.batch_size", "vae.steps"),
    version=3,  # 3: `return_bootstrap`
    code=("ld.stages.vae", "ld.stages.codec", "ld.models.mlp", *WINDOWS, *TRAINING),
    produce=vae.produce_raw_dynamics,
    summary="raw selection: no latent; inverse dynamics and reward/return heads on raw windows",
)

_PRIOR = dict(
    role="prior", trains=True, upstream=("codec",), reads=("diffusion_steps", "prior"),
    # 2: the standardizer records the data range used to clip x0 predictions; 3: targets encoded with the mask
    # 4: `model` is an EMA of the weights (prior.ema_decay, default 0.995), the last weights are `model_online`
    # 5: its windows' G follow `return_bootstrap` (read through the codec's key; unchanged at `none`)
    version=5,
    code=("ld.stages.prior", "ld.models.unet", "ld.diffusion.schedule", "ld.diffusion.losses", *WINDOWS,
          *TRAINING),
    produce=prior.produce,
    summary="score-based prior p(x | s_1): temporal U-Net, eps-prediction over K steps, s_1 dropped for CFG",
)
PRIOR = Stage(name="prior", **_PRIOR)
RAW_PRIOR = Stage(name="raw_prior", **_PRIOR)

_SUPPORT = dict(
    role="support", trains=False, upstream=("prior",),
    reads=("support_size", "max_support_states", "guidance_scale", "support_from"),
    version=3,  # 2: `support_from` (mu: w = 1); 3: windows keyed by `return_bootstrap` (unchanged at `none`)
    code=("ld.stages.support", "ld.diffusion.guided", "ld.diffusion.samplers", "ld.diffusion.schedule",
          "ld.stages.data"),
    produce=support.produce,
    summary="M prior samples (DDPM, temperature 1) per sampled initial state: the contrastive supports",
)
SUPPORT = Stage(name="support", **_SUPPORT)
RAW_SUPPORT = Stage(name="raw_support", **_SUPPORT)

_ENERGY = dict(
    role="energy", trains=True, upstream=("codec", "prior", "support"),
    reads=("beta", "energy.target", "energy.loss", "energy.hidden", "energy.layers", "energy.lr",
           "energy.batch_size", "energy.steps"),
    # 2: E = -sum_t Q (was the window mean), "return" = -G_1, E-MSE without shift or clipping, ESS diagnostics
    version=2,
    code=("ld.stages.energy", "ld.models.energy", "ld.stages.codec", "ld.diffusion.schedule", *TRAINING),
    produce=energy.produce,
    summary="intermediate energy f(x_k, s_1, k): contrastive (or E-MSE / MSE) fit to the supports' energies",
    # the contrastive target's effective sample size (fraction of M); where E-MSE stopped being finite
    diagnostics=("target_ess_mean", "target_ess_p10", "nonfinite_step", "final_loss"),
)
ENERGY = Stage(name="energy", **_ENERGY)
RAW_ENERGY = Stage(name="raw_energy", **_ENERGY)

BC = Stage(
    name=bc.NAME, role="bc", trains=True, upstream=(), reads=("bc",),
    version=4,  # 2: CORL-style BC with its own fields on transitions; 3, 4: stops once converged
    code=("ld.stages.bc", "ld.models.mlp", "ld.data.normalizer", *TRAINING),
    produce=bc.produce,
    summary="behavior cloning baseline (CORL's BC), trained until its loss converges",
    diagnostics=("final_loss", "converged"),
)

CRITIC = Stage(
    name=critic.NAME, role="critic", trains=True, upstream=(), reads=("critic",),
    version=1,
    code=("ld.stages.critic", "ld.models.critic", "ld.models.mlp", *TRAINING),
    produce=critic.produce,
    summary="IQL critic Q(s, a) of real pairs, fitted on the data (for planning.selection=critic)",
    diagnostics=("final_loss",),
)


@dataclass(frozen=True)
class Selection:
    """The stages that fill the roles codec, prior, support, energy for one modeling selection."""

    codec: Stage
    prior: Stage
    support: Stage
    energy: Stage


SELECTIONS: dict[str, Selection] = {
    "latent": Selection(VAE, PRIOR, SUPPORT, ENERGY),
    "skill": Selection(VAE, PRIOR, SUPPORT, ENERGY),  # the VAE without r, G tokens (`modeling` is in its reads)
    "raw": Selection(RAW_DYNAMICS, RAW_PRIOR, RAW_SUPPORT, RAW_ENERGY),
}
ALL_STAGES: tuple[Stage, ...] = (VAE, RAW_DYNAMICS, PRIOR, RAW_PRIOR, SUPPORT, RAW_SUPPORT, ENERGY, RAW_ENERGY, BC,
                                 CRITIC)


def uses_critic(cfg: Config) -> bool:
    """Selection by the IQL critic needs its stage (with one candidate there is nothing to select)."""
    return cfg.planning.candidates > 1 and cfg.planning.selection == "critic"


def plan(cfg: Config) -> list[Stage]:
    """The stages this config walks, in dependency order."""
    sel = SELECTIONS[cfg.modeling]
    stages = [sel.codec, sel.prior]
    if cfg.guided:
        stages += [sel.support, sel.energy]
    if uses_critic(cfg):
        stages.append(CRITIC)
    if cfg.eval.bc_baseline:
        stages.append(BC)
    return stages


def stage_for(cfg: Config, role: str) -> Stage:
    """The stage that fills `role` for this config (e.g. the artifact name the planner's prior comes from)."""
    if role == "bc":
        return BC
    if role == "critic":
        return CRITIC
    return getattr(SELECTIONS[cfg.modeling], role)


def by_name(name: str) -> Stage:
    for s in ALL_STAGES:
        if s.name == name:
            return s
    raise KeyError(f"unknown stage {name!r}; stages: {', '.join(s.name for s in ALL_STAGES)}")


def closure_reads(stage: Stage, cfg: Config) -> set[str]:
    """The fields a stage's key covers: its own reads and, through their keys, its upstreams' (recursively)."""
    out = set(stage.reads)
    for role in stage.upstream:
        out |= closure_reads(stage_for(cfg, role), cfg)
    return out


# ----------------------------------------------------------------------------------------------------
# code fingerprints


def source_tokens(src: str) -> str:
    """The module's tokens without comments, docstrings, blank lines or layout: what the code does, not how
    it is written down (f-strings are re-joined so that Python 3.12's tokenizer gives the same text)."""
    docstrings = set()
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(
                    first.value.value, str):
                docstrings.add((first.lineno, first.col_offset))
    out: list[str] = []
    fstring: list[str] = []
    depth = 0
    for tok in tokenize.generate_tokens(io.StringIO(src).readline):
        name = tokenize.tok_name[tok.type]
        if name in ("FSTRING_START", "FSTRING_MIDDLE", "FSTRING_END") or depth:
            depth += name == "FSTRING_START"
            depth -= name == "FSTRING_END"
            fstring.append(tok.string)
            if depth == 0:
                out.append("".join(fstring))
                fstring = []
            continue
        if tok.type in (tokenize.COMMENT, tokenize.NL, tokenize.ENCODING, tokenize.ENDMARKER):
            continue
        if tok.type == tokenize.STRING and tok.start in docstrings:
            continue
        out.append("<indent>" if tok.type == tokenize.INDENT else tok.string)
    return " ".join(out)


def modules_fingerprint(modules: tuple[str, ...] | list[str], owner: str) -> str:
    """A hash of the tokens (`source_tokens`) of the named modules; `owner` names who asked, for the error."""
    h = hashlib.sha256()
    for module in sorted(modules):
        spec = importlib.util.find_spec(module)
        if spec is None or spec.origin is None:
            raise ModuleNotFoundError(f"{owner}: code module {module} not found")
        h.update(module.encode())
        h.update(source_tokens(Path(spec.origin).read_text()).encode())
    return h.hexdigest()[:16]


def code_fingerprint(stage: Stage) -> str:
    """A hash of the code of every module the stage runs (`Stage.code`)."""
    return modules_fingerprint(stage.code, f"stage {stage.name}")


def recorded_fingerprints() -> dict[str, dict[str, str]]:
    return json.loads(FINGERPRINTS.read_text()) if FINGERPRINTS.is_file() else {}


def fingerprint_problems() -> list[str]:
    """One line per stage whose code no longer matches what was recorded for its version."""
    table = recorded_fingerprints()
    problems = []
    for s in ALL_STAGES:
        now = code_fingerprint(s)
        was = table.get(s.name, {}).get(str(s.version))
        if was is None:
            problems.append(f"{s.name}: version {s.version} has no recorded fingerprint; record it with "
                            f"`python -m ld.stages.dag --record`")
        elif was != now:
            problems.append(f"{s.name}: its code ({', '.join(s.code)}) changed since version {s.version} was recorded "
                            f"({was} -> {now}); artifacts made by the old code must not be reused: bump its "
                            f"version in ld/stages/dag.py, then run `python -m ld.stages.dag --record`")
    return problems


def record() -> list[str]:
    """Record the fingerprint of every stage version not yet recorded; never overwrite a recorded one."""
    table = recorded_fingerprints()
    added, refused = [], []
    for s in ALL_STAGES:
        now = code_fingerprint(s)
        versions = table.setdefault(s.name, {})
        was = versions.get(str(s.version))
        if was is None:
            versions[str(s.version)] = now
            added.append(f"{s.name} v{s.version}")
        elif was != now:
            refused.append(s.name)
    if refused:
        raise SystemExit(f"not recorded: {', '.join(refused)} changed under an already recorded version; "
                         f"bump their version in ld/stages/dag.py first")
    FINGERPRINTS.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
    return added


# ----------------------------------------------------------------------------------------------------
# the declaration, for people


def describe() -> str:
    """The declared DAG as a Markdown table (docs/stages.md is this text)."""
    lines = ["| stage | role | selection | upstream | trains | version | reads (key) | what |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    extra = {BC.name: "bc baseline", CRITIC.name: "selection by critic"}  # stages outside the modeling selections
    for s in ALL_STAGES:
        sel = extra[s.name] if s.name in extra else ", ".join(m for m, v in SELECTIONS.items() if s in vars(v).values())
        lines.append(f"| `{s.name}` | {s.role} | {sel} | {', '.join(s.upstream) or '-'} | "
                     f"{'yes' if s.trains else 'no (rank 0 only)'} | {s.version} | "
                     f"{', '.join(f'`{r}`' for r in s.reads)} | {s.summary.replace('|', '&#124;')} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ld.stages.dag", description="the declared stage DAG")
    ap.add_argument("--record", action="store_true", help="record the code fingerprints of new stage versions")
    ap.add_argument("--check", action="store_true", help="exit 1 if a stage's code changed without a new version")
    args = ap.parse_args(argv)
    if args.record:
        added = record()
        print("recorded: " + (", ".join(added) if added else "nothing new"))
        return 0
    if args.check:
        problems = fingerprint_problems()
        print("\n".join(problems) if problems else "every stage's code matches its recorded version")
        return 1 if problems else 0
    sys.stdout.write(describe())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""How hard does each energy model push the sampler? The guidance term against the prior's own eps.

Energy guidance replaces the prior's eps with eps - scale * sigma_k * grad f(x_k, k) (`ld.diffusion.samplers.
energy_guided`). Its size relative to eps says whether the energy model nudges the prior's samples or
overrides them: near 1 the sampler follows f wherever f's gradient points, data manifold or not. This
measures, along the unguided prior's own DDPM path (classifier-free guidance at `--guidance-scale`, the
trial's defaults), the median over initial states of ||sigma_k grad f|| / ||eps|| at every step k, for every
energy model that shares one prior and support set -- Figure 3's energy-loss selections (contrastive, E-MSE,
MSE) and its return-as-energy target are exactly such siblings. It trains nothing: it reads the energy,
prior and support artifacts an artifact store (a sweep's `<storage>/artifacts`) already holds.

    python bench/guidance_ratio.py --artifacts runs/sweeps/artifacts \
        --datasets halfcheetah-medium-expert hopper-medium-expert pointmaze-umaze --seeds 0
    python bench/guidance_ratio.py --quick     # smoke preset, tiny maze data, contrastive and MSE (~20 s)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import finish, machine  # noqa: E402
from ld.diffusion.samplers import cfg_eps, sample  # noqa: E402
from ld.models.energy import energy_grad  # noqa: E402
from ld.stages import energy as energy_stage  # noqa: E402
from ld.stages import prior as prior_stage  # noqa: E402
from ld.stages.artifact import MANIFEST, Artifact, ArtifactError, ArtifactStore  # noqa: E402


def open_artifact(root: Path, stage: str, key: str) -> Artifact:
    """The store's own reader (a corrupt manifest is its clear error); a missing upstream is one too."""
    art = ArtifactStore(root).get(stage, key)
    if art is None:
        raise ArtifactError(f"artifact {stage}/{key} is not in {root} (an energy model's upstream was deleted?)")
    return art


def sibling_groups(root: Path, datasets: list[str] | None, seeds: list[int],
                   beta: float) -> dict[tuple, dict[str, str]]:
    """(dataset, seed, prior key, support key) -> {"<loss>/<target>": energy key}, for groups of two or more
    energy models at this beta (one alone has nothing to be compared with); datasets None = all of them."""
    groups: dict[tuple, dict[str, str]] = defaultdict(dict)
    for manifest in sorted((root / "energy").glob(f"*/{MANIFEST}")):
        m = json.loads(manifest.read_text())
        c, up = m["config"], m["upstream"]
        if datasets is not None and m["dataset"]["name"] not in datasets:
            continue
        if m["seed"] not in seeds or float(c["beta"]) != beta:
            continue
        groups[(m["dataset"]["name"], m["seed"], up["prior"], up["support"])][
            f"{c['energy.loss']}/{c['energy.target']}"] = m["key"]
    return {g: v for g, v in groups.items() if len(v) > 1}


@torch.no_grad()
def measure(root: Path, prior_key: str, support_key: str, energies: dict[str, str], *, states: int,
            guidance_scale: float, seed: int) -> dict:
    prior = prior_stage.load(open_artifact(root, "prior", prior_key))
    support = open_artifact(root, "support", support_key).load("support")
    gen = torch.Generator().manual_seed(seed)
    pick = torch.randperm(support["states"].shape[0], generator=gen)[:states]
    cond = support["states"][pick]
    models = {name: energy_stage.load(open_artifact(root, "energy", key)) for name, key in energies.items()}
    base = cfg_eps(prior, cond, guidance_scale)
    ratios: dict[str, dict[int, float]] = {name: {} for name in models}

    def eps_fn(x, k):  # the unguided path; each model's term is measured where the prior actually goes
        eps = base(x, k)
        _, sigma = prior.schedule.alpha_sigma(k)
        norm = eps.flatten(1).norm(dim=1)
        for name, model in models.items():
            term = sigma.to(x.dtype).view(-1, 1) * energy_grad(model, x, cond, k).flatten(1)
            ratios[name][int(k[0])] = float((term.norm(dim=1) / norm).median())
        return eps

    sample(eps_fn, (len(cond), *prior.x_shape), prior.schedule, generator=gen, clip_x0=prior.standardizer.bounds())
    out = {}
    for name, by_k in ratios.items():
        ks = sorted(by_k, reverse=True)
        out[name] = {"energy": energies[name], "ratio_by_k": {str(k): round(by_k[k], 4) for k in ks},
                     "max": round(max(by_k.values()), 4), "mean": round(sum(by_k.values()) / len(by_k), 4)}
    return out


def quick_store(tmp: Path) -> Path:
    """A smoke pipeline on a tiny maze, trained twice with different energy losses into one store."""
    from ld.config import resolve
    from ld.data.builtin import make
    from ld.pipeline import run_trial

    data = make("pointmaze-umaze", tmp / "umaze.hdf5", episodes=6, progress=False)
    for loss in ("contrastive", "mse"):
        cfg = resolve(None, "smoke", [f"dataset={data}", f"energy.loss={loss}"])
        run_trial(cfg, tmp / "artifacts", progress=False, evaluate=False)
    return tmp / "artifacts"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--artifacts", type=Path, default=Path("runs/sweeps/artifacts"), help="an artifact store root")
    ap.add_argument("--datasets", nargs="+", help="dataset names, as manifests record them (default: all)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds of the artifacts")
    ap.add_argument("--beta", type=float, default=3.0, help="the energy models' beta")
    ap.add_argument("--states", type=int, default=32, help="initial states (from the support set) per group")
    ap.add_argument("--guidance-scale", type=float, default=1.2, help="classifier-free guidance w of the path")
    ap.add_argument("--quick", action="store_true", help="smoke preset, tiny maze data, contrastive and MSE")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    torch.set_num_threads(1)
    report: dict = {"benchmark": "guidance_ratio", "machine": machine(), "beta": args.beta, "states": args.states,
                    "guidance_scale": args.guidance_scale, "path": "unguided prior, ddpm, all K steps"}
    if args.quick:
        args.artifacts, args.datasets, args.seeds = quick_store(Path(tempfile.mkdtemp(prefix="ld-bench-"))), None, [0]
    if not (args.artifacts / "energy").is_dir():
        raise SystemExit(f"guidance_ratio: no energy artifacts under {args.artifacts}; pass --artifacts "
                         f"<storage>/artifacts of a sweep that trained them")
    groups = sibling_groups(args.artifacts, args.datasets, args.seeds, args.beta)
    report["groups"] = []
    for (dataset, seed, prior_key, support_key), energies in sorted(groups.items()):
        print(f"[guidance_ratio] {dataset} seed {seed}: {', '.join(sorted(energies))}", file=sys.stderr, flush=True)
        report["groups"].append({"dataset": dataset, "seed": seed, "prior": prior_key, "support": support_key,
                                 "energies": measure(args.artifacts, prior_key, support_key, energies,
                                                     states=args.states, guidance_scale=args.guidance_scale,
                                                     seed=seed)})
    return finish(report, t0)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    raise SystemExit(main())

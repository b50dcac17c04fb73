"""Where does the planner lose to its behavior data? Ceilings, closed loop in the real environment, as JSON.

Per dataset and training seed, every stage is trained at the given preset (or reused from --out), and these
policies run the same episodes (the environment seeds of `ld.evaluation.rollout.evaluate`: each variant is
evaluated by it, so episode i of every variant starts from the same state):

- `codec_ceiling`: at each decision the real simulator is cloned (`ld.evaluation.clone`), the dataset's
  behavior policy is rolled forward from the clone for the window (T steps; plus `--return-steps` more for
  the reward-to-go the encoder reads, capped by the episode's end), that real future is encoded by the VAE,
  decoded, and executed as the planner executes a plan (the same inverse-dynamics pair, `planning.execution`,
  and the same replanning interval). It isolates the codec + inverse dynamics: a perfect prior that always
  sampled the behavior's own future would score this.
- `behavior_policy`: the same behavior policy run directly (no codec), on the same seeds: what the codec
  ceiling is read against (the data's mean comes from other starts and, for the maze, random goals).
- `prior_oracle`: N unguided prior plans per decision, each executed (first action, then tracked as the
  planner tracks) in its own copy of the simulator for the replan interval (`--oracle-horizon interval`) or
  the whole window (`window`); the one with the best true return is executed for real. It isolates what the
  prior's samples contain: selection by the truth among N of them. Ties (a sparse reward: every candidate
  0) keep the first candidate, i.e. a plain prior sample (`--oracle-ties energy`: the lowest decoded E among
  the tied); `oracle_tie_fraction` says how often every candidate tied.
- `prior_select_E`: `planning.candidates=N`, `planning.selection=argmin`, beta = 0: N prior plans, the one
  with the lowest decoded energy E (the paper's E, the codec's -sum Q; no f_eta). The planner's own path.
- `prior_select_Q`: `planning.selection=critic`: N prior plans, the one whose first action has the highest
  Q(s_t, a) by the IQL critic fitted on the data (`ld.stages.critic`; IDQL's selection, beyond the paper).
  The oracle also reports the critic's rank correlation with the true return (`oracle_critic_rank_corr`)
  and, with `--oracle-horizon window`, that of the true return of the executed interval alone
  (`oracle_interval_rank_corr`): how much of the window's ranking the steps actually executed decide.
- `guided`, `prior`, `bc`: the energy-guided planner, the unguided prior (one sample) and behavior cloning,
  exactly as `ld.pipeline.evaluate_trial` evaluates them; `behavior_data_mean`: the data's mean normalized
  return.

Behavior policies: built-in PointMaze data: the maze's waypoint controller with the data's action noise,
driving to random goal cells redrawn on arrival as the data was generated (`--maze-goal random`; `task`
drives to the evaluation goal instead); built-in locomotion data: the shipped TD3 actors (medium, expert,
medium-expert alternating by episode) with the data's N(0, 0.1) noise; while no policies ship, and for
medium-replay (a learning actor's stream) or a user's D4RL / Minari file, there is none: the codec ceiling
and behavior rows are skipped and `notes` says why.

Planning ms per decision: for the cloning variants it includes the simulator rollouts (behavior futures,
candidate executions), for the others the planner's batched call. Results are Parquet files under
--out/results/, one per (dataset, seed, variant, configuration), reused by a later run.

    python bench/planner_ceilings.py --datasets builtin:pointmaze-umaze --seeds 0 --candidates 16
    python bench/planner_ceilings.py --quick           # smoke preset, tiny maze data, 1 seed, 2 short episodes
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pandas as pd
import torch

from _common import finish, machine  # noqa: E402  (bench/ is on sys.path when run as a script)
from ld.analysis.stats import bootstrap_ci
from ld.config import Config, resolve
from ld.data import load_dataset
from ld.data.types import DataError, DatasetInfo
from ld.data.windows import episode_returns
from ld.evaluation.clone import copy_state, scratch_env
from ld.evaluation.rollout import evaluate
from ld.pipeline import evaluate_trial, planner_variants, setup_torch, train_stages, trial_id
from ld.planning.plan import Plan, decode_tail, to_plan
from ld.planning.planner import Planner, RecedingHorizonPolicy
from ld.stages import critic as critic_stage
from ld.stages import dag
from ld.stages.artifact import ArtifactStore

DEFAULT_DATASETS = ("builtin:pointmaze-umaze", "builtin:halfcheetah-medium-expert")
VARIANTS = ("guided", "prior", "prior_select_E", "prior_select_Q", "prior_oracle", "codec_ceiling", "behavior_policy",
            "bc")


# ---------------------------------------------------------------------------------------------------------
# behavior policies


class MazeBehavior:
    """The data's waypoint controller (ld.data.builtin.maze.generate): PD to the next cell of a shortest path
    towards a goal cell, N(0, 0.5) action noise, clipped; `random` goals are redrawn within 0.5 of arrival."""

    def __init__(self, env, info: DatasetInfo, goal_mode: str, rng: np.random.Generator):
        from ld.data.builtin import maze

        self.m = maze
        self.ctrl = maze.WaypointController(env.unwrapped.maze)
        self.goal_mode, self.rng = goal_mode, rng
        self.task_goal = tuple(info.extra["maze"]["goal_cell"])
        self.goal: Optional[tuple[int, int]] = None

    def _draw(self) -> tuple[int, int]:
        return self.ctrl.free[self.rng.integers(len(self.ctrl.free))]

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        if self.goal_mode == "task":
            goal = self.task_goal
        else:
            if self.goal is None:
                self.goal = self._draw()
            if np.linalg.norm(obs[:2] - self.ctrl.centers[self.goal]) <= self.m.GOAL_RADIUS:
                while True:
                    self.goal = self._draw()
                    if np.linalg.norm(obs[:2] - self.ctrl.centers[self.goal]) > self.m.GOAL_RADIUS:
                        break
            goal = self.goal
        a = self.ctrl.act(obs, goal) + self.m.ACTION_NOISE * self.rng.standard_normal(2)
        return np.clip(a, -1.0, 1.0)

    def snapshot(self):
        return self.goal, copy.deepcopy(self.rng.bit_generator.state)

    def restore(self, snap) -> None:
        self.goal, self.rng.bit_generator.state = snap[0], copy.deepcopy(snap[1])


class ActorBehavior:
    """A shipped TD3 actor with the locomotion data's Gaussian action noise (td3.behavior_action)."""

    def __init__(self, actor, noise: float, low: np.ndarray, high: np.ndarray, rng: np.random.Generator):
        self.actor, self.noise, self.low, self.high, self.rng = actor, noise, low, high, rng

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        a = self.actor(obs)
        if self.noise > 0:
            a = a + self.noise * self.high * self.rng.standard_normal(a.shape)
        return np.clip(a, self.low, self.high)

    def snapshot(self):
        return copy.deepcopy(self.rng.bit_generator.state)

    def restore(self, snap) -> None:
        self.rng.bit_generator.state = copy.deepcopy(snap)


BehaviorFactory = Callable[[int, object, int], object]  # (episode, env, env seed) -> behavior


def behavior_for(info: DatasetInfo, maze_goal: str) -> tuple[Optional[BehaviorFactory], str]:
    """The dataset's behavior policy as a factory of per-episode behaviors, or None and why there is none."""
    from ld.data.builtin import locomotion, maze

    builtin = info.source == f"builtin:{info.name}"
    if builtin and info.name in maze.MAZES and (info.extra or {}).get("maze"):
        return (lambda i, env, s: MazeBehavior(env, info, maze_goal, np.random.default_rng([s, 7]))), (
            f"behavior: the maze's waypoint controller, action noise {maze.ACTION_NOISE}, goals: {maze_goal}")
    if builtin and info.name in locomotion.DATASETS:
        env_name, kind = locomotion.DATASETS[info.name]
        if kind == "medium-replay":
            return None, (f"{info.name}: the data is a learning actor's replay stream, no single behavior policy: "
                          "codec ceiling skipped")
        if (info.extra or {}).get("policy_fast"):
            return None, f"{info.name}: fast-mode data (tiny test policies, not kept): codec ceiling skipped"
        from ld.data.builtin import behavior
        from ld.data.builtin.actor import NumpyActor

        try:
            pol = behavior.load_policies(env_name, int(info.seed or 0), Path(tempfile.gettempdir()))
        except DataError as e:
            return None, f"{info.name}: no behavior policies shipped yet, codec ceiling skipped ({e})"
        max_a = float(pol["max_action"])
        actors = {k: NumpyActor(pol[k], max_a) for k in ("medium", "expert")}
        which = {"medium": ("medium",), "expert": ("expert",), "medium-expert": ("medium", "expert")}[kind]

        def make(i, env, s):
            return ActorBehavior(actors[which[i % len(which)]], locomotion.ROLLOUT_NOISE, env.action_space.low,
                                 env.action_space.high, np.random.default_rng([s, 7]))

        return make, (f"behavior: the shipped TD3 {' / '.join(which)} actor(s) (alternating by episode), noise "
                      f"{locomotion.ROLLOUT_NOISE}")
    return None, (f"{info.source}: not built-in data, so no behavior policy is known (a D4RL / Minari file): "
                  "codec ceiling skipped")


# ---------------------------------------------------------------------------------------------------------
# policies that read the real simulators (evaluate() attaches its EnvBatch)


class BehaviorPolicy:
    """The behavior policy itself, one per episode, closed loop."""

    def __init__(self, factory: BehaviorFactory):
        self.factory = factory

    def attach(self, batch) -> None:
        self.behaviors = [self.factory(i, env, 10_007 + i) for i, env in enumerate(batch.envs)]

    def reset(self, n: int) -> None:
        pass

    def act(self, obs: np.ndarray, ids: np.ndarray) -> np.ndarray:
        return np.stack([self.behaviors[i](o) for i, o in zip(ids, obs)])


class _Cloning(RecedingHorizonPolicy):
    """The planner's receding-horizon execution, with plans made from clones of the live simulators."""

    def __init__(self, planner: Planner, replan_every: int, info: DatasetInfo, max_steps: Optional[int]):
        super().__init__(planner, replan_every)
        self.info, self.max_steps = info, max_steps
        self.batch = None
        self.pool: dict[tuple[int, int], object] = {}

    @property
    def interval(self) -> int:
        """Env steps a plan is executed for (RecedingHorizonPolicy's stale rule)."""
        return max(1, min(self.replan_every, self.planner.cfg.horizon - 1))

    def attach(self, batch) -> None:
        self.batch = batch

    def scratch(self, i: int, j: int = 0):
        if (i, j) not in self.pool:
            self.pool[(i, j)] = scratch_env(self.info, self.max_steps)
        return self.pool[(i, j)]

    def clone(self, i: int, j: int = 0):
        env = self.scratch(i, j)
        copy_state(self.batch.envs[i], env)
        return env


class CodecCeilingPolicy(_Cloning):
    """Plans = the behavior's real future from a clone, encoded and decoded by the VAE (see module doc)."""

    def __init__(self, planner, replan_every, info, max_steps, factory: BehaviorFactory, return_steps: int):
        super().__init__(planner, replan_every, info, max_steps)
        self.factory, self.return_steps = factory, int(return_steps)

    def attach(self, batch) -> None:
        super().attach(batch)
        self.behaviors = [self.factory(i, env, 10_007 + i) for i, env in enumerate(batch.envs)]

    def future(self, i: int, obs: np.ndarray) -> dict[str, np.ndarray]:
        """The behavior's next T steps from a clone of episode i, as one raw window (ld.data.windows' padding)."""
        cfg = self.planner.cfg
        T = cfg.horizon
        env, beh = self.clone(i), self.behaviors[i]
        states, actions, rewards, terminal, keep = [], [], [], False, None
        o = np.asarray(obs, dtype=np.float64)
        for k in range(T + self.return_steps):
            if k == self.interval:  # the behavior goes on from what the executed part of its future left it
                keep = beh.snapshot()
            a = beh(o)
            states.append(o)
            actions.append(a)
            o, r, te, tr, _ = env.step(a)
            rewards.append(float(r))
            if te or tr:
                terminal = bool(te)
                break
        beh.restore(keep if keep is not None else beh.snapshot())
        g = episode_returns(np.asarray(rewards), cfg.gamma, terminal, cfg.return_bootstrap)
        n = min(T, len(states))
        S = np.repeat(np.asarray(states[n - 1])[None], T, 0)
        S[:n] = states[:n]
        A = np.zeros((T, len(actions[0])))
        A[:n] = actions[:n]
        R, G = np.zeros(T), np.zeros(T)
        R[:n], G[:n] = rewards[:n], g[:n]
        mask = np.where(np.arange(T) < n, 1.0, float(terminal))
        return {"states": S, "actions": A, "rewards": R, "returns": G, "mask": mask}

    def plan_for(self, obs: np.ndarray, ids: np.ndarray) -> Plan:
        t0 = time.perf_counter()
        p = self.planner
        wins = [self.future(int(i), o) for i, o in zip(ids, obs)]
        batch = {}
        for f in ("states", "actions", "rewards", "returns"):
            x = p.normalizer.normalize(f, np.stack([w[f] for w in wins]).astype(np.float32))
            batch[f] = torch.as_tensor(x, dtype=torch.float32, device=p.device)
        batch["mask"] = torch.as_tensor(np.stack([w["mask"] for w in wins]), dtype=torch.float32, device=p.device)
        with torch.no_grad():
            x0 = p.codec.encode(batch)
            out = decode_tail(p.codec, x0, batch["states"][:, 0], p.cfg.energy.target, execution=p.execution)
        return to_plan(p.normalizer, out, t0)


class OraclePolicy(_Cloning):
    """N unguided prior plans per decision, each executed in its own clone; the best true return is executed."""

    def __init__(self, planner, replan_every, info, max_steps, candidates: int, horizon: str, ties: str = "first",
                 critic=None):
        super().__init__(planner, replan_every, info, max_steps)
        self.n, self.horizon, self.tie_break = int(candidates), horizon, ties
        self.critic = critic  # an IQLCritic (environment units), or None
        self.ties = 0
        self.choices = 0
        # per decision, Spearman of the true return with: -E (decoded), the critic's Q(s_t, first action), the
        # true return of the executed interval alone (the row columns `oracle_<name>_rank_corr`)
        self.rank_corr: dict[str, list[float]] = {name: [] for name in RANK_SCORES}

    def plan_for(self, obs: np.ndarray, ids: np.ndarray) -> Plan:
        t0 = time.perf_counter()
        p, N, B = self.planner, self.n, len(ids)
        plan = p.plan(np.repeat(obs, N, 0))  # rows b*N .. b*N + N - 1: observation b's candidates
        envs = [self.clone(int(i), j) for i in ids for j in range(N)]
        low, high = envs[0].action_space.low, envs[0].action_space.high
        H = self.interval if self.horizon == "interval" else max(1, p.cfg.horizon - 1)
        ret, ret_interval = np.zeros(B * N), np.zeros(B * N)
        alive = np.ones(B * N, dtype=bool)
        cur = np.repeat(np.asarray(obs, dtype=np.float64), N, 0)
        for k in range(H):
            if not alive.any():
                break
            a = plan.actions if k == 0 else p.track(cur, plan.states, np.full(B * N, k))
            a = np.clip(a, low, high)
            for r in np.flatnonzero(alive):
                o, rew, te, tr, _ = envs[r].step(a[r])
                cur[r], ret[r] = o, ret[r] + rew
                if k < self.interval:
                    ret_interval[r] += rew
                alive[r] = not (te or tr)
        R = ret.reshape(B, N)
        if self.tie_break == "energy":  # among the best true returns, the lowest decoded E
            E = np.where(R == R.max(1, keepdims=True), plan.energy.reshape(B, N), np.inf)
            best = E.argmin(1)
        else:
            best = R.argmax(1)  # the first candidate on ties: a plain prior sample
        self.ties += int((R.max(1) == R.min(1)).sum())
        E = np.asarray(plan.energy).reshape(B, N)
        Q = None
        if self.critic is not None:
            with torch.no_grad():
                Q = self.critic(torch.as_tensor(np.repeat(obs, N, 0), dtype=torch.float32),
                                torch.as_tensor(plan.actions, dtype=torch.float32)).numpy().reshape(B, N)
        scores = {"energy": -E, "critic": Q, "interval": ret_interval.reshape(B, N) if H > self.interval else None}
        for name, sc in scores.items():  # does each rank the candidates as their real outcome does?
            if sc is not None:
                self.rank_corr[name] += [c for b in range(B) for c in spearman(R[b], sc[b])]
        self.choices += B
        rows = np.arange(B) * N + best
        sel = torch.as_tensor(rows, device=plan.states.device)
        return Plan(actions=plan.actions[rows], states=plan.states[sel], predicted_return=plan.predicted_return[rows],
                    energy=plan.energy[rows], milliseconds=(time.perf_counter() - t0) * 1000.0)


RANK_SCORES = ("energy", "critic", "interval")  # what the oracle checks against the candidates' true return


def rank_column(score: str) -> str:
    return f"oracle_{score}_rank_corr"


def spearman(x: np.ndarray, y: np.ndarray) -> list[float]:
    """[Spearman's rank correlation of x and y], or [] where either is constant (no ranking to compare)."""
    if x.std() == 0 or y.std() == 0:
        return []
    return [float(np.corrcoef(np.argsort(np.argsort(x)), np.argsort(np.argsort(y)))[0, 1])]


# ---------------------------------------------------------------------------------------------------------
# the benchmark


def _frame(results, variant: str, seed: int) -> pd.DataFrame:
    return pd.DataFrame([r.to_dict() for r in results]).assign(variant=variant, seed=seed)


def _cached(path: Path, make: Callable[[], pd.DataFrame]) -> pd.DataFrame:
    if path.exists():
        return pd.read_parquet(path)
    df = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    df.to_parquet(tmp)
    os.replace(tmp, path)
    return df


def run_seed(spec: str, seed: int, args, notes: list[str]) -> pd.DataFrame:
    base = [f"dataset={spec}", f"seed={seed}", *args.sets]
    cfg = resolve(None, args.preset, base)
    one = resolve(None, args.preset, [*base, "planning.candidates=1"])  # the cloning variants' planner
    sel = resolve(None, args.preset, [*base, f"planning.candidates={args.candidates}", "planning.selection=argmin"])
    sel_q = resolve(None, args.preset, [*base, f"planning.candidates={args.candidates}", "planning.selection=critic"])
    device = setup_torch(cfg)
    ds = load_dataset(cfg.dataset)
    store = ArtifactStore(args.out / "artifacts")
    progress = not args.quick and sys.stderr.isatty()
    artifacts, records = train_stages(cfg, ds, store, device, progress)
    want = set(args.variants)
    critic = None
    if want & {"prior_select_Q", "prior_oracle"}:  # the critic stage (shared by every trial of the data and seed)
        artifacts_q, records_q = train_stages(sel_q, ds, store, device, progress)
        critic = critic_stage.load(artifacts_q[dag.CRITIC.name])
    stem = Path(spec).stem.replace(":", "_")
    res = args.out / "results"

    def path(tag: str, c: Config) -> Path:
        return res / f"{stem}-seed={seed}-{tag}-{trial_id(c)}.parquet"

    def log(df: pd.DataFrame, what: str) -> pd.DataFrame:
        print(f"[planner_ceilings] {spec} seed {seed} {what}: {df['normalized_score'].mean():.1f}",
              file=sys.stderr, flush=True)
        return df

    frames = []
    guided, prior = planner_variants(cfg)
    if want & {"guided", "prior", "bc"}:
        main = _cached(path("main", cfg), lambda: evaluate_trial(cfg, ds, artifacts, records, device,
                                                                 progress=progress, store=store))
        main = main.assign(variant=main["variant"].map({guided: "guided", prior: "prior", "bc": "bc"}))
        frames.append(log(main[main.variant.isin(want)], "guided / prior / bc"))
    _, prior_sel = planner_variants(sel)
    if "prior_select_E" in want:
        frames.append(log(_cached(path(f"select{args.candidates}", sel), lambda: evaluate_trial(
            sel, ds, artifacts, records, device, progress=progress, only={prior_sel}).assign(
                variant="prior_select_E")), "prior_select_E"))
    if "prior_select_Q" in want:
        frames.append(log(_cached(path(f"selectQ{args.candidates}", sel_q), lambda: evaluate_trial(
            sel_q, ds, artifacts_q, records_q, device, progress=progress, only={prior_sel}).assign(
                variant="prior_select_Q")), "prior_select_Q"))
    ep, cap = cfg.eval.episodes, cfg.eval.max_steps

    def oracle() -> pd.DataFrame:
        pl = Planner(one, artifacts, guided=False, device=device, seed=seed, fast=one.eval.fast)
        pol = OraclePolicy(pl, one.eval.replan_every, ds.info, cap, args.candidates, args.oracle_horizon,
                           args.oracle_ties, critic=critic)
        out = _frame(evaluate(pol, ds.info, ep, seed, cap, progress, desc="eval[oracle]"), "prior_oracle", seed)
        return out.assign(oracle_tie_fraction=pol.ties / max(1, pol.choices),
                          **{rank_column(k): float(np.mean(v)) if v else np.nan for k, v in pol.rank_corr.items()})

    # "-qi": the oracle also ranks by the critic and the interval (files written before lack those columns)
    tag = f"oracle{args.candidates}-{args.oracle_horizon}-{args.oracle_ties}-qi"
    if "prior_oracle" in want:
        frames.append(log(_cached(path(tag, one), oracle), "prior_oracle"))
    factory, note = behavior_for(ds.info, args.maze_goal)
    if note not in notes:
        notes.append(note)
    if factory is not None:
        def codec() -> pd.DataFrame:
            pl = Planner(one, artifacts, guided=False, device=device, seed=seed, fast=False)
            pol = CodecCeilingPolicy(pl, one.eval.replan_every, ds.info, cap, factory, args.return_steps)
            return _frame(evaluate(pol, ds.info, ep, seed, cap, progress, desc="eval[codec]"), "codec_ceiling", seed)

        if "codec_ceiling" in want:
            frames.append(log(_cached(path(f"codec-{args.maze_goal}-r{args.return_steps}", one), codec),
                              "codec_ceiling"))

        def behave() -> pd.DataFrame:
            results = evaluate(BehaviorPolicy(factory), ds.info, ep, seed, cap, progress, desc="eval[behavior]")
            return _frame(results, "behavior_policy", seed)

        if "behavior_policy" in want:
            frames.append(log(_cached(path(f"behavior-{args.maze_goal}", one), behave), "behavior_policy"))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame({"variant": pd.Series(dtype=str)})


def describe(g: pd.DataFrame, behavior: Optional[float]) -> dict:
    x = g["normalized_score"].to_numpy(dtype=float)
    lo, hi = bootstrap_ci(x)
    out = {"mean": round(float(x.mean()), 2), "ci95": [round(lo, 2), round(hi, 2)], "episodes": int(len(x)),
           "success": round(float(g["success"].mean()), 3),
           "plan_ms_per_decision": round(float(g["plan_ms_per_decision"].mean()), 2),
           "per_seed": {int(s): round(float(v), 2) for s, v in g.groupby("seed")["normalized_score"].mean().items()}}
    if behavior is not None:
        out["gap_to_behavior_data"] = round(float(behavior - x.mean()), 2)
    if "oracle_tie_fraction" in g and g["oracle_tie_fraction"].notna().any():
        out["oracle_tie_fraction"] = round(float(g["oracle_tie_fraction"].mean()), 3)
    for col in map(rank_column, RANK_SCORES):
        if col in g and g[col].notna().any():
            out[col] = round(float(g[col].mean()), 3)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=list(DEFAULT_DATASETS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--candidates", type=int, default=16,
                    help="N prior plans per decision (oracle, E and critic selection)")
    ap.add_argument("--oracle-horizon", choices=("interval", "window"), default="interval",
                    help="each candidate is executed for the replan interval or the whole window")
    ap.add_argument("--oracle-ties", choices=("first", "energy"), default="first",
                    help="among candidates tied on the true return: the first (a plain prior sample) or the lowest "
                         "decoded E")
    ap.add_argument("--return-steps", type=int, default=100,
                    help="behavior steps rolled past the window for the reward-to-go the encoder reads")
    ap.add_argument("--maze-goal", choices=("random", "task"), default="random",
                    help="the maze behavior's goals: random cells as in the data, or the evaluation goal")
    ap.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS),
                    help="run only these (e.g. the codec ceiling under another --set planning.execution)")
    ap.add_argument("--preset", default="small")
    ap.add_argument("--set", dest="sets", action="append", default=[])
    ap.add_argument("--out", type=Path, default=Path("runs/bench-ceilings"))
    ap.add_argument("--quick", action="store_true", help="smoke preset, tiny maze data, 1 seed, 2 short episodes")
    args = ap.parse_args(argv)
    if args.candidates < 1:
        ap.error("--candidates must be >= 1")

    if args.quick:
        from ld.data.builtin import make

        tmp = Path(tempfile.mkdtemp(prefix="ld-bench-"))
        path = make("pointmaze-umaze", tmp / "umaze.hdf5", episodes=6, progress=False)
        args.datasets, args.seeds, args.preset, args.out = [str(path)], [0], "smoke", tmp / "run"
        args.candidates, args.return_steps = 4, 20
        args.sets = [*args.sets, "eval.episodes=2", "eval.max_steps=40"]

    cfg0 = resolve(None, args.preset, list(args.sets))
    report: dict = {"benchmark": "planner_ceilings", "machine": machine(), "preset": args.preset, "sets": args.sets,
                    "datasets": list(args.datasets), "seeds": list(args.seeds), "episodes": cfg0.eval.episodes,
                    "episode_limit": cfg0.eval.max_steps, "candidates": args.candidates,
                    "oracle_horizon": args.oracle_horizon, "oracle_ties": args.oracle_ties,
                    "return_steps": args.return_steps,
                    "maze_goal": args.maze_goal, "variants": list(args.variants),
                    "replan_every": cfg0.eval.replan_every, "horizon": cfg0.horizon,
                    "results": {}}
    t_all = time.perf_counter()
    for spec in args.datasets:
        t0 = time.perf_counter()
        notes: list[str] = []
        try:
            df = pd.concat([run_seed(spec, s, args, notes) for s in args.seeds], ignore_index=True)
        except DataError as e:  # e.g. built-in locomotion data while no behavior policies ship
            report["results"][spec] = {"skipped": f"not run (no variant, the codec ceiling included): {e}",
                                       "notes": notes}
            print(f"[planner_ceilings] {spec}: {e}", file=sys.stderr, flush=True)
            continue
        behavior = None
        if "behavior_score" in df and df["behavior_score"].notna().any():
            behavior = float(df["behavior_score"].dropna().iloc[0])
        # the data's mean is over its own full episodes; a capped evaluation (`capped`) is normalized against
        # references prorated to its cap, so the gap to the data is only indicative then
        entry: dict = {"behavior_data_mean": None if behavior is None else round(behavior, 2),
                       "capped": bool(df["capped"].any()) if "capped" in df else None, "variants": {}}
        for v in VARIANTS:
            g = df[df.variant == v].sort_values(["seed", "episode"])
            if len(g):
                entry["variants"][v] = describe(g, behavior)
        entry["notes"] = notes
        entry["wall_time_s"] = round(time.perf_counter() - t0, 1)
        report["results"][spec] = entry
    return finish(report, t_all)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    raise SystemExit(main())

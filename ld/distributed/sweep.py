"""`latentdiffuser sweep`: a suite file -> Ray Tune trials (grid, or Optuna search) -> one Parquet file per trial.

One Tune trial = one config x one seed (`ld.suite.Trial`). Its function trainable (`sweep_trial`) walks the
stage DAG with the same stage functions as `latentdiffuser run`, against the content-addressed artifact store shared by
every trial (`<storage>/artifacts`): a stage that exists is reused, and two trials that need the same
missing stage serialize on that key's fcntl lock, so it is trained once. With `train.num_workers > 1` or
`train.use_gpu` the trial fits a Ray Train `TorchTrainer` (one worker group for all its stages); otherwise
it runs the very same phases in-process (one CPU).

The storage root (`--storage`: a path every node sees -- local disk, NFS, EFS -- or an object store URI,
s3:// or gs://, where leases from a Ray actor replace the lock: `ld.distributed.leases`) is laid out by
`ld.distributed.paths.StorageLayout`: artifacts/, results/<suite>/ (episode rows, _status/, _runs/, _best.json),
tune/<suite>/ (Tune's experiment state), train/ (Ray Train checkpoints), mlruns/.

Joining or starting Ray is `ld.distributed.connect`; the `--logger` callbacks are `ld.distributed.loggers`.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ld.distributed import sink
from ld.distributed.connect import init_ray
from ld.distributed.loggers import logger_callbacks
from ld.distributed.paths import DEFAULT_STORAGE, StorageLayout
from ld.distributed.trial import TrialSummary, TrialTask
from ld.storage import canonical, check_root
from ld.suite import SearchSpec


@dataclass
class SweepSpec:
    """What every trial of one sweep shares (shipped once to the trials through tune.with_parameters)."""

    suite: str
    storage: str
    trials: list[dict[str, Any]]  # {"config", "axis", "value"}; for searches: the base point(s)
    search: Optional[SearchSpec] = None  # the suite's validated `search:` section
    resume: bool = False
    checkpoint_every: int = 200
    kill_at: Optional[str] = None
    train_max_failures: int = 2
    run_id: str = ""  # this invocation of the sweep (status rows say which run wrote them)
    cluster_gpus: float = 0.0  # GPUs of the cluster when the sweep started (train.use_gpu = "auto")

    def tasks(self, params: dict[str, Any]) -> list[TrialTask]:
        """What one Tune trial runs: a grid trial is one config x one seed; a search sample is the sampled
        point on every seed of the scale (one result file per seed), so the searcher sees a seed mean."""
        from ld.config import Config, deep_merge
        from ld.suite import axis_override

        if self.search is None:  # "trial_index": Tune state saved before the param space carried the axes
            t = self.trials[int(params["point"]["index"] if "point" in params else params["trial_index"])]
            points = [(t["config"], t["axis"], t["value"])]
        else:
            over: dict[str, Any] = {}
            for k, v in sorted(params.items()):
                over = deep_merge(over, axis_override(k, v))
            value = ",".join(f"{k}={_fmt(v)}" for k, v in sorted(params.items()))
            points = [(Config.model_validate(deep_merge(t["config"], over)).model_dump(), "search", value)
                      for t in self.trials]  # the base point once per seed
        return [TrialTask(config=cfg, suite=self.suite, storage=self.storage, axis=axis, value=value,
                          checkpoint_every=self.checkpoint_every, kill_at=self.kill_at, cluster_gpus=self.cluster_gpus,
                          # a search's metric must be in every result Tune sees: losses only for grids
                          report_losses=self.search is None)
                for cfg, axis, value in points]


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


# What a grid trial shows in Tune's own views (progress table, ResultGrid.get_dataframe(), TensorBoard HParams):
# the paper's knobs, not an index. Column name -> the config's dotted key (Config.flat()).
SHOWN = {"seed": "seed", "dataset": "dataset", "modeling": "modeling", "latent_step": "latent_step",
         "horizon": "horizon", "beta": "beta", "diffusion_steps": "diffusion_steps",
         "energy_target": "energy.target", "energy_loss": "energy.loss"}


def tune_point(index: int, trial: dict[str, Any]) -> dict[str, Any]:
    """One grid point of the Tune param space: the trial's index (what the trainable runs) with its axis and the
    values of the paper's knobs."""
    from ld.config import flatten

    flat = flatten(trial["config"])
    point: dict[str, Any] = {"index": index, "axis": trial["axis"], "value": str(trial["value"])}
    for name, key in SHOWN.items():
        point[name] = Path(flat[key]).name if name == "dataset" and "/" in str(flat[key]) else flat[key]
    return point


def grid_param_space(trials: list[dict[str, Any]]) -> dict[str, Any]:
    """A grid over the trial list whose top-level keys are the knobs (each resolved from the trial's point), so
    Tune's table and dataframe have a `beta` or `latent_step` column rather than `trial_index`."""
    from ray import tune

    space: dict[str, Any] = {"point": tune.grid_search([tune_point(i, t) for i, t in enumerate(trials)])}
    for name in ("axis", "value", *SHOWN):
        space[name] = tune.sample_from(lambda spec, name=name: spec.config.point[name])
    return space


class SweepProgress:
    """Live progress of a sweep on stdout, one line whenever a trial starts, finishes or fails: counts by state
    and a time estimate (elapsed / finished x remaining, i.e. assuming the current throughput holds)."""

    def __init__(self, total: int):
        self.total = total
        self.t0 = time.perf_counter()  # (no stream kept: Tune pickles its callbacks with the experiment state)

    def line(self, trials, event=None, state: str = "") -> str:
        """`event`'s trial is counted as `state` (Tune calls back before it updates the trial's status)."""
        states = [state if t is event else t.status for t in trials]
        done, failed = states.count("TERMINATED"), states.count("ERROR")
        running = states.count("RUNNING")
        pending = max(0, self.total - done - failed - running)
        elapsed = time.perf_counter() - self.t0
        finished = done + failed
        eta = (f"~{_hms(elapsed / finished * (self.total - finished))} left" if 0 < finished < self.total
               else "estimate after the first trial" if finished == 0 else "finished")
        return (f"[latentdiffuser sweep] {done}/{self.total} done, {running} running, {failed} failed, "
                f"{pending} pending; {_hms(elapsed)} elapsed, {eta}")

    def callback(self):
        from ray import tune

        progress = self

        class _Callback(tune.Callback):
            def on_trial_start(self, iteration, trials, trial, **info):
                print(progress.line(trials, trial, "RUNNING"), flush=True)

            def on_trial_complete(self, iteration, trials, trial, **info):
                print(progress.line(trials, trial, "TERMINATED"), flush=True)

            def on_trial_error(self, iteration, trials, trial, **info):
                print(progress.line(trials, trial, "ERROR"), flush=True)

        return _Callback()


def _hms(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


# ----------------------------------------------------------------------------------------------------
# the Tune function trainable


def sweep_trial(params: dict[str, Any], spec: SweepSpec) -> None:
    from ray import tune

    reports = [_run_task(task, spec) for task in spec.tasks(params)]
    if len(reports) == 1:
        tune.report(reports[0])
        return
    # a search sample on several seeds: the searcher optimizes the mean over seeds; per-seed scores kept
    keys = set.intersection(*(set(r) for r in reports)) - {"trial_id", "seed"}
    out: dict[str, Any] = {k: float(sum(float(r[k]) for r in reports) / len(reports)) for k in sorted(keys)}
    for r in reports:
        out[f"normalized_score_seed{r['seed']}"] = r.get("normalized_score", float("nan"))
    out.update(seeds=float(len(reports)), trial_id=",".join(str(r["trial_id"]) for r in reports))
    tune.report(out)


def _run_task(task: TrialTask, spec: SweepSpec) -> dict[str, Any]:
    """Run (or, on --resume, keep) one config x seed; write its status row; return its Tune metrics."""
    import ray

    tid, seed = task.trial_id, task.seed
    base = {"trial_id": tid, "seed": seed}
    files = task.layout.files
    if spec.resume and files.is_file(task.result_file) and files.is_file(task.summary_file):
        s = TrialSummary.load(task.summary_file, files)  # finished by an earlier run of this sweep: keep its rows
        return {**s.metrics, **base, "skipped": 1.0}
    node = ray.get_runtime_context().get_node_id()
    t0 = time.perf_counter()
    try:
        if task.distributed:
            from ld.distributed.train import run_with_ray_train

            run_with_ray_train(task, max_failures=spec.train_max_failures)
            # rank 0 ran in a Ray Train worker, another process: its summary reaches us only as the file it saved
            summary = TrialSummary.load(task.summary_file, files)
        else:
            from ld.distributed.trial import execute_trial

            summary = execute_trial(task, node_id=node)  # in-process, so rank 0: it returns its summary
    except Exception as e:
        sink.write_status(spec.storage, spec.suite, tid, seed, status="failed", axis=task.axis, value=task.value,
                          error=e, extra={"node_id": node})
        raise
    wall = time.perf_counter() - t0
    trained = [s["stage"] for s in summary.stages if s["trained"]]
    reused = [s["stage"] for s in summary.stages if not s["trained"]]
    resumed = [f"{s['stage']}@{step}" for s in summary.stages for step in s["resumed_from"]]
    timing = {"wall_s": wall, "loop_s": summary.loop_s, "eval_s": summary.eval_s, "data_s": summary.data_s,
              "phases_s": summary.phases_s, "overhead_s": wall - summary.loop_s,
              "ray_overhead_s": wall - summary.phases_s if not task.distributed else
              wall - summary.loop_s - summary.eval_s - summary.data_s}
    sink.write_status(spec.storage, spec.suite, tid, seed, status="ok", axis=task.axis, value=task.value,
                      rows=summary.rows,
                      extra={"run_id": spec.run_id, "node_id": summary.node_id or node, "trained": ",".join(trained),
                             "reused": ",".join(reused), "resumed_from": ",".join(resumed),
                             "world_size": summary.world_size, **timing})
    return {**summary.metrics, **base, **timing, "stages_trained": float(len(trained)), "skipped": 0.0}


# ----------------------------------------------------------------------------------------------------
# the driver


@dataclass
class SweepSummary:
    suite: str
    storage: str
    results: str
    trials: int
    ok: int
    failed: int
    skipped: int
    rows: int
    wall_s: float
    stage_runs_trained: int  # stages trained by this sweep run
    stage_runs_reused: int
    stage_runs_uncached: int  # stage runs the trials would have needed without any cache
    trial_wall_s: list[float] = field(default_factory=list)
    trial_overhead_s: list[float] = field(default_factory=list)  # wall - time inside training loops
    errors: list[str] = field(default_factory=list)
    restored: bool = False  # Tune state was restored (Tuner.restore) rather than started fresh
    best: Optional[dict[str, Any]] = None  # a search: {"params", "metric", "value", "seeds", "samples"}
    lease_grants: dict[str, int] = field(default_factory=dict)  # object storage: times each artifact was leased
    baseline_evals: int = 0  # baseline evaluations (prior, BC) this run made; siblings read them back

    def render(self) -> str:
        def mean(xs):
            return sum(xs) / len(xs) if xs else float("nan")

        lines = [
            f"suite {self.suite}: {self.trials} trials, {self.ok} ok ({self.skipped} already done), "
            f"{self.failed} failed; {self.rows} rows; wall {self.wall_s:.1f} s"
            + (" (resumed from saved Tune state)" if self.restored else ""),
            f"stage runs: {self.stage_runs_trained} trained, {self.stage_runs_reused} reused "
            f"(without the cache: {self.stage_runs_uncached}); baseline evaluations run: {self.baseline_evals}",
            f"per trial: wall {mean(self.trial_wall_s):.1f} s, wall minus training loops "
            f"{mean(self.trial_overhead_s):.1f} s (mean)",
        ]
        lines += [f"  failed: {e}" for e in self.errors[:10]]
        if self.best:
            b = self.best
            point = ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(b["params"].items()))
            lines.append(f"best of {b['samples']} samples: {point} -> {b['metric']} {b['value']:.2f} "
                         f"(mean over {b['seeds']} seed{'s' if b['seeds'] != 1 else ''})")
        lines.append(f"results: {self.results}")
        return "\n".join(lines)


def _search_space(search: SearchSpec) -> dict[str, Any]:
    """The search's domains as Tune's sampling functions of the same names (validated by the suite model)."""
    from ray import tune

    return {name: tune.choice(dom.args) if dom.kind == "choice" else getattr(tune, dom.kind)(*dom.args)
            for name, dom in search.space.items()}


def run_sweep(suite_path: str | Path, *, storage: str | Path = DEFAULT_STORAGE, scale: str = "smoke",
              sets: Optional[list[str]] = None, resume: bool = False, max_concurrent: Optional[int] = None,
              num_cpus: Optional[int] = None, address: Optional[str] = None, max_failures: int = 3,
              checkpoint_every: int = 200, kill_at: Optional[str] = None, verbose: int = 0,
              loggers: Optional[list[str]] = None) -> SweepSummary:
    from ray import tune

    from ld.suite import load_suite

    suite = load_suite(suite_path)  # validates the whole file, its `search:` section included
    trials = suite.trials(scale, sets or [])
    storage = canonical(storage)
    check_root(storage)  # a missing bucket or credentials: one message before anything starts or is written
    layout = StorageLayout.of(storage)
    spec_trials = [{"config": t.config.model_dump(), "axis": t.axis, "value": str(t.value)} for t in trials]
    search = suite.search
    spec = SweepSpec(suite=suite.name, storage=storage, trials=spec_trials, search=search, resume=resume,
                     checkpoint_every=checkpoint_every, kill_at=kill_at, run_id=uuid.uuid4().hex[:12])
    callbacks = logger_callbacks(loggers or [], suite.name, storage)  # a missing package fails before Ray starts
    t0 = time.perf_counter()
    before = _manifests(layout)
    started = init_ray(address, num_cpus)
    try:
        import ray

        from ld.distributed.resources import placement

        leases = None
        if layout.remote:  # no flock on an object store: producers of an artifact take a lease from this actor
            from ld.distributed.leases import board

            leases = board(create=True)  # held for the sweep: a named actor dies with its last handle
        total = ray.cluster_resources()
        spec.cluster_gpus = float(total.get("GPU", 0))
        where = placement(trials[0].config.train, spec.cluster_gpus)
        trainable = tune.with_resources(tune.with_parameters(sweep_trial, spec=spec), where.trial_resources)
        if max_concurrent is None:
            max_concurrent = where.max_concurrent(total)  # worker groups that fit the cluster at once
        exp_dir = layout.tune_experiment(suite.name)
        n_tune = len(trials) if search is None else search.samples
        fs = layout.files.fs  # None for a local root
        run_config = tune.RunConfig(name=suite.name, storage_path=str(layout.tune), storage_filesystem=fs,
                                    failure_config=tune.FailureConfig(max_failures=max_failures),
                                    verbose=verbose, callbacks=[SweepProgress(n_tune).callback(), *callbacks])
        restored = bool(resume and tune.Tuner.can_restore(str(exp_dir), storage_filesystem=fs))
        if restored:
            tuner = tune.Tuner.restore(str(exp_dir), trainable, resume_unfinished=True, restart_errored=True,
                                       storage_filesystem=fs)
        else:
            if search is None:
                param_space = grid_param_space(spec_trials)
                tune_config = tune.TuneConfig(max_concurrent_trials=max_concurrent, reuse_actors=False,
                                              trial_dirname_creator=lambda t: f"{t.trial_id}")
            else:
                from ray.tune.search.optuna import OptunaSearch

                param_space = _search_space(search)
                tune_config = tune.TuneConfig(
                    metric=search.metric, mode=search.mode, search_alg=OptunaSearch(seed=search.seed),
                    num_samples=search.samples, max_concurrent_trials=max_concurrent,
                    reuse_actors=False, trial_dirname_creator=lambda t: f"{t.trial_id}")
            tuner = tune.Tuner(trainable, param_space=param_space, tune_config=tune_config, run_config=run_config)
        grid = tuner.fit()
        errors = [f"{r.path}: {str(r.error).splitlines()[0] if str(r.error) else type(r.error).__name__}"
                  for r in grid if r.error is not None]
        best = _best(grid, search, seeds=len(trials)) if search is not None else None
        grants = ray.get(leases.stats.remote()) if leases is not None else {}
        if leases is not None:
            ray.kill(leases)
    finally:
        if started:
            import ray

            ray.shutdown()
    new = _manifests(layout) - before
    from ld.evaluation.reuse import STAGE as EVAL

    evals = {a for a in new if a.split("/", 1)[0] == EVAL}  # episodes, not a stage of the DAG
    summary = _summarize(spec, time.perf_counter() - t0, errors, len(new - evals))
    summary.baseline_evals = len(evals)
    summary.restored = restored
    summary.best = best
    summary.lease_grants = grants
    if best is not None:  # the answer of a search, next to its results (atomic, like every result file)
        layout.files.write_text(layout.best_file(suite.name), json.dumps(best, indent=2, default=str))
    return summary


def _best(grid, search: SearchSpec, seeds: int) -> Optional[dict[str, Any]]:
    """The best sample of a search by its reported metric (a mean over the scale's seeds)."""
    metric, mode = search.metric, search.mode
    done = [r for r in grid if r.error is None and r.metrics and metric in r.metrics]
    if not done:
        return None
    r = grid.get_best_result(metric=metric, mode=mode, filter_nan_and_inf=True)
    return {"params": dict(r.config), "metric": metric, "value": float(r.metrics[metric]), "seeds": seeds,
            "samples": len(done)}


def _manifests(layout: StorageLayout) -> set[str]:
    """Every published artifact (`<stage>/<key>`) under the root."""
    root = layout.artifacts
    if layout.remote:
        from ld.stages.artifact import MANIFEST

        return {rel.rsplit("/", 1)[0] for rel, _ in layout.files.walk_files(root)
                if rel.endswith("/" + MANIFEST) and rel.count("/") == 2}
    return {str(m.parent.relative_to(root)) for m in root.glob("*/*/manifest.json")} if root.is_dir() else set()


def _summarize(spec: SweepSpec, wall: float, errors: list[str], trained: int) -> SweepSummary:
    """Counts from the status rows of this suite; `trained` = artifacts this run published."""
    layout = StorageLayout.of(spec.storage)
    status = sink.read_status(spec.storage, spec.suite)
    if spec.search is None:  # only the trials of this suite expansion
        ids = {(TrialTask(config=t["config"], suite=spec.suite, storage=spec.storage).trial_id,
                int(t["config"]["seed"])) for t in spec.trials}
        if len(status):
            status = status[[(a, int(b)) in ids for a, b in zip(status["trial_id"], status["seed"])]]
        n = len(ids)
    else:
        n = len(status)
    ok = status[status["status"] == "ok"] if len(status) else status
    df = sink.read_results(spec.storage, spec.suite)
    if spec.search is None and len(df):
        df = df[[(a, int(b)) in ids for a, b in zip(df["trial_id"], df["seed"])]]
    walked = uncached = skipped = 0
    walls, overheads = [], []
    for _, row in ok.iterrows():
        f = layout.summary_file(spec.suite, row["trial_id"], int(row["seed"]))
        if not layout.files.is_file(f):
            continue
        s = TrialSummary.load(f, layout.files)
        uncached += len(s.stages)
        if row.get("run_id") == spec.run_id:
            walked += len(s.stages)
            walls.append(float(row["wall_s"]))
            overheads.append(float(row["overhead_s"]))
        else:  # finished by an earlier run of the sweep (--resume kept it)
            skipped += 1
    reused = max(0, walked - trained)
    return SweepSummary(
        suite=spec.suite, storage=spec.storage, results=layout.uri_of(layout.results(spec.suite)),
        trials=n, ok=len(ok), failed=int((status["status"] == "failed").sum()) if len(status) else 0,
        skipped=skipped, rows=len(df), wall_s=wall, stage_runs_trained=trained, stage_runs_reused=reused,
        stage_runs_uncached=uncached, trial_wall_s=walls, trial_overhead_s=overheads, errors=errors)

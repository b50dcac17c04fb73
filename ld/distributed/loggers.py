"""Ray's own logger callbacks for `latentdiffuser sweep --logger mlflow|wandb`: each Tune trial becomes a run
whose params are the trial's knobs and whose metrics are every result it reports (loss curves, then the scores).
The packages are optional (`pip install 'ld[loggers]'`): a missing one is a ConfigError before Ray starts."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ld.distributed.paths import StorageLayout


def logger_callbacks(names: list[str], suite: str, storage: str) -> list[Any]:
    """Ray's own logger callbacks for `--logger` (MLflow, W&B): each Tune trial becomes a run whose params are
    the trial's knobs (the grid's top-level params) and whose metrics are every result it reports (loss curves,
    then the scores). W&B logs online when it has an API key (WANDB_API_KEY or `wandb login`), else offline
    into `<storage>/wandb` (`wandb sync` uploads it later); WANDB_MODE, WANDB_PROJECT and WANDB_DIR override."""
    from ld.config import ConfigError

    out = []
    for name in dict.fromkeys(names):
        try:
            if name == "mlflow":
                import mlflow  # noqa: F401
                from ray.air.integrations.mlflow import MLflowLoggerCallback

                uri = os.environ.get("MLFLOW_TRACKING_URI")
                if not uri and StorageLayout.of(storage).remote:
                    raise ConfigError(f"--logger mlflow with --storage {storage}: MLflow's file store cannot live "
                                      "in an object store; set MLFLOW_TRACKING_URI (a tracking server, or a local "
                                      "file:// folder)")
                if not uri:  # a file store next to the results (MLflow 3 asks to opt in to file stores)
                    uri = StorageLayout.of(storage).mlruns.as_uri()
                    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
                out.append(MLflowLoggerCallback(tracking_uri=uri, experiment_name=suite))
            elif name == "wandb":
                import wandb  # noqa: F401
                from ray.air.integrations.wandb import WandbLoggerCallback

                out.append(WandbLoggerCallback(project=os.environ.get("WANDB_PROJECT", "ld"), group=suite,
                                               **wandb_settings(storage)))
            else:
                raise ConfigError(f"--logger {name!r}: allowed are mlflow, wandb")
        except ImportError as e:
            raise ConfigError(f"--logger {name} needs the {name} package ({e}); install it with "
                              f"`pip install 'ld[loggers]'` (or `pip install {name}`)") from None
    return out


def wandb_settings(storage: str) -> dict[str, str]:
    """`mode` and `dir` for wandb.init in Ray's logging actors (they do not see this process's environment)."""
    layout = StorageLayout.of(storage)
    where = os.environ.get("WANDB_DIR") or ("" if layout.remote else str(layout.root / "wandb"))
    mode = os.environ.get("WANDB_MODE")
    if not mode:
        netrc = Path(os.environ.get("NETRC", "~/.netrc")).expanduser()
        logged_in = bool(os.environ.get("WANDB_API_KEY")) or (netrc.is_file() and "api.wandb.ai" in netrc.read_text())
        mode = "online" if logged_in else "offline"
        if not logged_in:
            print(f"latentdiffuser sweep: W&B has no API key here: logging offline to {where or 'the current folder'} "
                  "(`wandb sync` uploads it)", flush=True)
    if where:
        Path(where).mkdir(parents=True, exist_ok=True)
        return {"mode": mode, "dir": where}
    return {"mode": mode}

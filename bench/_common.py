"""What every benchmark script shares: the machine description and the JSON it ends with."""

from __future__ import annotations

import json
import os
import platform
import time

import torch


def machine() -> dict:
    """Hardware and load at the start: every number in bench/ is read against these."""
    return {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(), "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "loadavg": [round(x, 2) for x in os.getloadavg()]}


def finish(report: dict, t0: float) -> int:
    """Stamp the end load average and wall time, print the report as JSON (stdout carries only this)."""
    report.setdefault("machine", machine())["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    report["wall_s"] = round(time.perf_counter() - t0, 2)
    print(json.dumps(report, indent=1))
    return 0

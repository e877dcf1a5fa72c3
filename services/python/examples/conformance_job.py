"""The conformance job in Python (tests/sdk_conformance.rs runs the same job in every SDK).

Params ``{"steps": N, "pace_ms": M, "pad": P}`` (defaults 10, 100, 0): one task "conformance",
then N times: wait M ms, publish ``conformance.step``, report i/N. Result
``{"sdk": "python", "service": <name from Welcome>, "steps": N}``, plus ``"pad"``: P x's when
P > 0. Stopped mid-run, it cancels
the task and fails with ``unavailable`` (exit 1).

Needs ``switchboard_sdk`` importable: installed (``pip install ./services/python``) or on
``PYTHONPATH``.
"""

from __future__ import annotations

import time
from typing import Any

from switchboard_sdk import ErrorCode, JobFailed, Service, TaskState


def conformance(params: dict[str, Any], svc: Service) -> dict[str, Any]:
    steps = max(0, int(params.get("steps", 10)))
    pace = float(params.get("pace_ms", 100)) / 1000
    task = svc.task("conformance", total=steps)
    for step in range(1, steps + 1):
        time.sleep(pace)
        if svc.stopping:
            task.finish(TaskState.CANCELLED)
            raise JobFailed(f"stopped at step {step - 1} of {steps}", ErrorCode.UNAVAILABLE)
        svc.publish("conformance.step", {"step": step})
        task.update(done=step, total=steps)
    task.finish()
    result: dict[str, Any] = {"sdk": "python",
                              "service": svc.welcome.service if svc.welcome else "",
                              "steps": steps}
    pad = int(params.get("pad", 0))
    if pad > 0:
        result["pad"] = "x" * pad
    return result


if __name__ == "__main__":
    raise SystemExit(Service("conformance", version="0.1.0").run_job(conformance))

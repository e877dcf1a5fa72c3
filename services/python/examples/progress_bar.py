"""Launch a job with no console and show its progress: a bar in the terminal, or a Tkinter
window with ``--tk``. Any job of any SDK works; for example the C conformance job::

    gcc -std=c99 -I sdks/c sdks/c/examples/conformance_job.c -o /tmp/job
    python3 services/python/examples/progress_bar.py /tmp/job '{"steps": 20}'
    python3 services/python/examples/progress_bar.py --tk /tmp/job '{"steps": 20}'

Both views draw from `ProgressModel`, which only folds the launcher's changes into what to
show; the tests drive the model, not the widget, so they need no display.

Needs ``switchboard_launcher`` importable (``pip install ./services/python``, or run from a
checkout: this script adds its parent directory to the path).
"""

from __future__ import annotations

import json
import queue
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from switchboard_launcher import Change, Launcher  # noqa: E402

WIDTH = 30


@dataclass
class ProgressModel:
    """What a progress view shows: the first task's label, done and total, and the outcome."""
    label: str = "starting"
    done: int = 0
    total: int = 0
    outcome: str | None = None  # set once the job has exited
    ok: bool = False

    @property
    def fraction(self) -> float:
        return min(1.0, self.done / self.total) if self.total else 0.0

    @property
    def text(self) -> str:
        return f"{self.label} {self.done}/{self.total}"

    def bar(self) -> str:
        filled = int(self.fraction * WIDTH)
        return f"{self.label:<20} [{'#' * filled}{'.' * (WIDTH - filled)}] {self.done}/{self.total}"

    def apply(self, change: Change) -> None:
        if change.kind == "progress" and change.tasks:
            task = change.tasks[0]
            self.label, self.done, self.total = task.label, task.done, task.total
        elif change.kind == "result":
            self.ok = change.error is None
            self.outcome = (f"result: {json.dumps(change.result)}" if self.ok
                            else f"failed: {change.error[0]}: {change.error[1]}")
        elif change.kind == "exited":
            if self.outcome is None:
                self.outcome = f"exited {change.returncode} without a result"
            self.ok = self.ok and change.returncode == 0


def follow(changes: Iterable[Change], model: ProgressModel) -> ProgressModel:
    """Folds every change into `model` until the job exits."""
    for change in changes:
        model.apply(change)
    return model


def run_terminal(argv: list[str], params: str) -> int:
    job = Launcher(argv, name="progress", params=params, heartbeat_ms=200).spawn()
    model = ProgressModel()
    for change in job.changes():
        model.apply(change)
        if change.kind == "progress":
            # `\r` redraws the line in a terminal; piped, each update is its own line.
            print("\r" + model.bar(), end="", flush=True)
    print(f"\n{model.outcome}")
    return 0 if model.ok else 1


def run_tk(argv: list[str], params: str) -> int:  # pragma: no cover - needs a display
    import tkinter as tk
    from tkinter import ttk

    root = tk.Tk()
    root.title("Switchboard job")
    caption = tk.StringVar(value="starting")
    bar = ttk.Progressbar(root, length=320, maximum=1.0)
    bar.pack(padx=12, pady=(12, 4))
    tk.Label(root, textvariable=caption).pack(padx=12, pady=(0, 12))
    model = ProgressModel()
    job = Launcher(argv, name="progress", params=params, heartbeat_ms=200).spawn()
    inbox: queue.Queue[Change] = queue.Queue()
    # Tk is single-threaded: a thread waits on the launcher, the UI polls the inbox.
    threading.Thread(target=lambda: [inbox.put(c) for c in job.changes()], daemon=True).start()

    def poll() -> None:
        while not inbox.empty():
            model.apply(inbox.get_nowait())
        bar["value"] = model.fraction
        caption.set(model.outcome or model.text)
        root.after(50, poll)

    root.protocol("WM_DELETE_WINDOW", lambda: (job.stop(), root.destroy()))
    poll()
    root.mainloop()
    job.wait(5)
    job.kill()
    return 0 if model.ok else 1


def main(args: list[str]) -> int:
    tk_view = "--tk" in args
    args = [a for a in args if a != "--tk"]
    if not args:
        print("usage: progress_bar.py [--tk] JOB [PARAMS_JSON]", file=sys.stderr)
        return 2
    params = args[1] if len(args) > 1 else ""
    return run_tk([args[0]], params) if tk_view else run_terminal([args[0]], params)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

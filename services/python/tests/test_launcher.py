"""The Python launcher with no console running, against a real job: the C conformance job,
compiled by the caller (tests/python_launcher.rs) and named by ``SWITCHBOARD_C_JOB``.

Run: SWITCHBOARD_C_JOB=/path/to/job python3 -m unittest -v services/python/tests/test_launcher.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "examples"))

from progress_bar import ProgressModel, follow  # noqa: E402
from switchboard_launcher import Launcher  # noqa: E402
from switchboard_sdk import ErrorCode, TaskState  # noqa: E402

JOB = os.environ.get("SWITCHBOARD_C_JOB", "")
# A JSON list of command lines: the segment-only program of each SDK (sdks/c/examples/
# segment_only.c, sdks/java/SegmentOnly.java, sdks/node/segment_only.js), built.
SEGMENT_ONLY: list[list[str]] = json.loads(os.environ.get("SWITCHBOARD_SEGMENT_ONLY", "[]"))
LIMIT = 30.0


@unittest.skipUnless(JOB, "SWITCHBOARD_C_JOB names the compiled C conformance job")
class LauncherTest(unittest.TestCase):
    def test_watches_a_c_job_to_its_result(self) -> None:
        job = Launcher([JOB], name="crunch", params={"steps": 5, "pace_ms": 150},
                       heartbeat_ms=100).spawn()
        seen: list[int] = []
        kinds: list[str] = []
        for change in job.changes():
            kinds.append(change.kind)
            for task in change.tasks:
                seen.append(task.done)
        self.assertEqual(job.wait(LIMIT), 0)
        self.assertEqual(job.result, {"sdk": "c", "service": "crunch", "steps": 5})
        self.assertIsNotNone(job.hello)
        self.assertEqual(job.hello.version, "0.1.0")
        self.assertTrue(any(0 < d < 5 for d in seen), f"no progress in between: {seen}")
        self.assertEqual(seen, sorted(seen))
        self.assertEqual(kinds[-1], "exited")
        self.assertIn("result", kinds)
        (task,) = job.progress()
        self.assertEqual((task.label, task.done, task.total, task.state),
                         ("conformance", 5, 5, TaskState.DONE))
        counters = job.counters()
        self.assertEqual(counters.events_published, 5)
        self.assertGreaterEqual(counters.heartbeat, 3)  # a beat asked every 100 ms for 750 ms
        self.assertIsNotNone(job.heartbeat_age())

    def test_a_stopped_job_exits_by_itself(self) -> None:
        job = Launcher([JOB], params='{"steps": 1000, "pace_ms": 50}').spawn()
        for change in job.changes():
            if change.tasks and change.tasks[0].done >= 2:
                break
        job.stop()
        self.assertEqual(job.wait(LIMIT), 1)
        self.assertIsNotNone(job.error)
        self.assertEqual(job.error[0], ErrorCode.UNAVAILABLE)
        self.assertEqual(job.progress()[0].state, TaskState.CANCELLED)

    def test_the_progress_model_follows_a_real_job(self) -> None:
        # The Tk view draws exactly this model; no display needed.
        job = Launcher([JOB], params={"steps": 4, "pace_ms": 100}).spawn()
        fractions: list[float] = []
        model = ProgressModel()
        for change in job.changes():
            model.apply(change)
            fractions.append(model.fraction)
        self.assertTrue(model.ok, model.outcome)
        self.assertEqual(model.fraction, 1.0)
        self.assertEqual(model.text, "conformance 4/4")
        self.assertTrue(model.outcome.startswith("result: "), model.outcome)
        self.assertTrue(any(0 < f < 1 for f in fractions), fractions)
        self.assertEqual(fractions, sorted(fractions))
        self.assertIs(follow([], ProgressModel()).ok, False)

    def test_the_example_prints_a_live_bar(self) -> None:
        out = subprocess.run(
            [sys.executable, str(HERE.parent / "examples" / "progress_bar.py"), JOB,
             '{"steps": 3, "pace_ms": 100}'],
            capture_output=True, text=True, timeout=LIMIT, stdin=subprocess.DEVNULL)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("[##############################] 3/3", out.stdout)
        self.assertIn('result: {"sdk": "c"', out.stdout)


    @unittest.skipUnless(SEGMENT_ONLY, "SWITCHBOARD_SEGMENT_ONLY lists the programs")
    def test_reads_what_a_program_without_frames_wrote(self) -> None:
        for argv in SEGMENT_ONLY:
            with self.subTest(program=argv), Launcher(argv).spawn() as job:
                self.assertEqual(job.wait(LIMIT), 0)
                self.assertIsNone(job.result)
                (task,) = job.progress()
                # Cut at 64 bytes would split a character: 63 bytes kept.
                self.assertEqual(task.label, "a" + "é" * 31)
                self.assertEqual((task.done, task.total), (4, 9))
                # The backlog words (SPEC.md §7, 18–20), flag last.
                self.assertEqual([job.segment.word(w) for w in (18, 19, 20)], [7, 1234, 1])
                self.assertEqual(job.counters().heartbeat, 1)


if __name__ == "__main__":
    unittest.main()

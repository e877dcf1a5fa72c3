"""Launch one Switchboard job with no console running, and watch it (standard library only).

The launcher side of ``protocol/SPEC.md`` for a program that runs a job itself (a script, a
notebook, a GUI): it creates the sealed memfd segment as the console does (§7), hands it to the
child (``pass_fds``; its number is in ``SWITCHBOARD_SEGMENT_FD``, §1), answers the job's Hello
with a Welcome carrying its parameters, records its result, and reaps it. The job may be
written with any SDK: C, Java, Node, Python, Rust::

    from switchboard_launcher import Launcher

    job = Launcher(["./crunch"], name="crunch", params={"steps": 20}).spawn()
    for change in job.changes():          # Progress, Result, Exited (the last)
        if change.kind == "progress":
            for task in change.tasks:
                print(f"{task.label}: {task.done}/{task.total}")
    print(job.wait(), job.result)

``job.progress()``, ``job.counters()`` and ``job.heartbeat_age()`` read the segment on demand.
Linux only (memfd); little-endian hosts only, as the segment is.
"""

from __future__ import annotations

import fcntl
import json
import mmap
import os
import queue
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

from switchboard_sdk import (
    MAX_FRAME, PROTOCOL_VERSION, SEGMENT_LEN, Body, BodyType, Envelope, ErrorCode, Hello,
    Kind, Status, TaskState, Welcome, cobs_decode, decode_envelope, encode_envelope, frame,
)

__all__ = ["Change", "Counters", "JobHandle", "Launcher", "TaskRecord"]

_HEADER = (0x0047455344425753, 1, 64, 4096, 1024, 128, 16, 32)
_SEQLOCK_TRIES = 64  # as the console: a slot still changing after that is reported torn


@dataclass(frozen=True)
class TaskRecord:
    slot: int
    id: int
    label: str
    done: int
    total: int
    state: TaskState


@dataclass(frozen=True)
class Counters:
    heartbeat: int = 0
    requests_received: int = 0
    requests_ok: int = 0
    requests_error: int = 0
    requests_timeout: int = 0
    in_flight: int = 0
    events_published: int = 0
    events_received: int = 0


@dataclass(frozen=True)
class Change:
    """``kind`` is "hello", "ready", "progress" (``tasks``), "result" (``result``: the JSON
    value, or ``error``: (code, message)) or "exited" (``returncode``), always the last."""
    kind: str
    tasks: list[TaskRecord] = field(default_factory=list)
    result: Any = None
    error: tuple[ErrorCode, str] | None = None
    returncode: int | None = None


def create_segment(name: str) -> tuple[int, mmap.mmap]:
    """A sealed 4096-byte memfd with the header written; its fd (not inheritable) and a map."""
    fd = os.memfd_create(f"switchboard:{name}"[:249], os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    os.ftruncate(fd, SEGMENT_LEN)
    view = mmap.mmap(fd, SEGMENT_LEN)
    words = memoryview(view).cast("Q")
    for index, value in enumerate(_HEADER):
        words[index] = value
    words.release()
    # Sealed so that the job can never shrink it under our mapping (a SIGBUS here).
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS,
                fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL)
    return fd, view


class SegmentView:
    """Reads a segment the way the console does: word by word, slots under the seqlock."""

    def __init__(self, view: mmap.mmap) -> None:
        self._words = memoryview(view).cast("Q")

    def word(self, index: int) -> int:
        return self._words[index]

    def counters(self) -> Counters:
        w = self._words
        return Counters(w[8], w[10], w[11], w[12], w[13], w[14], w[15], w[16])

    def tasks(self) -> list[TaskRecord]:
        out = []
        for slot in range(16):
            record = self._read_slot((1024 + 128 * slot) // 8, slot)
            if record is not None:
                out.append(record)
        return out

    def _read_slot(self, base: int, slot: int) -> TaskRecord | None:
        w = self._words
        for _ in range(_SEQLOCK_TRIES):
            s1 = w[base]
            if s1 & 1:
                continue
            fields = tuple(w[base + 1:base + 6])
            label = w[base + 8:base + 16].tobytes()  # little-endian host: the bytes in order
            if w[base] != s1:
                continue
            ident, state, done, total, label_len = fields
            if ident == 0 and state == 0:
                return None
            try:
                task_state = TaskState(state)
            except ValueError:
                return None
            text = label[:min(label_len, 64)].decode("utf-8", "replace")
            return TaskRecord(slot, ident, text, done, total, task_state)
        return None


class Launcher:
    """What to run and what to tell it; `spawn` starts it."""

    def __init__(self, argv: list[str], *, name: str = "job", params: Any = None,
                 heartbeat_ms: int = 1000, cwd: str | None = None,
                 env: dict[str, str] | None = None, stderr: Any = None,
                 sample_every: float = 0.05) -> None:
        self.argv = list(argv)
        self.name = name
        # Parameters as JSON text (`Welcome.params`): a str is sent as is, anything else dumped.
        self.params = params if isinstance(params, str) or params is None else json.dumps(params)
        self.heartbeat_ms = max(1, int(heartbeat_ms))
        self.cwd = cwd or os.getcwd()
        self.env = dict(env or {})
        self.stderr = stderr
        self.sample_every = max(0.001, sample_every)

    def spawn(self) -> JobHandle:
        fd, view = create_segment(self.name)
        env = dict(os.environ)
        env.update({
            "SWITCHBOARD_SERVICE": self.name,
            "SWITCHBOARD_INSTANCE": "0",
            "SWITCHBOARD_PROTOCOL": str(PROTOCOL_VERSION),
            "SWITCHBOARD_SEGMENT_FD": str(fd),
            "SWITCHBOARD_DATA_DIR": self.cwd,
            "SWITCHBOARD_RUN_DIR": self.cwd,
            "SWITCHBOARD_STACK_DIR": self.cwd,
            "SWITCHBOARD_LINEAGE": f"launcher-{os.getpid()}-{self.name}",
        })
        env.update(self.env)
        try:
            process = subprocess.Popen(
                self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr,
                cwd=self.cwd, env=env, pass_fds=(fd,))
        finally:
            os.close(fd)  # the child has its copy; we read through the map
        return JobHandle(self, process, view)


class JobHandle:
    """A launched job. `stop` asks it to end; `kill` ends it; it is reaped either way."""

    def __init__(self, launcher: Launcher, process: subprocess.Popen[bytes],
                 view: mmap.mmap) -> None:
        self.process = process
        self.segment = SegmentView(view)
        self.result: Any = None
        self.error: tuple[ErrorCode, str] | None = None
        self.hello: Hello | None = None
        self._launcher = launcher
        self._lock = threading.Lock()
        self._next_id = 1
        self._beat: tuple[int, float] | None = None
        self._exited = threading.Event()
        # Bounded: a reader that falls behind loses progress samples, never the result or exit.
        self._changes: queue.Queue[Change] | None = None
        self._reader = threading.Thread(target=self._read_frames, name="job-frames", daemon=True)
        self._reader.start()
        threading.Thread(target=self._watch, name="job-watch", daemon=True).start()

    def __enter__(self) -> JobHandle:
        return self

    def __exit__(self, *_: object) -> None:
        """Leaving the block kills a job still running (and it is reaped)."""
        self.kill()
        self.wait(5.0)

    # ---- what it is doing

    def progress(self) -> list[TaskRecord]:
        return self.segment.tasks()

    def counters(self) -> Counters:
        return self.segment.counters()

    def heartbeat_age(self) -> float | None:
        """Seconds since the heartbeat counter last moved, on our clock; None before a beat."""
        now = self.segment.word(8)
        with self._lock:
            if now == 0:
                return None
            if self._beat is None or self._beat[0] != now:
                self._beat = (now, time.monotonic())
                return 0.0
            return time.monotonic() - self._beat[1]

    @property
    def returncode(self) -> int | None:
        return self.process.returncode if self._exited.is_set() else None

    def wait(self, timeout: float | None = None) -> int | None:
        """The exit status once reaped; None if `timeout` passed first."""
        self._exited.wait(timeout)
        return self.returncode

    def changes(self, limit: int = 256) -> Iterator[Change]:
        """What happens from now on, starting with the current progress, up to the exit."""
        q: queue.Queue[Change] = queue.Queue(limit)
        q.put(Change("progress", tasks=self.progress()))
        with self._lock:
            self._changes = q
            done = self._exited.is_set()
        if done:
            q.put(Change("exited", returncode=self.process.returncode))
        while True:
            change = q.get()
            yield change
            if change.kind == "exited":
                return

    # ---- telling it

    def stop(self) -> None:
        """Shutdown, then EOF on its stdin (SPEC.md §5): it should finish up and exit."""
        self._send(Envelope(self._fresh_id(), Kind.SHUTDOWN))
        self._close_stdin()

    def kill(self) -> None:
        if not self._exited.is_set():
            try:
                self.process.kill()
            except ProcessLookupError:
                pass  # it exited just now; the watcher reaps it

    # ---- plumbing

    def _publish(self, change: Change) -> None:
        with self._lock:
            q = self._changes
        if q is None:
            return
        if change.kind == "progress":
            try:
                q.put_nowait(change)
            except queue.Full:
                pass  # the next sample carries newer progress
        else:
            q.put(change)

    def _fresh_id(self) -> int:
        with self._lock:
            self._next_id += 1
            return self._next_id - 1

    def _send(self, env: Envelope) -> None:
        stdin = self.process.stdin
        if stdin is None:
            return
        try:
            stdin.write(frame(encode_envelope(env)))
            stdin.flush()
        except (OSError, ValueError):
            pass  # it closed its stdin or exited: its exit is what counts

    def _close_stdin(self) -> None:
        try:
            if self.process.stdin:
                self.process.stdin.close()
        except OSError:
            pass

    def _read_frames(self) -> None:
        stdout = self.process.stdout
        assert stdout is not None
        buf = bytearray()
        skipping = False
        while chunk := stdout.read1(65536):
            buf += chunk
            while (end := buf.find(0)) >= 0:
                raw = bytes(buf[:end])
                del buf[:end + 1]
                if raw and not skipping:
                    try:
                        self._on_message(decode_envelope(cobs_decode(raw)))
                    except (ValueError, UnicodeDecodeError):
                        pass  # a bad frame is skipped (SPEC.md §2)
                skipping = False
            if len(buf) > MAX_FRAME:
                buf.clear()
                skipping = True
        stdout.close()

    def _on_message(self, env: Envelope) -> None:
        launcher = self._launcher
        if env.kind == Kind.HELLO and isinstance(env.data, Hello):
            self.hello = env.data
            welcome = Welcome(PROTOCOL_VERSION, launcher.name, 0, launcher.heartbeat_ms, [],
                              launcher.params or "")
            self._send(Envelope(self._fresh_id(), Kind.WELCOME, welcome, correlation=env.id))
            self._publish(Change("hello"))
        elif env.kind == Kind.READY:
            self._publish(Change("ready"))
        elif env.kind == Kind.JOB_RESULT and isinstance(env.data, Status):
            if env.data.ok:
                value = env.body.value() if env.body.type == BodyType.JSON else None
                self.result = value
                self._publish(Change("result", result=value))
            else:
                assert env.data.code is not None
                self.error = (env.data.code, env.data.message)
                self._publish(Change("result", error=self.error))
        elif env.kind == Kind.REQUEST:
            status = Status(ErrorCode.UNAVAILABLE,
                            "no console: a launched job cannot call other services")
            self._send(Envelope(self._fresh_id(), Kind.RESPONSE, status, correlation=env.id,
                                body=Body()))

    def _watch(self) -> None:
        last: list[TaskRecord] | None = None
        while True:
            code = self.process.poll()
            tasks = self.progress()
            if tasks != last:
                last = tasks
                self._publish(Change("progress", tasks=tasks))
            self.heartbeat_age()  # keeps the time of the last move current
            if code is not None:
                break
            time.sleep(self._launcher.sample_every)
        # Its last frames (the result) may still be in the pipe: read them before reporting
        # the exit. Bounded, as a grandchild could hold the pipe open.
        self._reader.join(timeout=2.0)
        self._close_stdin()
        with self._lock:
            self._exited.set()
        self._publish(Change("exited", returncode=code))


if sys.byteorder != "little":  # pragma: no cover - every supported host is little-endian
    raise ImportError("the Switchboard segment is little-endian; this host is not")

"""A small Switchboard SDK for Python services and jobs (standard library only).

Copy this one file next to your program. It implements protocol version 1 as described in
``protocol/SPEC.md``: COBS framing (§2), postcard encoding of the envelope (§3, §4), the
handshake, requests, calls, events, shutdown and jobs (§5), and the metrics segment on fd 3
with heartbeats and task slots (§7).

A service::

    from switchboard_sdk import Service, ServiceError, ErrorCode

    svc = Service("greeter", version="0.1.0")

    @svc.method("hello")
    def hello(body, request):
        if not body or "name" not in body:
            raise ServiceError(ErrorCode.BAD_REQUEST, "need a name")
        return {"greeting": f"hello {body['name']}"}

    if __name__ == "__main__":
        raise SystemExit(svc.run())

Declare either in the stack file with ``protocol = true`` (a ``command`` is a plain program
otherwise)::

    [services.report]
    kind = "job"                 # omit for a long-running service
    command = "python3"
    args = ["services/python/order_report.py"]
    protocol = true
    calls = ["order"]            # the services it may call
    cwd = "."                    # relative to the stack file; without it, relative paths in
                                 # args are taken from the console's working directory

A job::

    from switchboard_sdk import Service, JobFailed

    svc = Service("report")

    def main(params, svc):
        task = svc.task("working", total=10)
        for i in range(10):
            answer = svc.call("order", "list", {"after": 0}, timeout=2.0)
            task.update(done=i + 1)
        return {"ok": True}          # sent as the JobResult body; exit status 0

    if __name__ == "__main__":
        raise SystemExit(svc.run_job(main))

Handlers receive the decoded JSON body (or ``None`` for an empty body) and the `Request`; they
return a JSON-serialisable value or raise `ServiceError`. Handlers run on a small thread pool, so
they may call other services with `Service.call`, which copies the trace id and caps the deadline
of the request being served. Calls that fail raise `CallError` carrying the `ErrorCode`.

stdout carries frames only: `Service.run` and `Service.run_job` point ``sys.stdout`` at stderr,
so a stray ``print`` becomes a log line instead of a bad frame. Log with the `logging` module
(configured to stderr) or ``print(..., file=sys.stderr)``.
"""

from __future__ import annotations

import json
import logging
import mmap
import os
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Callable

__all__ = [
    "Body", "BodyType", "CallError", "Envelope", "ErrorCode", "Hello", "JobFailed", "Kind",
    "Request", "Segment", "Service", "ServiceError", "State", "Status", "Task", "TaskState",
    "Welcome",
    "cobs_decode", "cobs_encode", "decode_envelope", "encode_envelope", "frame",
]

log = logging.getLogger("switchboard")

PROTOCOL_VERSION = 1
MAX_FRAME = 1024 * 1024
U64_MAX = (1 << 64) - 1
U32_MAX = (1 << 32) - 1


# --------------------------------------------------------------------------------------------
# §2 COBS framing
# --------------------------------------------------------------------------------------------

def cobs_encode(data: bytes) -> bytes:
    """COBS-encodes `data` (the canonical form of SPEC §2: no empty block after a last full one)."""
    out = bytearray()
    pieces = bytes(data).split(b"\x00")
    for index, piece in enumerate(pieces):
        last = index == len(pieces) - 1
        start = 0
        while len(piece) - start >= 254:
            out.append(0xFF)
            out += piece[start:start + 254]
            start += 254
        rest = piece[start:]
        if last and piece and not rest:
            break  # the last piece was a non-empty multiple of 254: nothing follows its FF block
        out.append(len(rest) + 1)
        out += rest
    return bytes(out)


def cobs_decode(data: bytes) -> bytes:
    """Decodes the bytes between two delimiters; raises `ValueError` on a bad frame."""
    out = bytearray()
    i, length = 0, len(data)
    while i < length:
        n = data[i]
        i += 1
        if n == 0:
            raise ValueError("zero byte inside a COBS frame")
        if i + n - 1 > length:
            raise ValueError("COBS block runs past the end of the frame")
        out += data[i:i + n - 1]
        i += n - 1
        if n != 0xFF and i < length:
            out.append(0)
    return bytes(out)


def frame(payload: bytes) -> bytes:
    """The bytes on the wire for one postcard payload: ``00 COBS(payload) 00``."""
    return b"\x00" + cobs_encode(payload) + b"\x00"


# --------------------------------------------------------------------------------------------
# §3 postcard
# --------------------------------------------------------------------------------------------

class Writer:
    """Appends postcard values to a buffer."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def varint(self, value: int, limit: int = U64_MAX) -> None:
        if not 0 <= value <= limit:
            raise ValueError(f"varint out of range: {value}")
        while value >= 0x80:
            self.buf.append((value & 0x7F) | 0x80)
            value >>= 7
        self.buf.append(value)

    def zigzag(self, value: int) -> None:
        self.varint(((value << 1) ^ (value >> 63)) & U64_MAX)

    def u8(self, value: int) -> None:
        self.buf.append(value & 0xFF)

    def bytes_(self, value: bytes) -> None:
        self.varint(len(value))
        self.buf += value

    def string(self, value: str) -> None:
        self.bytes_(value.encode("utf-8"))

    def strings(self, values: list[str]) -> None:
        self.varint(len(values))
        for value in values:
            self.string(value)


class Reader:
    """Reads postcard values from a buffer; raises `ValueError` on malformed input."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def u8(self) -> int:
        if self.pos >= len(self.data):
            raise ValueError("unexpected end of postcard data")
        value = self.data[self.pos]
        self.pos += 1
        return value

    def varint(self, limit: int = U64_MAX) -> int:
        value, shift = 0, 0
        while True:
            byte = self.u8()
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                break
            shift += 7
            if shift > 63:
                raise ValueError("varint too long")
        if value > limit:
            raise ValueError(f"varint out of range: {value}")
        return value

    def zigzag(self) -> int:
        raw = self.varint()
        return (raw >> 1) ^ -(raw & 1)

    def bytes_(self) -> bytes:
        length = self.varint()
        if self.pos + length > len(self.data):
            raise ValueError("byte string runs past the end")
        value = self.data[self.pos:self.pos + length]
        self.pos += length
        return bytes(value)

    def string(self) -> str:
        return self.bytes_().decode("utf-8")

    def strings(self) -> list[str]:
        return [self.string() for _ in range(self.varint())]


# --------------------------------------------------------------------------------------------
# §4 the envelope
# --------------------------------------------------------------------------------------------

class Kind(IntEnum):
    HELLO = 0
    WELCOME = 1
    READY = 2
    REQUEST = 3
    RESPONSE = 4
    EVENT = 5
    SUBSCRIBE = 6
    UNSUBSCRIBE = 7
    STREAM_ITEM = 8
    STREAM_END = 9
    CREDIT = 10
    SHUTDOWN = 11
    JOB_RESULT = 12
    CANCEL = 13
    ACK = 14


class ErrorCode(IntEnum):
    NOT_FOUND = 0
    TIMEOUT = 1
    UNAVAILABLE = 2
    OVERLOADED = 3
    CIRCUIT_OPEN = 4
    FORBIDDEN = 5
    BAD_REQUEST = 6
    INTERNAL = 7

    def __str__(self) -> str:
        return self.name.lower()


class BodyType(IntEnum):
    EMPTY = 0
    POSTCARD = 1
    JSON = 2


@dataclass(frozen=True)
class Body:
    type: BodyType = BodyType.EMPTY
    data: bytes = b""

    @staticmethod
    def json(value: Any) -> Body:
        return Body(BodyType.JSON, json.dumps(value, separators=(",", ":")).encode("utf-8"))

    def value(self) -> Any:
        """The JSON value of a Json body, `None` for Empty; `ValueError` for postcard or bad JSON."""
        if self.type == BodyType.EMPTY:
            return None
        if self.type != BodyType.JSON:
            raise ValueError("this service takes JSON bodies only")
        return json.loads(self.data.decode("utf-8"))


@dataclass(frozen=True)
class Hello:
    name: str
    version: str
    protocol_version: int = PROTOCOL_VERSION
    methods: list[str] = field(default_factory=list)
    topics: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Welcome:
    protocol_version: int
    service: str
    instance: int
    heartbeat_ms: int
    settings: list[tuple[str, str]]
    params: str


@dataclass(frozen=True)
class Status:
    """`code` None means Ok."""
    code: ErrorCode | None = None
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.code is None


# The fields that follow the kind index, per kind: Hello, Welcome, Status (Response, StreamEnd,
# JobResult), u32 (Credit), or None.
KindData = Hello | Welcome | Status | int | None
_STATUS_KINDS = (Kind.RESPONSE, Kind.STREAM_END, Kind.JOB_RESULT)


@dataclass
class Envelope:
    id: int
    kind: Kind
    data: KindData = None
    correlation: int = 0
    trace: int = 0
    deadline_us: int = 0
    priority: int = 1
    destination: str = ""
    method: str = ""
    body: Body = field(default_factory=Body)


def encode_envelope(env: Envelope) -> bytes:
    """postcard bytes of `env` (before COBS)."""
    w = Writer()
    w.varint(env.id)
    w.varint(env.correlation)
    w.varint(env.trace)
    w.varint(env.deadline_us)
    w.u8(env.priority)
    w.varint(int(env.kind))
    data = env.data
    if env.kind == Kind.HELLO:
        assert isinstance(data, Hello)
        w.string(data.name)
        w.string(data.version)
        w.varint(data.protocol_version, U32_MAX)
        w.strings(data.methods)
        w.strings(data.topics)
    elif env.kind == Kind.WELCOME:
        assert isinstance(data, Welcome)
        w.varint(data.protocol_version, U32_MAX)
        w.string(data.service)
        w.varint(data.instance, U32_MAX)
        w.varint(data.heartbeat_ms, U32_MAX)
        w.varint(len(data.settings))
        for key, value in data.settings:
            w.string(key)
            w.string(value)
        w.string(data.params)
    elif env.kind in _STATUS_KINDS:
        status = data if isinstance(data, Status) else Status()
        if status.code is None:
            w.varint(0)
        else:
            w.varint(1)
            w.varint(int(status.code))
            w.string(status.message)
    elif env.kind == Kind.CREDIT:
        assert isinstance(data, int)
        w.varint(data, U32_MAX)
    w.string(env.destination)
    w.string(env.method)
    w.varint(int(env.body.type))
    if env.body.type != BodyType.EMPTY:
        w.bytes_(env.body.data)
    return bytes(w.buf)


def decode_envelope(payload: bytes) -> Envelope:
    """Parses postcard bytes; raises `ValueError` on anything malformed or left over."""
    r = Reader(payload)
    ident, correlation, trace, deadline_us = r.varint(), r.varint(), r.varint(), r.varint()
    priority = r.u8()
    kind = Kind(r.varint())
    data: KindData = None
    if kind == Kind.HELLO:
        data = Hello(r.string(), r.string(), r.varint(U32_MAX), r.strings(), r.strings())
    elif kind == Kind.WELCOME:
        version, service, instance, heartbeat = r.varint(U32_MAX), r.string(), \
            r.varint(U32_MAX), r.varint(U32_MAX)
        settings = [(r.string(), r.string()) for _ in range(r.varint())]
        data = Welcome(version, service, instance, heartbeat, settings, r.string())
    elif kind in _STATUS_KINDS:
        tag = r.varint()
        if tag == 0:
            data = Status()
        elif tag == 1:
            data = Status(ErrorCode(r.varint()), r.string())
        else:
            raise ValueError(f"bad Status variant {tag}")
    elif kind == Kind.CREDIT:
        data = r.varint(U32_MAX)
    destination, method = r.string(), r.string()
    body_type = BodyType(r.varint())
    body = Body(body_type, r.bytes_() if body_type != BodyType.EMPTY else b"")
    if r.pos != len(payload):
        raise ValueError(f"{len(payload) - r.pos} trailing bytes after the envelope")
    return Envelope(ident, kind, data, correlation, trace, deadline_us, priority,
                    destination, method, body)


# --------------------------------------------------------------------------------------------
# §7 the metrics segment
# --------------------------------------------------------------------------------------------

SEGMENT_LEN = 4096
_HEADER = (0x0047455344425753, 1, 64, 4096, 1024, 128, 16, 32)
W_HEARTBEAT, W_STATE, W_RECEIVED, W_OK, W_ERROR, W_TIMEOUT, W_IN_FLIGHT = 8, 9, 10, 11, 12, 13, 14
W_PUBLISHED, W_EVENTS_RECEIVED, W_LATENCY_SUM, W_HISTOGRAM = 15, 16, 17, 32


class State(IntEnum):
    STARTING = 0
    READY = 1
    BUSY = 2
    DRAINING = 3
    FINISHED = 4


class TaskState(IntEnum):
    FREE = 0
    RUNNING = 1
    DONE = 2
    FAILED = 3
    CANCELLED = 4


class Segment:
    """The 4096-byte shared segment: counters (one lock for all) and 16 task slots."""

    def __init__(self, fd: int) -> None:
        if sys.byteorder != "little":
            raise ValueError("the segment is little-endian; this host is not")
        self._map = mmap.mmap(fd, SEGMENT_LEN)  # MAP_SHARED, read-write
        self.words = memoryview(self._map).cast("Q")
        header = tuple(self.words[:8])
        if header != _HEADER:
            self.words.release()
            self._map.close()
            raise ValueError(f"unexpected segment header {header}")
        self._lock = threading.Lock()
        self._next_task_id = 1
        self._owned: set[int] = set()  # slots this process has claimed

    @classmethod
    def from_env(cls) -> Segment | None:
        """The segment named by ``SWITCHBOARD_SEGMENT_FD``, or None (absent or refused)."""
        raw = os.environ.get("SWITCHBOARD_SEGMENT_FD")
        if not raw:
            return None
        try:
            fd = int(raw)
            if fd <= 2:
                raise ValueError(f"fd {fd} is a standard stream")
            return cls(fd)
        except (ValueError, OSError) as err:
            log.error("metrics segment refused: %s", err)
            return None

    def add(self, word: int, delta: int = 1) -> None:
        with self._lock:
            self.words[word] = (self.words[word] + delta) & U64_MAX

    def set(self, word: int, value: int) -> None:
        with self._lock:
            self.words[word] = value & U64_MAX

    def record_latency(self, us: int) -> None:
        bucket = min(31, us.bit_length())  # 64 - clz64(us); 0 for 0 µs
        with self._lock:
            self.words[W_LATENCY_SUM] = (self.words[W_LATENCY_SUM] + us) & U64_MAX
            self.words[W_HISTOGRAM + bucket] += 1

    def claim_task(self, label: str, total: int) -> Task | None:
        """Claims a free slot (id and state both 0, or a finished one of ours)."""
        with self._lock:
            for slot in range(16):
                base = (1024 + 128 * slot) // 8
                word_id, state = self.words[base + 1], self.words[base + 2]
                free = word_id == 0 and state == TaskState.FREE
                finished = slot in self._owned and state in (
                    TaskState.DONE, TaskState.FAILED, TaskState.CANCELLED)
                if free or finished:
                    self._owned.add(slot)
                    task_id = self._next_task_id
                    self._next_task_id += 1
                    task = Task(self, base, task_id)
                    task.update(label=label, done=0, total=total, state=TaskState.RUNNING)
                    return task
        log.warning("no free task slot for %r", label)
        return None


class Task:
    """One task slot; every update is one seqlock write of the whole record."""

    def __init__(self, segment: Segment, base: int, task_id: int) -> None:
        self._words = segment.words
        self._base = base
        self._lock = threading.Lock()
        self.id = task_id
        self.label = ""
        self.done = 0
        self.total = 0
        self.state = TaskState.RUNNING

    def update(self, *, done: int | None = None, total: int | None = None,
               label: str | None = None, state: TaskState | None = None) -> None:
        with self._lock:
            if done is not None:
                self.done = done
            if total is not None:
                self.total = total
            if label is not None:
                self.label = label
            if state is not None:
                self.state = state
            raw = self.label.encode("utf-8")[:64].decode("utf-8", "ignore").encode("utf-8")
            label_words = memoryview(raw.ljust(64, b"\x00")).cast("Q")
            w, b = self._words, self._base
            s = w[b] & ~1 & U64_MAX
            w[b] = s + 1                     # odd: being written
            w[b + 1] = self.id
            w[b + 2] = int(self.state)
            w[b + 3] = self.done
            w[b + 4] = self.total
            w[b + 5] = len(raw)
            w[b + 6] = 0
            w[b + 7] = 0
            for i, word in enumerate(label_words):  # one aligned 8-byte store each
                w[b + 8 + i] = word
            w[b] = (s + 2) & U64_MAX          # even again: published

    def finish(self, state: TaskState = TaskState.DONE) -> None:
        self.update(state=state)


class NullTask(Task):
    """What `Service.task` returns when there is no segment or no free slot."""

    def __init__(self) -> None:  # no slot behind it: nothing to write
        self.id, self.label, self.done, self.total = 0, "", 0, 0
        self.state = TaskState.RUNNING

    def update(self, **_: Any) -> None:
        pass


# --------------------------------------------------------------------------------------------
# §5 the service
# --------------------------------------------------------------------------------------------

class ServiceError(Exception):
    """Raise from a handler to answer with this error code."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class CallError(ServiceError):
    """A call to another service failed; `code` says how."""


class JobFailed(Exception):
    """Raise from a job to end it with an error JobResult (code `internal` unless given)."""

    def __init__(self, message: str, code: ErrorCode = ErrorCode.INTERNAL) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Request:
    """A request being served: handlers get it as their second argument."""
    id: int
    method: str
    body: Body
    trace: int
    deadline: float | None  # time.monotonic() value, None for no deadline
    priority: int


Handler = Callable[[Any, Request], Any]
EventHandler = Callable[[str, Any], None]

_current = threading.local()


class Service:
    """One Switchboard service or job process. See the module docstring for usage."""

    def __init__(self, name: str, version: str = "0.1.0", *, workers: int = 8) -> None:
        self.name = name
        self.version = version
        self.handlers: dict[str, Handler] = {}
        self.topics: list[str] = []
        self.on_event: EventHandler | None = None
        self.welcome: Welcome | None = None
        self.segment: Segment | None = None
        self._workers = workers
        self._pool: ThreadPoolExecutor | None = None
        self._write_lock = threading.Lock()
        self._id_lock = threading.Lock()
        self._next_id = 1
        self._pending: dict[int, Future[Envelope]] = {}
        self._welcomed = threading.Event()
        self._hello_id = 0
        self._stopping = threading.Event()
        self._eof = threading.Event()     # stdin closed: no answer can arrive any more
        self._closed = threading.Event()  # finished: stops the heartbeat
        self._in_flight = 0
        self._idle = threading.Condition()

    # ---- declaring what the service does

    def method(self, name: str) -> Callable[[Handler], Handler]:
        """Decorator: serve `name` with the function (``fn(body, request) -> JSON value``)."""
        def register(fn: Handler) -> Handler:
            self.handlers[name] = fn
            return fn
        return register

    def subscribe(self, pattern: str, handler: EventHandler) -> None:
        """Receive events matching `pattern` (declared in Hello); ``handler(topic, body)``."""
        self.topics.append(pattern)
        self.on_event = handler

    # ---- running

    def run(self) -> int:
        """Handshake, then serve until Shutdown or EOF; returns the exit status (0)."""
        self._start()
        self._set_state(State.READY)
        self._send(Envelope(self._fresh_id(), Kind.READY))
        log.info("%s ready: methods %s", self.name, sorted(self.handlers))
        self._stopping.wait()
        return self._drain()

    def run_job(self, main: Callable[[dict[str, Any], Service], Any]) -> int:
        """Run a job: ``main(params, service)`` returns the JSON result or raises `JobFailed`.

        Sends one JobResult and returns the exit status: 0 on success, 1 on failure.
        """
        self._start()
        self._send(Envelope(self._fresh_id(), Kind.READY))
        self._set_state(State.BUSY)
        assert self.welcome is not None
        status, body = Status(), Body()
        try:
            try:
                params = json.loads(self.welcome.params) if self.welcome.params.strip() else {}
            except ValueError as err:
                raise JobFailed(f"params are not JSON: {err}", ErrorCode.BAD_REQUEST) from None
            if not isinstance(params, dict):
                raise JobFailed("params must be a JSON object", ErrorCode.BAD_REQUEST)
            body = Body.json(main(params, self))
        except JobFailed as err:
            status = Status(err.code, err.message)
        except Exception as err:  # noqa: BLE001 - the job's own bug becomes its result
            log.exception("job failed")
            status = Status(ErrorCode.INTERNAL, f"{type(err).__name__}: {err}")
        self._send(Envelope(self._fresh_id(), Kind.JOB_RESULT, status, body=body))
        log.info("job %s: %s", self.name, "ok" if status.ok else status.message)
        self._stopping.set()
        self._drain()
        return 0 if status.ok else 1

    def _start(self) -> None:
        if not logging.getLogger().handlers:
            logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                                format="%(levelname)s %(name)s: %(message)s")
        sys.stdout = sys.stderr  # fd 1 is for frames only
        self.segment = Segment.from_env()
        self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="handler")
        threading.Thread(target=self._read_loop, name="stdin", daemon=True).start()
        self._hello_id = self._fresh_id()
        hello = Hello(self.name, self.version, PROTOCOL_VERSION, sorted(self.handlers),
                      list(self.topics))
        self._send(Envelope(self._hello_id, Kind.HELLO, hello))
        if not self._welcomed.wait(30.0) or self.welcome is None:
            if self._stopping.is_set():
                # Stopped before the handshake was done (SPEC.md §5, Shutdown): a clean exit.
                raise SystemExit(0)
            raise SystemExit("switchboard: no Welcome from the console")
        if self.welcome.protocol_version != PROTOCOL_VERSION:
            log.warning("console speaks protocol %d", self.welcome.protocol_version)
        period = max(self.welcome.heartbeat_ms, 10) / 1000
        threading.Thread(target=self._heartbeat, args=(period,), name="heartbeat",
                         daemon=True).start()

    def _drain(self) -> int:
        """Finish requests in flight, then report finished; returns 0."""
        self._set_state(State.DRAINING)
        with self._idle:
            self._idle.wait_for(lambda: self._in_flight == 0, timeout=30.0)
        if self._pool:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self._set_state(State.FINISHED)
        self._closed.set()
        return 0

    @property
    def stopping(self) -> bool:
        """Whether the console asked us to stop (Shutdown or EOF): a long job should give up."""
        return self._stopping.is_set()

    @property
    def params(self) -> str:
        return self.welcome.params if self.welcome else ""

    @property
    def settings(self) -> dict[str, str]:
        return dict(self.welcome.settings) if self.welcome else {}

    # ---- progress

    def task(self, label: str, total: int = 0) -> Task:
        """Claim a task slot for progress (a no-op `Task` without a segment)."""
        task = self.segment.claim_task(label, total) if self.segment else None
        return task or NullTask()

    def set_backlog(self, waiting: int, oldest_accepted_unix_ms: int = 0) -> None:
        """Publish the work waiting inside this service (SPEC.md §7 words 18-20): `waiting`
        items accepted and not finished, the oldest accepted at `oldest_accepted_unix_ms`
        (ignored when none waits). The console alerts and scales on it; without it, it
        derives a backlog from the requests it routes here."""
        if self.segment:
            self.segment.set(18, waiting)
            self.segment.set(19, oldest_accepted_unix_ms if waiting else 0)
            self.segment.set(20, 1)  # published: the console stops deriving one

    # ---- calls and events

    def call(self, service: str, method: str, body: Any = None, *, timeout: float = 5.0,
             priority: int | None = None) -> Any:
        """Call `service.method` with a JSON body; returns the JSON answer or raises `CallError`.

        Inside a handler, the trace id is copied and the deadline is capped by the request's.
        """
        parent: Request | None = getattr(_current, "request", None)
        now = time.monotonic()
        deadline = now + timeout
        if parent and parent.deadline is not None:
            deadline = min(deadline, parent.deadline)
        if deadline <= now:
            raise CallError(ErrorCode.TIMEOUT, "no time left for the call")
        if self._eof.is_set():
            raise CallError(ErrorCode.UNAVAILABLE, "the console went away")
        ident = self._fresh_id()
        future: Future[Envelope] = Future()
        self._pending[ident] = future
        request = Envelope(
            ident, Kind.REQUEST, trace=parent.trace if parent else 0,
            deadline_us=max(1, int((deadline - now) * 1_000_000)),
            priority=priority if priority is not None else (parent.priority if parent else 1),
            destination=service, method=method,
            body=Body() if body is None else Body.json(body))
        try:
            self._send(request)
            # The console answers `timeout` itself; the grace covers a console that cannot.
            answer = future.result(timeout=deadline - now + 1.0)
        except TimeoutError:
            self._send(Envelope(self._fresh_id(), Kind.CANCEL, correlation=ident))
            raise CallError(ErrorCode.TIMEOUT, f"no answer from {service}.{method}") from None
        finally:
            self._pending.pop(ident, None)
        status = answer.data if isinstance(answer.data, Status) else Status()
        if status.code is not None:
            raise CallError(status.code, status.message)
        try:
            return answer.body.value()
        except ValueError as err:
            raise CallError(ErrorCode.BAD_REQUEST, f"undecodable answer: {err}") from None

    def publish(self, topic: str, body: Any = None) -> None:
        """Publish an event with a JSON body on `topic`."""
        if self.segment:
            self.segment.add(W_PUBLISHED)
        self._send(Envelope(self._fresh_id(), Kind.EVENT, destination=topic,
                            body=Body() if body is None else Body.json(body)))

    # ---- plumbing

    def _fresh_id(self) -> int:
        with self._id_lock:
            ident = self._next_id
            self._next_id += 1
            return ident

    def _send(self, env: Envelope) -> None:
        data = frame(encode_envelope(env))
        with self._write_lock:
            view = memoryview(data)
            while view:
                try:
                    written = os.write(1, view)
                except BrokenPipeError:
                    self._stopping.set()
                    return
                view = view[written:]

    def _set_state(self, state: State) -> None:
        if self.segment:
            self.segment.set(W_STATE, int(state))

    def _heartbeat(self, period: float) -> None:
        while not self._closed.wait(period):
            if self.segment:
                self.segment.add(W_HEARTBEAT)

    def _read_loop(self) -> None:
        """Reads frames from stdin until EOF, dispatching each one."""
        buf = bytearray()
        skipping = False  # inside an over-long frame
        while True:
            try:
                chunk = os.read(0, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                break
            buf += chunk
            while True:
                end = buf.find(0)
                if end < 0:
                    if len(buf) > MAX_FRAME:
                        log.warning("dropping a frame longer than 1 MiB")
                        buf.clear()
                        skipping = True
                    break
                raw = bytes(buf[:end])
                del buf[:end + 1]
                if skipping:
                    skipping = False
                    continue
                if raw:
                    self._dispatch_raw(raw)
        log.info("stdin closed")
        self._eof.set()
        self._stopping.set()
        self._welcomed.set()
        for future in list(self._pending.values()):
            if not future.done():
                future.set_result(Envelope(0, Kind.RESPONSE,
                                           Status(ErrorCode.UNAVAILABLE, "console went away")))

    def _dispatch_raw(self, raw: bytes) -> None:
        try:
            env = decode_envelope(cobs_decode(raw))
        except (ValueError, UnicodeDecodeError) as err:
            log.warning("bad frame from the console: %s", err)
            return
        match env.kind:
            case Kind.WELCOME if env.correlation == self._hello_id:
                assert isinstance(env.data, Welcome)
                self.welcome = env.data
                self._welcomed.set()
            case Kind.RESPONSE:
                future = self._pending.get(env.correlation)
                if future is not None and not future.done():
                    future.set_result(env)
            case Kind.REQUEST:
                self._accept(env)
            case Kind.EVENT:
                if self.segment:
                    self.segment.add(W_EVENTS_RECEIVED)
                if self.on_event and self._pool:
                    self._pool.submit(self._deliver_event, env)
            case Kind.SHUTDOWN:
                log.info("shutdown requested")
                self._stopping.set()
            case Kind.CANCEL | Kind.CREDIT:
                pass  # handlers run to completion; this SDK makes no streams
            case _:
                log.debug("ignored %s frame", env.kind.name)

    def _accept(self, env: Envelope) -> None:
        if self._stopping.is_set() or self._pool is None:
            self._respond(env, Status(ErrorCode.UNAVAILABLE, "draining"), Body())
            return
        with self._idle:
            self._in_flight += 1
        if self.segment:
            self.segment.add(W_RECEIVED)
            self.segment.add(W_IN_FLIGHT)
        self._pool.submit(self._serve, env, time.monotonic())

    def _serve(self, env: Envelope, started: float) -> None:
        deadline = started + env.deadline_us / 1e6 if env.deadline_us else None
        request = Request(env.id, env.method, env.body, env.trace, deadline, env.priority)
        status, body = Status(), Body()
        _current.request = request
        try:
            handler = self.handlers.get(env.method)
            if handler is None:
                raise ServiceError(ErrorCode.NOT_FOUND, f"no method {env.method!r}")
            try:
                value = env.body.value()
            except (ValueError, UnicodeDecodeError) as err:
                raise ServiceError(ErrorCode.BAD_REQUEST, str(err)) from None
            body = Body.json(handler(value, request))
        except ServiceError as err:
            status = Status(err.code, err.message)
        except Exception as err:  # noqa: BLE001 - a handler bug is an `internal` answer
            log.exception("handler %s failed", env.method)
            status = Status(ErrorCode.INTERNAL, f"{type(err).__name__}: {err}")
        finally:
            _current.request = None
        if self.segment:  # counted before answering, so a caller never sees stale numbers
            late = deadline is not None and time.monotonic() > deadline
            word = W_TIMEOUT if late else (W_OK if status.ok else W_ERROR)
            self.segment.add(word)
            self.segment.add(W_IN_FLIGHT, -1)
            self.segment.record_latency(int((time.monotonic() - started) * 1e6))
        self._respond(env, status, body)
        with self._idle:
            self._in_flight -= 1
            self._idle.notify_all()

    def _respond(self, request: Envelope, status: Status, body: Body) -> None:
        self._send(Envelope(self._fresh_id(), Kind.RESPONSE, status, correlation=request.id,
                            trace=request.trace, priority=request.priority, body=body))

    def _deliver_event(self, env: Envelope) -> None:
        try:
            assert self.on_event is not None
            self.on_event(env.destination, env.body.value())
        except Exception:  # noqa: BLE001 - one bad event must not stop the service
            log.exception("event handler failed for %s", env.destination)
            return
        if env.correlation:
            # A durable event: acknowledged once handled; until then the console sends it again.
            self._send(Envelope(self._fresh_id(), Kind.ACK, correlation=env.correlation))

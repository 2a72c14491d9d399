"""A long run of `pdl serve` under steady mixed load: does it stay steady, and does it keep
everything it acknowledged?

Usage::

    .venv/bin/python bench/soak.py [--minutes M] [--interval S] [--warmup W] [--json]
                                   [--backend sqlite|postgres] [--unary-concurrency N]
                                   [--subjects N]

It starts `pdl serve` as an operator would: in a session of its own, with no PDL_* setting
from outside, on a fresh data directory and a free loopback port, with the admin token the
server writes there (on PostgreSQL, PDL_DATABASE_URL and a fresh schema that the bench creates
and drops). It registers the subjects, then drives the server from one grpc.aio client, with
all of this at once for the whole run:

- unary RecordCollection calls from N concurrent callers, each with a fresh idempotency key,
  round-robin over the subjects;
- one RecordBatch of 100 such items in flight at a time, paced to a third of the unary rate
  in events;
- a read-your-writes read every 100 ms: GetSubjectView of the subject written last, with
  min_position set to that write's position (VIEW_BEHIND answers are retried and counted);
- one StreamAuditLog in follow mode from the start of the log.

A call that fails is retried with the same idempotency key, so every write ends up either
acknowledged or counted as unresolved. Every interval it prints one line: unary and batch
rates and latencies, read-your-writes waits, view lag and audit-stream lag, the RSS, open fds
and CPU of the server, its writer and its projection process, and the data files' sizes (on
PostgreSQL, the sizes of the schema's tables). The first interval after the warm-up is the
baseline. The report ends with last/first ratios, the largest write-ahead log seen against
its limit, and the largest view lag. Then it stops the load, waits for the views and the
audit stream, and compares every subject's view and state with what was acknowledged. It
SIGTERMs the server (exit code 0 expected, and every process of its session gone) and checks
the stopped store: every acknowledged write must be there once, at its acknowledged position.

Exit status: 0 when the run completes, whatever the figures and the shutdown checks say; 1
when the server did not start or died during the run, or acknowledged writes are missing
from the store. The server's processes, the temporary directory and the PostgreSQL schema are
removed on normal exit, on errors, on Ctrl-C and on SIGTERM.
"""
# ruff: noqa: E402 (the import path is fixed first: grpc.py and projections.py in this
# folder would hide the packages of those names)

from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import argparse
import array
import asyncio
import contextlib
import importlib.util
import json
import math
import os
import platform
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from types import ModuleType
from typing import Any
from uuid import UUID, uuid4

import grpc
import orjson
from grpc import aio

from ledger.recorders import _WAL_SIZE_LIMIT_BYTES as EVENTS_WAL_LIMIT
from projections.store import _WAL_SIZE_LIMIT_BYTES as VIEWS_WAL_LIMIT
from server._pb.pdl.v1 import common_pb2 as cpb
from server._pb.pdl.v1 import ledger_service_pb2 as lpb
from server._pb.pdl.v1 import ledger_service_pb2_grpc as lgrpc
from server._pb.pdl.v1 import query_service_pb2 as qpb
from server._pb.pdl.v1 import query_service_pb2_grpc as qgrpc
from server._pb.pdl.v1 import view_service_pb2 as vpb
from server._pb.pdl.v1 import view_service_pb2_grpc as vgrpc
from server.runtime import EVENTS_FILE, KEYS_FILE, VIEWS_FILE, open_runtime
from server.settings import load_settings


def _import_record() -> ModuleType:
    """`bench/record.py` (PostgreSQL helpers, git state, signals as Ctrl-C), by its path."""
    spec = importlib.util.spec_from_file_location("pdl_bench_record", _HERE / "record.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


record = _import_record()

BATCH = 100
BATCH_SHARE = 1 / 3
"""Batch events allowed per acknowledged unary call (a token bucket of at most two batches)."""
RYW_EVERY = 0.1
RYW_BUCKET_MS = 2
RYW_BUCKETS = 100  # the histogram of read-your-writes waits: 2 ms wide up to 200 ms, then one
WATCH_EVERY = 0.5
"""How often view lag, audit lag and the write-ahead logs' sizes are sampled (seconds)."""
CALL_TIMEOUT = 30.0
RETRIES = 5
RETRY_PAUSE = 0.2
READY_TIMEOUT = 120.0
STOP_TIMEOUT = 60.0
"""For `pdl serve` to exit after SIGTERM (it waits up to 10 s for in-flight calls)."""
GONE_TIMEOUT = 15.0
CATCH_UP_TIMEOUT = 120.0
REGISTER_CALLERS = 16
CHECK_CALLERS = 8
NAMESPACE = "soak"
CATEGORY = record.CATEGORY  # network_log.ip_address, source server_logs: no consent needed
SOURCE = record.SOURCE
PURPOSE = record.PURPOSE
PG_URL = f"postgresql://{record.PG_USER}@{record.PG_HOST}:{record.PG_PORT}/{record.PG_DB}"
ROLES = ("server", "writer", "projection")
WAL_LIMITS = {f"{EVENTS_FILE}-wal": EVENTS_WAL_LIMIT, f"{VIEWS_FILE}-wal": VIEWS_WAL_LIMIT}
UNRESOLVED = -1  # `Load.positions`: no answer after the retries (stored or not)
REFUSED = -2  # a batch item refused: it must not be stored
MIB = 1024 * 1024
_TICKS = os.sysconf("SC_CLK_TCK")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- what /proc says about a process ------------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    """`/proc/<pid>/stat` after the command name: state, ppid, pgrp, session, ... (man 5 proc)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def session_members(session: int) -> dict[int, tuple[int, str, int]]:
    """Every process of a session: pid -> (parent pid, state letter, nice)."""
    found: dict[int, tuple[int, str, int]] = {}
    with os.scandir("/proc") as entries:
        for entry in entries:
            if not entry.name.isdigit():
                continue
            fields = _stat(int(entry.name))
            if fields is not None and int(fields[3]) == session:
                found[int(entry.name)] = (int(fields[1]), fields[0], int(fields[16]))
    return found


def _open_files(pid: int) -> list[str]:
    names: list[str] = []
    with contextlib.suppress(OSError), os.scandir(f"/proc/{pid}/fd") as fds:
        for fd in fds:
            with contextlib.suppress(OSError):
                names.append(os.readlink(fd.path))
    return names


@dataclass(frozen=True)
class ProcessReading:
    """One process at one instant."""

    pid: int
    rss_kib: int | None
    fds: int | None
    threads: int | None
    cpu_seconds: float | None


def read_process(pid: int) -> ProcessReading:
    status: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
            name, _, value = line.partition(":")
            status[name] = value.strip()
    fields = _stat(pid)
    try:
        fds: int | None = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        fds = None
    return ProcessReading(
        pid=pid,
        rss_kib=int(status["VmRSS"].split()[0]) if "VmRSS" in status else None,
        fds=fds,
        threads=int(status["Threads"]) if "Threads" in status else None,
        cpu_seconds=(int(fields[11]) + int(fields[12])) / _TICKS if fields else None,
    )


def machine_seconds() -> tuple[float, float]:
    """CPU seconds the whole machine spent busy (all cores; idle and iowait left out) and
    stolen by the hypervisor."""
    values = [int(v) for v in Path("/proc/stat").read_text(encoding="ascii").split()[1:9]]
    return (sum(values) - values[3] - values[4] - values[7]) / _TICKS, values[7] / _TICKS


def wal_header(path: Path) -> tuple[int, int] | None:
    """A SQLite write-ahead log's checkpoint sequence number and salt-1 (bytes 12-19 of its
    header). Each time the log starts again from its beginning, salt-1 goes up by one in the
    shared header, whichever connection starts it; the sequence number is the count of the
    connection that did, kept per connection, so it falls when another connection does."""
    try:
        with path.open("rb") as wal:
            header = wal.read(20)
    except OSError:
        return None
    if len(header) < 20:
        return None
    return int.from_bytes(header[12:16], "big"), int.from_bytes(header[16:20], "big")


def reference_work_us() -> float:
    """CPU µs this thread spends on a fixed piece of pure-Python work (best of three): a
    measure of the host's speed, not of the server, to tell a slower host from a slower
    server when the first and last intervals are compared."""
    best = math.inf
    for _ in range(3):
        started = time.thread_time()
        sum(i * i % 7 for i in range(100_000))
        best = min(best, time.thread_time() - started)
    return 1e6 * best


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- the server, as an operator starts it -------------------------------------------------------


class PdlServe:
    """`pdl serve` in a session of its own, its stderr (one access line per call) to a file."""

    def __init__(self, workdir: Path, schema: str | None) -> None:
        self.data_dir = workdir / "data"
        self.log_path = workdir / "serve.log"
        self.schema = schema
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.token = ""
        self.pids: dict[str, set[int]] = {role: set() for role in ROLES}

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def settings_fields(self) -> dict[str, Any]:
        """What the server runs with, for `load_settings(environ={}, **...)`."""
        fields: dict[str, Any] = {"data_dir": self.data_dir}
        if self.schema is not None:
            fields.update(database_url=PG_URL, postgres_schema=self.schema)
        return fields

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PDL_")}
        if self.schema is not None:
            env.update(PDL_DATABASE_URL=PG_URL, PDL_POSTGRES_SCHEMA=self.schema)
        command = [
            str(Path(sys.executable).with_name("pdl")),
            "serve",
            "--data-dir",
            str(self.data_dir),
            "--listen",
            f"127.0.0.1:{self.port}",
        ]
        with self.log_path.open("wb") as output:
            self.process = subprocess.Popen(  # noqa: S603 (our own script, fixed arguments)
                command,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=output,
                env=env,
                start_new_session=True,
            )
        deadline = time.monotonic() + READY_TIMEOUT
        while b"pdl: serving on" not in self.log_path.read_bytes():
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"pdl serve exited with {self.process.returncode} before serving:\n"
                    + self.log_tail()
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"pdl serve did not start in {READY_TIMEOUT:.0f} s")
            time.sleep(0.1)
        self.token = (self.data_dir / "admin.token").read_text(encoding="ascii").strip()

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of its stderr other than access lines (one per call)."""
        try:
            with self.log_path.open("rb") as stream:
                stream.seek(max(0, stream.seek(0, os.SEEK_END) - MIB))
                text = stream.read().decode(errors="replace")
        except OSError:
            return ""
        kept = [line for line in text.splitlines() if not line.startswith('{"principal"')]
        return "\n".join(kept[-lines:])

    def check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(
                f"pdl serve exited with {self.process.returncode} during the run:\n"
                + self.log_tail()
            )

    def roles(self) -> dict[str, int]:
        """The server's pid, and those of its writer and projection process: the children of
        the forkserver it starts them from. The projection process has the views database
        open (SQLite) or runs at a lower priority (projection_nice, 10 by default)."""
        members = session_members(self.pid)
        found = {"server": self.pid}
        server_nice = members.get(self.pid, (0, "", 0))[2]
        for pid, (parent, state, nice) in members.items():
            if state == "Z" or members.get(parent, (0, "", 0))[0] != self.pid:
                continue  # only the server's grandchildren
            views = any(Path(name).name.startswith(VIEWS_FILE) for name in _open_files(pid))
            found["projection" if views or nice > server_nice else "writer"] = pid
        for role, pid in found.items():
            self.pids[role].add(pid)
        return found

    def terminate(self) -> dict[str, Any]:
        """SIGTERM, wait for the exit, then for every process of its session to be gone."""
        assert self.process is not None
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            code: int | None = self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            code = None
        stopped = time.monotonic() - started
        deadline = time.monotonic() + GONE_TIMEOUT
        left = self.live_members()
        while left and time.monotonic() < deadline:
            time.sleep(0.1)
            left = self.live_members()
        return {
            "exit_code": code,
            "seconds_to_exit": round(stopped, 2),
            "processes_left": sorted(left),
        }

    def live_members(self) -> list[int]:
        return [p for p, (_, state, _) in session_members(self.pid).items() if state != "Z"]

    def kill(self) -> None:
        """Stop whatever is left of its session: SIGTERM, then SIGKILL, to its process group
        (only while a process of the session is alive, so the group is still its own)."""
        if self.process is None:
            return
        for sig, wait in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
            if not self.live_members():
                break
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, sig)
            deadline = time.monotonic() + wait
            while self.live_members() and time.monotonic() < deadline:
                time.sleep(0.1)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5)
        left = self.live_members()
        if left:
            log(f"warning: processes of pdl serve still running: {left}")
        self.process = None


def pg_table_bytes(schema: str) -> dict[str, int]:
    """`pg_total_relation_size` (with indexes and TOAST) of every table of a schema."""
    query = (
        "SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relkind IN ('r', 'p')"
    )
    with record._pg_connect() as conn:
        rows = conn.execute(query, (schema,)).fetchall()
    return {str(name): int(size) for name, size in rows}


# --- the load -----------------------------------------------------------------------------------


@dataclass
class Window:
    """What the load did in one interval."""

    unary: list[float] = field(default_factory=list)  # seconds per acknowledged call
    batch: list[float] = field(default_factory=list)  # seconds per acknowledged batch
    batch_events: int = 0
    ryw: list[float] = field(default_factory=list)  # seconds until the view was read
    ryw_behind: int = 0  # VIEW_BEHIND (UNAVAILABLE) answers, retried
    ryw_stale: int = 0  # answers that did not include the write they were asked to wait for
    view_lag: list[int] = field(default_factory=list)
    audit_lag: list[int] = field(default_factory=list)
    audit_events: int = 0
    wal_max: dict[str, int] = field(default_factory=dict)
    errors: Counter[str] = field(default_factory=Counter)


class Load:
    """The client's side: what it sent, what was acknowledged at which position, and the
    coroutines that keep the server busy."""

    def __init__(self, channel: aio.Channel, token: str, subjects: int, data_dir: Path) -> None:
        self.ledger = lgrpc.LedgerServiceStub(channel)
        self.query = qgrpc.QueryServiceStub(channel)
        self.views = vgrpc.ViewServiceStub(channel)
        self.metadata = (("authorization", f"Bearer {token}"),)
        self.data_dir = data_dir
        self.prefix = f"soak-{uuid4().hex[:12]}-"
        self.n_subjects = subjects
        self.subjects: list[str] = []
        self.aggregates: list[str] = []
        self.positions = array.array("q")  # per write n: its acknowledged position, or < 0
        self.subject_of = array.array("l")  # per write n: the subject's index
        self.acked = [0] * subjects
        self.next_subject = 0
        self.last_position = 0
        self.last_write: tuple[str, int] | None = None
        self.credit = 0.0
        self.stopping = asyncio.Event()
        self.window = Window()
        self.replayed = 0
        self.ryw_histogram = [0] * (RYW_BUCKETS + 1)  # the whole run's waits, warm-up too
        self.audit_position = 0
        self.audit_events = 0
        self.audit_gaps = 0
        self.audit_missing = 0
        self.audit_out_of_order = 0
        self.audit_reconnects = 0
        self.audit_moved = asyncio.Event()

    def swap_window(self) -> Window:
        done, self.window = self.window, Window()
        return done

    async def call(self, method: Callable[..., Awaitable[Any]], request: Any) -> Any | None:
        """The answer, after retries with the same request (and so the same idempotency
        keys); None if there was none."""
        for attempt in range(RETRIES + 1):
            try:
                return await method(request, metadata=self.metadata, timeout=CALL_TIMEOUT)
            except aio.AioRpcError as error:
                self.window.errors[error.code().name] += 1
                if attempt < RETRIES:
                    await asyncio.sleep(RETRY_PAUSE * (attempt + 1))
        return None

    async def register(self) -> None:
        numbers = iter(range(self.n_subjects))
        self.subjects = [""] * self.n_subjects
        self.aggregates = [""] * self.n_subjects

        async def registrar() -> None:
            for n in numbers:
                request = lpb.RegisterSubjectRequest(
                    meta=cpb.CommandMeta(idempotency_key=f"{self.prefix}reg-{n}"),
                    account=cpb.AccountRef(namespace=NAMESPACE, account_id=f"account-{n}"),
                )
                answer = await self.call(self.ledger.RegisterSubject, request)
                if answer is None:
                    raise RuntimeError(f"registering subject {n} failed")
                self.subjects[n] = answer.recorded.subject_id
                self.aggregates[n] = answer.recorded.aggregate_id
                self.last_position = max(self.last_position, answer.recorded.position)

        await asyncio.gather(*(registrar() for _ in range(REGISTER_CALLERS)))

    def collection(self) -> tuple[int, lpb.RecordCollectionRequest]:
        """The next write: its number and its request (a fresh key, the next subject)."""
        n, s = len(self.positions), self.next_subject
        self.next_subject = (s + 1) % self.n_subjects
        self.positions.append(0)
        self.subject_of.append(s)
        return n, lpb.RecordCollectionRequest(
            meta=cpb.CommandMeta(idempotency_key=f"{self.prefix}{n}"),
            subject=cpb.SubjectRef(subject_id=self.subjects[s]),
            category=CATEGORY,
            source=SOURCE,
            purposes=[PURPOSE],
            values={"ip": f"198.51.100.{n % 256}"},
        )

    def acknowledge(self, n: int, recorded: cpb.Recorded) -> None:
        self.positions[n] = recorded.position
        self.acked[self.subject_of[n]] += 1
        self.last_position = max(self.last_position, recorded.position)
        self.replayed += recorded.replayed

    async def unary_caller(self) -> None:
        while not self.stopping.is_set():
            n, request = self.collection()
            started = time.perf_counter()
            answer = await self.call(self.ledger.RecordCollection, request)
            if answer is None:
                self.positions[n] = UNRESOLVED
                continue
            self.window.unary.append(time.perf_counter() - started)
            self.acknowledge(n, answer.recorded)
            self.last_write = (request.subject.subject_id, answer.recorded.position)
            self.credit = min(self.credit + BATCH_SHARE, 2.0 * BATCH)

    async def batcher(self) -> None:
        while not self.stopping.is_set():
            if self.credit < BATCH:
                await asyncio.sleep(0.02)
                continue
            self.credit -= BATCH
            items = [self.collection() for _ in range(BATCH)]
            request = lpb.RecordBatchRequest(
                items=[lpb.BatchItem(collection=collection) for _, collection in items]
            )
            started = time.perf_counter()
            answer = await self.call(self.ledger.RecordBatch, request)
            if answer is None:
                for n, _ in items:
                    self.positions[n] = UNRESOLVED
                continue
            self.window.batch.append(time.perf_counter() - started)
            for (n, _), outcome in zip(items, answer.outcomes, strict=True):
                if outcome.HasField("recorded"):
                    self.acknowledge(n, outcome.recorded)
                    self.window.batch_events += 1
                else:
                    self.positions[n] = REFUSED
                    self.window.errors[f"batch item {outcome.refusal.reason}"] += 1

    async def read_at(self, subject_id: str, position: int) -> tuple[Any, int]:
        """GetSubjectView waiting for `position`, asked again while it answers UNAVAILABLE
        (VIEW_BEHIND); the answer and how many times it was asked again."""
        request = vpb.GetSubjectViewRequest(
            subject=cpb.SubjectRef(subject_id=subject_id), min_position=position
        )
        deadline, behind = time.perf_counter() + CATCH_UP_TIMEOUT, 0
        while True:
            try:
                answer = await self.views.GetSubjectView(
                    request, metadata=self.metadata, timeout=CALL_TIMEOUT
                )
            except aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.UNAVAILABLE or time.perf_counter() > deadline:
                    raise
                behind += 1
                continue
            return answer, behind

    async def reader(self) -> None:
        """Read your writes, every 100 ms: the subject written last, at that write's position."""
        due = time.perf_counter()
        while not self.stopping.is_set():
            due = max(due + RYW_EVERY, time.perf_counter())  # late: at once, no burst after
            await asyncio.sleep(due - time.perf_counter())
            if self.last_write is None:
                continue
            subject_id, position = self.last_write
            started = time.perf_counter()
            try:
                answer, behind = await self.read_at(subject_id, position)
            except aio.AioRpcError as error:
                self.window.errors[f"read {error.code().name}"] += 1
                continue
            window = self.window
            waited = time.perf_counter() - started
            window.ryw.append(waited)
            self.ryw_histogram[min(int(waited * 1000) // RYW_BUCKET_MS, RYW_BUCKETS)] += 1
            window.ryw_behind += behind
            window.ryw_stale += answer.position < position or answer.view.last_position < position

    async def watcher(self) -> None:
        """Samples the views' lag behind the last acknowledged write (a view read that does
        not wait), the audit stream's, and the sizes of the write-ahead logs."""
        request = vpb.GetSubjectViewRequest(subject=cpb.SubjectRef(subject_id=self.subjects[0]))
        wal_paths = [self.data_dir / name for name in WAL_LIMITS]
        while not self.stopping.is_set():
            last = self.last_position
            try:
                answer = await self.views.GetSubjectView(
                    request, metadata=self.metadata, timeout=CALL_TIMEOUT
                )
            except aio.AioRpcError as error:
                self.window.errors[f"lag read {error.code().name}"] += 1
            else:
                self.window.view_lag.append(max(0, last - answer.position))
            self.window.audit_lag.append(max(0, self.last_position - self.audit_position))
            for path in wal_paths:
                with contextlib.suppress(OSError):
                    size = path.stat().st_size
                    self.window.wal_max[path.name] = max(
                        size, self.window.wal_max.get(path.name, 0)
                    )
            await asyncio.sleep(WATCH_EVERY)

    async def audit_follower(self) -> None:
        """Tail the log from its start, counting events and checking their positions; until
        cancelled. A broken stream is opened again after the last position received."""
        while True:
            request = qpb.StreamAuditLogRequest(from_position=self.audit_position + 1, follow=True)
            stream = self.query.StreamAuditLog(request, metadata=self.metadata)
            try:
                async for page in stream:
                    self.audit_page([event.position for event in page.events])
            except aio.AioRpcError as error:
                self.window.errors[f"audit {error.code().name}"] += 1
                self.audit_reconnects += 1
                await asyncio.sleep(1.0)
            finally:
                stream.cancel()

    def audit_page(self, positions: list[int]) -> None:
        for position in positions:
            expected = self.audit_position + 1
            if position < expected:
                self.audit_out_of_order += 1
                continue
            if position > expected:
                self.audit_gaps += 1
                self.audit_missing += position - expected
            self.audit_position = position
        self.audit_events += len(positions)
        self.window.audit_events += len(positions)
        self.audit_moved.set()

    async def audit_reaches(self, position: int, seconds: float) -> bool:
        """Whether the audit stream reaches `position` within `seconds`."""
        deadline = time.perf_counter() + seconds
        while self.audit_position < position:
            self.audit_moved.clear()
            left = deadline - time.perf_counter()
            if left <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.audit_moved.wait(), left)
        return True

    def unresolved_by_subject(self) -> list[int]:
        counts = [0] * self.n_subjects
        for n, position in enumerate(self.positions):
            if position == UNRESOLVED:
                counts[self.subject_of[n]] += 1
        return counts


# --- figures ------------------------------------------------------------------------------------


def percentile(values: list[float] | list[int], q: float) -> float | None:
    """Nearest-rank percentile."""
    if not values:
        return None
    ordered = sorted(values)
    return float(ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)])


def percentile_ms(seconds: list[float], q: float) -> float | None:
    value = percentile(seconds, q)
    return None if value is None else 1000 * value


@dataclass
class Reading:
    """The server's processes and files at the end of an interval."""

    at: float
    processes: dict[str, ProcessReading]
    files: dict[str, int]
    wal_headers: dict[str, tuple[int, int] | None]
    pg_bytes: dict[str, int] | None
    bench_cpu: float
    machine: tuple[float, float]
    reference_us: float


def process_figures(
    now: Reading, before: Reading, seconds: float, events: int
) -> dict[str, dict[str, Any] | None]:
    """Each process's RSS, fds, threads and CPU: in all, in cores over the interval, and in
    µs per event recorded in it (unary calls and batch items)."""
    figures: dict[str, dict[str, Any] | None] = {}
    for role in ROLES:
        p = now.processes.get(role)
        if p is None:
            figures[role] = None
            continue
        q = before.processes.get(role)
        cores = None
        if (
            q is not None
            and q.pid == p.pid
            and p.cpu_seconds is not None
            and q.cpu_seconds is not None
        ):
            cores = (p.cpu_seconds - q.cpu_seconds) / seconds
        figures[role] = {
            "pid": p.pid,
            "rss_mib": p.rss_kib / 1024 if p.rss_kib is not None else None,
            "fds": p.fds,
            "threads": p.threads,
            "cpu_seconds": p.cpu_seconds,
            "cpu_cores": cores,
            "cpu_us_per_event": 1e6 * cores * seconds / events
            if cores is not None and events
            else None,
        }
    return figures


def interval_figures(
    index: int, window: Window, now: Reading, before: Reading, load: Load
) -> dict[str, Any]:
    seconds = now.at - before.at
    return {
        "index": index,
        "warmup": index == 0,
        "seconds": round(seconds, 2),
        "unary_calls": len(window.unary),
        "unary_calls_per_s": len(window.unary) / seconds,
        "unary_p50_ms": percentile_ms(window.unary, 50),
        "unary_p99_ms": percentile_ms(window.unary, 99),
        "batch_calls": len(window.batch),
        "batch_events_per_s": window.batch_events / seconds,
        "batch_p50_ms": percentile_ms(window.batch, 50),
        "batch_p99_ms": percentile_ms(window.batch, 99),
        "ryw_reads": len(window.ryw),
        "ryw_p50_ms": percentile_ms(window.ryw, 50),
        "ryw_p99_ms": percentile_ms(window.ryw, 99),
        "ryw_view_behind_retries": window.ryw_behind,
        "ryw_stale": window.ryw_stale,
        "view_lag_p50": percentile(window.view_lag, 50),
        "view_lag_max": max(window.view_lag, default=None),
        "audit_events": window.audit_events,
        "audit_lag_max": max(window.audit_lag, default=None),
        "last_position": load.last_position,
        "errors": dict(window.errors),
        "processes": process_figures(now, before, seconds, len(window.unary) + window.batch_events),
        "files_bytes": now.files,
        "wal_max_bytes": window.wal_max,
        "wal_restarts": {  # in this interval
            name: (header[1] - old[1]) % 2**32
            if header and (old := before.wal_headers[name])
            else None
            for name, header in now.wal_headers.items()
        },
        "wal_header_checkpoint_counter": {
            name: header[0] if header else None for name, header in now.wal_headers.items()
        },
        "pg_bytes": now.pg_bytes,
        "pg_total_bytes": sum(now.pg_bytes.values()) if now.pg_bytes is not None else None,
        "bench_cores": (now.bench_cpu - before.bench_cpu) / seconds,
        "machine_busy_cores": (now.machine[0] - before.machine[0]) / seconds,
        "machine_steal_cores": (now.machine[1] - before.machine[1]) / seconds,
        "reference_work_cpu_us": now.reference_us,
    }


def _num(value: float | None, spec: str = ",.0f") -> str:
    return "-" if value is None else format(value, spec)


def _by_role(interval: dict[str, Any], key: str, spec: str) -> str:
    return "/".join(_num((p or {}).get(key), spec) for p in interval["processes"].values())


def _storage(interval: dict[str, Any]) -> str:
    """Sizes in MiB: each database + its write-ahead log (on PostgreSQL: the tables)."""
    if interval["pg_total_bytes"] is not None:
        return f"PG tables {interval['pg_total_bytes'] / MIB:,.1f}"
    files = interval["files_bytes"]
    parts = []
    for name in (EVENTS_FILE, VIEWS_FILE, KEYS_FILE):
        main, wal = files.get(name), files.get(f"{name}-wal")
        parts.append(
            f"{name.split('.')[0][:2]} {_num(main and main / MIB, ',.1f')}"
            f"+{_num(wal and wal / MIB, '.1f')}"
        )
    return " ".join(parts)


def _restarts(interval: dict[str, Any]) -> str:
    return "/".join(_num(interval["wal_restarts"].get(n), "d") for n in WAL_LIMITS)


def interval_line(i: dict[str, Any], elapsed: float) -> str:
    label = "warm-up" if i["warmup"] else f"#{i['index']}"
    return (
        f"{label:>7} {elapsed / 60:5.1f} min | unary {i['unary_calls_per_s']:,.0f}/s "
        f"p50 {_num(i['unary_p50_ms'], '.1f')} p99 {_num(i['unary_p99_ms'], '.1f')} ms | "
        f"batch {i['batch_events_per_s']:,.0f} ev/s | ryw p50 {_num(i['ryw_p50_ms'], '.1f')} "
        f"p99 {_num(i['ryw_p99_ms'], '.1f')} ms ({i['ryw_view_behind_retries']} behind) | "
        f"view lag max {_num(i['view_lag_max'])} | audit +{i['audit_events']:,} "
        f"lag max {_num(i['audit_lag_max'])} | RSS MiB {_by_role(i, 'rss_mib', '.0f')} | "
        f"fds {_by_role(i, 'fds', 'd')} | cores {_by_role(i, 'cpu_cores', '.2f')} "
        f"(bench {i['bench_cores']:.2f}), µs/ev {_by_role(i, 'cpu_us_per_event', '.0f')}, "
        f"CPU s {_by_role(i, 'cpu_seconds', '.0f')} | "
        f"MiB {_storage(i)}"
        + ("" if i["pg_bytes"] is not None else f" (WAL restarts {_restarts(i)})")
        + (f" | errors {i['errors']}" if i["errors"] else "")
    )


# --- the run ------------------------------------------------------------------------------------


class Soak:
    """One run: the server, the load, the intervals, the end checks, and their clean-up."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.schema = f"pdl_soak_{uuid4().hex[:12]}" if args.backend == "postgres" else None
        self.schema_created = False
        self.server = PdlServe(workdir, self.schema)
        self.load: Load | None = None
        self.channel: aio.Channel | None = None
        self.intervals: list[dict[str, Any]] = []
        self.report: dict[str, Any] = {"checks": {}}

    def start(self) -> None:
        if self.schema is not None:
            self.schema_created = True  # noted first, so a failed CREATE is still dropped
            record._pg_execute(f'CREATE SCHEMA "{self.schema}"')
        self.server.start()
        roles = self.server.roles()
        log(f"pdl serve on 127.0.0.1:{self.server.port}: pids {roles}")
        self.report["checks"]["server_started"] = True

    def read(self) -> Reading:
        roles = self.server.roles()
        files: dict[str, int] = {}
        with os.scandir(self.server.data_dir) as entries:
            for entry in entries:
                with contextlib.suppress(OSError):  # a file may go meanwhile
                    files[entry.name] = entry.stat().st_size
        headers = {name: wal_header(self.server.data_dir / name) for name in WAL_LIMITS}
        return Reading(
            at=time.perf_counter(),
            processes={role: read_process(pid) for role, pid in roles.items()},
            files=files,
            wal_headers=headers,
            pg_bytes=pg_table_bytes(self.schema) if self.schema is not None else None,
            bench_cpu=time.process_time(),
            machine=machine_seconds(),
            reference_us=reference_work_us(),
        )

    async def wait_until(self, when: float, tasks: list[asyncio.Task[None]]) -> None:
        """Sleep until `when`, checking that the server and every load task still run."""
        while (left := when - time.perf_counter()) > 0:
            await asyncio.sleep(min(left, 0.5))
            self.server.check_alive()
            for task in tasks:
                if task.done() and not task.cancelled() and task.exception() is not None:
                    raise RuntimeError("a load task failed") from task.exception()

    async def run_intervals(self, load: Load, tasks: list[asyncio.Task[None]]) -> None:
        args = self.args
        count = max(1, round(args.minutes * 60 / args.interval))
        ends = [args.warmup, *(args.warmup + k * args.interval for k in range(1, count + 1))]
        if args.warmup <= 0:
            ends = ends[1:]
        started = time.perf_counter()
        before = await asyncio.to_thread(self.read)
        load.swap_window()
        for end in ends:
            await self.wait_until(started + end, tasks)
            window = load.swap_window()
            now = await asyncio.to_thread(self.read)
            index = len(self.intervals) + (0 if args.warmup > 0 else 1)
            interval = interval_figures(index, window, now, before, load)
            self.intervals.append(interval)
            log(interval_line(interval, now.at - started))
            before = now

    async def soak(self) -> None:
        self.channel = aio.insecure_channel(f"127.0.0.1:{self.server.port}")
        await asyncio.wait_for(self.channel.channel_ready(), 30)
        load = self.load = Load(
            self.channel, self.server.token, self.args.subjects, self.server.data_dir
        )
        log(f"registering {self.args.subjects} subjects")
        await load.register()
        self.report["registered_at_position"] = load.last_position
        audit = asyncio.create_task(load.audit_follower())
        coroutines = [load.unary_caller() for _ in range(self.args.unary_concurrency)]
        coroutines += [load.batcher(), load.reader(), load.watcher()]
        tasks = [asyncio.create_task(c) for c in coroutines]
        log(
            f"load on: {self.args.unary_concurrency} unary callers, batches of {BATCH}, "
            f"read-your-writes every {RYW_EVERY * 1000:.0f} ms, the audit stream; "
            f"{self.args.warmup:.0f} s warm-up, then {self.args.minutes:g} min "
            f"in intervals of {self.args.interval:g} s"
        )
        try:
            await self.run_intervals(load, tasks)
        except BaseException:
            for task in [*tasks, audit]:
                task.cancel()
            raise
        finally:
            load.stopping.set()
        stopped = time.perf_counter()
        await asyncio.gather(*tasks)
        self.report["drain"] = {"load_stopped_seconds": round(time.perf_counter() - stopped, 2)}
        self.report["load"] = {
            "writes_sent": len(load.positions),
            "acknowledged": sum(1 for p in load.positions if p > 0),
            "unresolved": sum(1 for p in load.positions if p == UNRESOLVED),
            "refused": sum(1 for p in load.positions if p == REFUSED),
            "replayed_answers": load.replayed,
        }
        await self.catch_up(load, audit)
        await self.check_online(load)
        await self.channel.close()
        self.channel = None

    async def catch_up(self, load: Load, audit: asyncio.Task[None]) -> None:
        """Wait for the views and the audit stream to reach the last acknowledged write."""
        final, started = load.last_position, time.perf_counter()
        _answer, behind = await load.read_at(load.subjects[0], final)
        drain = self.report["drain"]
        drain.update(
            last_acknowledged_position=final,
            views_caught_up_seconds=round(time.perf_counter() - started, 3),
            views_behind_answers=behind,
        )
        started = time.perf_counter()
        audit_reached = await load.audit_reaches(final, CATCH_UP_TIMEOUT)
        drain["audit_caught_up_seconds"] = (
            round(time.perf_counter() - started, 3) if audit_reached else None
        )
        audit.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await audit
        self.report["audit"] = {
            "events": load.audit_events,
            "last_position": load.audit_position,
            "gaps": load.audit_gaps,
            "missing_positions": load.audit_missing,
            "out_of_order": load.audit_out_of_order,
            "reconnects": load.audit_reconnects,
        }
        self.report["checks"]["audit_stream_complete_in_order"] = (
            audit_reached
            and load.audit_events == load.audit_position
            and load.audit_gaps == load.audit_out_of_order == 0
        )

    async def check_online(self, load: Load) -> None:
        """Each subject's view (at the last position) and state against what was
        acknowledged (plus, at most, its unresolved writes)."""
        unresolved = load.unresolved_by_subject()
        final, subjects = load.last_position, iter(range(load.n_subjects))
        wrong: dict[str, list[int]] = {"view": [], "state": []}

        async def checker() -> None:
            for s in subjects:
                ref = cpb.SubjectRef(subject_id=load.subjects[s])
                answer, _ = await load.read_at(load.subjects[s], final)
                view = answer.view
                state = await load.query.GetSubjectState(
                    qpb.GetSubjectStateRequest(subject=ref),
                    metadata=load.metadata,
                    timeout=CALL_TIMEOUT,
                )
                low, high = load.acked[s], load.acked[s] + unresolved[s]
                in_view = sum(c.collections for c in view.categories)
                if not (low <= in_view <= high and view.events == in_view + 1):
                    wrong["view"].append(s)
                if not low <= sum(h.collections for h in state.state.held) <= high:
                    wrong["state"].append(s)

        started = time.perf_counter()
        await asyncio.gather(*(checker() for _ in range(CHECK_CALLERS)))
        self.report["online_check"] = {
            "subjects": load.n_subjects,
            "views_not_matching": len(wrong["view"]),
            "states_not_matching": len(wrong["state"]),
            "seconds": round(time.perf_counter() - started, 1),
        }
        self.report["checks"]["views_match_acknowledged"] = not wrong["view"]
        self.report["checks"]["subject_states_match_acknowledged"] = not wrong["state"]

    def stop_server(self) -> None:
        log("stopping pdl serve (SIGTERM)")
        stop = self.server.terminate()
        stop["pids_seen"] = {role: sorted(pids) for role, pids in self.server.pids.items()}
        stop["restarts"] = {role: len(pids) - 1 for role, pids in self.server.pids.items() if pids}
        self.report["stop"] = stop
        self.report["checks"]["server_exit_code_0"] = stop["exit_code"] == 0
        self.report["checks"]["server_processes_gone"] = not stop["processes_left"]
        self.report["server_log"] = server_log_summary(self.server.log_path)

    def close(self) -> None:
        """Stop the server, drop the schema, remove the directory. Never raises."""
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C waits
        try:
            try:
                self.server.kill()
            except Exception as exc:  # noqa: BLE001 (clean-up goes on regardless)
                log(f"warning: stopping pdl serve: {type(exc).__name__}: {exc}")
            if self.schema is not None and self.schema_created:
                try:
                    record._pg_execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
                    log(f"dropped schema {self.schema}")
                except Exception as exc:  # noqa: BLE001
                    log(f"warning: could not drop schema {self.schema}: {exc}")
            shutil.rmtree(self.workdir, ignore_errors=True)
            log(f"removed {self.workdir}")
        finally:
            signal.signal(signal.SIGINT, previous)


def server_log_summary(path: Path) -> dict[str, Any]:
    """The server's access lines by status, and its other lines (the first few kept)."""
    statuses: Counter[str] = Counter()
    other: list[str] = []
    other_count = 0
    with contextlib.suppress(OSError), path.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            if line.startswith('{"principal"'):
                statuses[str(orjson.loads(line).get("status"))] += 1
            elif not line.startswith("pdl: "):
                other_count += 1
                if len(other) < 20:
                    other.append(line.rstrip("\n")[:300])
    return {
        "bytes": path.stat().st_size if path.exists() else None,
        "access_by_status": dict(statuses),
        "other_lines": other_count,
        "other_first": other,
    }


# --- the stored log against what was acknowledged ---------------------------------------------


@dataclass
class StoreTally:
    """What the scan of the stopped store found, against `Load.positions`."""

    seen: bytearray
    counts: Counter[str] = field(default_factory=Counter)
    collections: list[int] = field(default_factory=list)
    registrations: list[int] = field(default_factory=list)


def _tally(note: Any, load: Load, subject_index: dict[UUID, int], tally: StoreTally) -> None:
    s = subject_index.get(note.originator_id)
    if note.topic.endswith(".SubjectRegistered") and s is not None:
        tally.registrations[s] += 1
        return
    if not note.topic.endswith(".DataCollected"):
        return
    key = str(orjson.loads(note.state)["payload"]["_data_"]["idempotency_key"])
    if not key.startswith(load.prefix) or s is None:
        tally.counts["not_from_this_run"] += 1
        return
    n = int(key.removeprefix(load.prefix))
    if n >= len(tally.seen) or tally.seen[n]:
        tally.counts["duplicate_or_unknown_key"] += 1
        return
    tally.seen[n] = 1
    tally.collections[s] += 1
    expected = load.positions[n]
    if s != load.subject_of[n]:
        tally.counts["wrong_subject"] += 1
    if expected > 0 and expected != note.id:
        tally.counts["wrong_position"] += 1
    elif expected == REFUSED:
        tally.counts["refused_but_stored"] += 1
    elif expected <= 0:
        tally.counts["stored_unacknowledged"] += 1


def verify_store(fields: dict[str, Any], load: Load) -> dict[str, Any]:
    """Open the stopped server's store and find every acknowledged write in its log: once,
    for its subject, at the position it was acknowledged with."""
    started = time.perf_counter()
    runtime = open_runtime(load_settings(environ={}, projections="external", **fields))
    tally = StoreTally(
        seen=bytearray(len(load.positions)),
        collections=[0] * load.n_subjects,
        registrations=[0] * load.n_subjects,
    )
    subject_index = {UUID(a): s for s, a in enumerate(load.aggregates)}
    try:
        recorder = runtime.ledger.recorder
        last = recorder.max_notification_id() or 0
        position = 1
        while position <= last:
            page = recorder.select_notifications(position, 1000, stop=last)
            if not page:
                break
            for note in page:
                _tally(note, load, subject_index, tally)
            position = page[-1].id + 1
    finally:
        runtime.close()
    acknowledged = sum(1 for p in load.positions if p > 0)
    missing = sum(1 for n, p in enumerate(load.positions) if p > 0 and not tally.seen[n])
    unresolved = load.unresolved_by_subject()
    subjects_off = sum(
        1
        for s in range(load.n_subjects)
        if not load.acked[s] <= tally.collections[s] <= load.acked[s] + unresolved[s]
    )
    bad = {k: v for k, v in tally.counts.items() if k != "stored_unacknowledged"}
    result = {
        "log_last_position": last,
        "acknowledged": acknowledged,
        "unresolved": sum(unresolved),
        "found": sum(tally.seen),
        "missing": missing,
        **dict(tally.counts),
        "subjects_not_matching": subjects_off,
        "registrations_not_once": sum(1 for r in tally.registrations if r != 1),
        "seconds": round(time.perf_counter() - started, 1),
    }
    result["passed"] = (
        missing == 0 and not bad and subjects_off == 0 and not result["registrations_not_once"]
    )
    return result


# --- the report ---------------------------------------------------------------------------------


RATIO_FIGURES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("unary calls/s", ("unary_calls_per_s",)),
    ("unary p99 ms", ("unary_p99_ms",)),
    ("batch events/s", ("batch_events_per_s",)),
    ("read-your-writes p99 ms", ("ryw_p99_ms",)),
    *((f"{role} RSS MiB", ("processes", role, "rss_mib")) for role in ROLES),
    *((f"{role} open fds", ("processes", role, "fds")) for role in ROLES),
    *((f"{role} CPU µs/event", ("processes", role, "cpu_us_per_event")) for role in ROLES),
    ("reference work CPU µs (host speed)", ("reference_work_cpu_us",)),
)


def _mean(values: list[Any]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def _get(interval: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = interval
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def ryw_histogram(load: Load | None) -> dict[str, int]:
    """Read-your-writes waits by 2 ms bucket ("from-to" ms; the last is from 200 ms on)."""
    if load is None:
        return {}
    width, counts = RYW_BUCKET_MS, load.ryw_histogram
    named = {f"{b * width}-{(b + 1) * width}": n for b, n in enumerate(counts[:-1]) if n}
    if counts[-1]:
        named[f"{RYW_BUCKETS * width}-"] = counts[-1]
    return named


def summarise(soak: Soak, started_at: str, load0: list[float], git0: dict[str, Any]) -> None:
    measured = [i for i in soak.intervals if not i["warmup"]]
    ratios: dict[str, Any] = {}
    if measured:
        first, last = measured[0], measured[-1]
        half = len(measured) // 2
        for label, path in RATIO_FIGURES:
            a, b = _get(first, path), _get(last, path)
            early = _mean([_get(i, path) for i in measured[:half]])
            late = _mean([_get(i, path) for i in measured[half:]])
            ratios[label] = {
                "first": a,
                "last": b,
                "ratio": b / a if a and b is not None else None,
                "second_half_over_first_half": late / early if early and late is not None else None,
            }
    wal: dict[str, Any] = {}  # SQLite's write-ahead logs (PostgreSQL's are not the bench's)
    for name, limit in WAL_LIMITS.items() if soak.schema is None else ():
        largest = max((i["wal_max_bytes"].get(name, 0) for i in soak.intervals), default=0)
        restarts = [i["wal_restarts"].get(name) or 0 for i in soak.intervals]
        wal[name] = {
            "max_bytes": largest,
            "limit_bytes": limit,
            "max_over_limit": largest / limit,
            "restarts": sum(restarts),
        }
    r = soak.report
    r.update(
        benchmark="soak",
        created_at=started_at,
        python=platform.python_version(),
        grpcio=metadata.version("grpcio"),
        eventsourcing=metadata.version("eventsourcing"),
        platform=platform.platform(),
        cpu_count=os.cpu_count(),
        load_average_at_start=load0,
        load_average_at_end=list(os.getloadavg()),
        git={**git0, "at_end": record.git_state()},
        settings={
            "backend": soak.args.backend,
            "minutes": soak.args.minutes,
            "interval_seconds": soak.args.interval,
            "warmup_seconds": soak.args.warmup,
            "unary_concurrency": soak.args.unary_concurrency,
            "subjects": soak.args.subjects,
            "batch": BATCH,
            "batch_events_per_unary_call": BATCH_SHARE,
            "ryw_every_seconds": RYW_EVERY,
            "watch_every_seconds": WATCH_EVERY,
            "schema": soak.schema,
        },
        intervals=soak.intervals,
        ratios_last_over_first=ratios,
        wal=wal,
        view_lag_max=max((i["view_lag_max"] or 0 for i in measured), default=None),
        ryw_wait_histogram_ms=ryw_histogram(soak.load),
        audit_lag_max=max((i["audit_lag_max"] or 0 for i in measured), default=None),
    )


def print_report(report: dict[str, Any]) -> None:
    from rich.console import Console  # noqa: PLC0415 (only for the human-readable report)
    from rich.table import Table  # noqa: PLC0415

    console = Console(file=sys.stdout, width=None if sys.stdout.isatty() else 210)
    s = report["settings"]
    table = Table(
        title=f"pdl serve soak, {s['backend']}: {s['minutes']:g} min after {s['warmup_seconds']:g}"
        f" s warm-up, {s['unary_concurrency']} unary callers + batches of {s['batch']}"
    )
    columns = (
        "interval",
        "unary/s",
        "p50/p99 ms",
        "batch ev/s",
        "ryw p50/p99 ms",
        "view lag max",
        "audit lag max",
        "RSS MiB srv/wr/pj",
        "fds",
        "CPU µs/ev srv/wr/pj",
        "MiB ev/vw/ke + WAL",
        "WAL restarts",
    )
    for column in columns:
        table.add_column(column, justify="left" if column in ("interval", columns[-2]) else "right")
    for i in report["intervals"]:
        table.add_row(
            "warm-up" if i["warmup"] else str(i["index"]),
            _num(i["unary_calls_per_s"]),
            f"{_num(i['unary_p50_ms'], '.1f')}/{_num(i['unary_p99_ms'], '.1f')}",
            _num(i["batch_events_per_s"]),
            f"{_num(i['ryw_p50_ms'], '.1f')}/{_num(i['ryw_p99_ms'], '.1f')}",
            _num(i["view_lag_max"]),
            _num(i["audit_lag_max"]),
            _by_role(i, "rss_mib", ".0f"),
            _by_role(i, "fds", "d"),
            _by_role(i, "cpu_us_per_event", ".0f"),
            _storage(i),
            "-" if i["pg_bytes"] is not None else _restarts(i),
        )
    console.print(table)
    ratios = Table(title="Last interval / first interval after the warm-up")
    for column in ("figure", "first", "last", "last/first", "mean 2nd half / 1st half"):
        ratios.add_column(column, justify="left" if column == "figure" else "right")
    for label, ratio in report["ratios_last_over_first"].items():
        ratios.add_row(
            label,
            _num(ratio["first"], ",.1f"),
            _num(ratio["last"], ",.1f"),
            _num(ratio["ratio"], ".3f"),
            _num(ratio["second_half_over_first_half"], ".3f"),
        )
    console.print(ratios)
    limits = Table(title="Largest seen, against the limit")
    for column in ("figure", "largest", "limit", "largest/limit"):
        limits.add_column(column, justify="left" if column == "figure" else "right")
    for name, w in report["wal"].items():
        limits.add_row(
            f"{name} bytes (restarted {w['restarts']:,} times)",
            _num(w["max_bytes"] and w["max_bytes"] / MIB, ",.1f") + " MiB",
            f"{w['limit_bytes'] / MIB:,.0f} MiB",
            _num(w["max_over_limit"], ".3f"),
        )
    limits.add_row("view lag (positions)", _num(report["view_lag_max"]), "", "")
    limits.add_row("audit stream lag (positions)", _num(report["audit_lag_max"]), "", "")
    console.print(limits)
    checks = Table(title="Checks")
    for column in ("check", "result"):
        checks.add_column(column)
    for name, passed in report["checks"].items():
        checks.add_row(name, "[green]PASS[/green]" if passed else "[red]FAIL[/red]")
    console.print(checks)
    for key in ("load", "drain", "audit", "online_check", "store_check", "stop", "server_log"):
        if key in report:
            console.print(f"{key}: {json.dumps(report[key])}", soft_wrap=True)
    console.print(f"git: {json.dumps(report['git'])}", soft_wrap=True)


# --- entry point --------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--minutes", type=float, default=10.0, help="measured length, after the warm-up (10)"
    )
    parser.add_argument(
        "--interval", type=float, default=30.0, help="seconds per sampled interval (30)"
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=30.0,
        help="seconds of load before the first measured interval, the baseline (30; 0: none)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.add_argument(
        "--backend",
        choices=("sqlite", "postgres"),
        default="sqlite",
        help="the event store, key store and views: SQLite files in the data directory, or "
        f"a fresh schema on PostgreSQL at {record.PG_HOST}:{record.PG_PORT} (sqlite)",
    )
    parser.add_argument(
        "--unary-concurrency", type=int, default=8, help="concurrent RecordCollection callers (8)"
    )
    parser.add_argument(
        "--subjects", type=int, default=1000, help="registered subjects, written round-robin"
    )
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.interval < 1 or args.warmup < 0:
        parser.error("--minutes must be > 0, --interval >= 1, --warmup >= 0")
    if args.unary_concurrency < 1 or args.subjects < BATCH:
        parser.error(f"--unary-concurrency must be >= 1 and --subjects >= {BATCH}")
    if args.backend == "postgres" and not record.postgres_listening():
        parser.error(f"nothing listens on {record.PG_HOST}:{record.PG_PORT}")
    return args


async def run(soak: Soak) -> None:
    soak.start()
    await soak.soak()
    soak.stop_server()
    assert soak.load is not None
    log("checking the stopped store against what was acknowledged")
    store = verify_store(soak.server.settings_fields(), soak.load)
    soak.report["store_check"] = store
    soak.report["checks"]["acknowledged_writes_stored"] = store["passed"]
    if not store["passed"]:
        log(f"FAILED: acknowledged writes missing or misplaced in the store: {store}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started_at, load0, git0 = (
        datetime.now(UTC).isoformat(),
        list(os.getloadavg()),
        record.git_state(),
    )
    soak = Soak(args, Path(tempfile.mkdtemp(prefix="pdl-bench-soak-")))
    with record.interrupts_as_keyboard_interrupt():
        try:
            asyncio.run(run(soak))
        except KeyboardInterrupt:
            log("interrupted: cleaning up")
            return 130
        except (RuntimeError, OSError, aio.AioRpcError) as error:
            log(f"FAILED: the run did not complete: {type(error).__name__}: {error}")
            return 1
        finally:
            soak.close()
    summarise(soak, started_at, load0, git0)
    if args.json:
        print(json.dumps(soak.report, indent=2))
    else:
        print_report(soak.report)
    ok = soak.report["checks"].get("acknowledged_writes_stored", False)
    failed = [name for name, passed in soak.report["checks"].items() if not passed]
    if failed:
        log(f"checks failed: {', '.join(failed)}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

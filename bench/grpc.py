"""The gRPC server against bare ceilings, in one run, with one aio client.

Usage::

    .venv/bin/python bench/grpc.py [--json] [--seconds S] [--rounds R] [--backend sqlite]
                                   [--warmup W] [--subjects N] [--audit-events N]
                                   [--batch-concurrency C] [--server-log info|warning]
                                   [--projections process|in-process|external]
                                   [--writer process|thread] [--profile DIR]

Two servers run in processes of their own (never in the bench's process, so client and
server do not share one GIL): a bare ``grpc.aio`` echo server with one raw-bytes unary
method, and the ledger's server, started as ``pdl serve`` starts it (``open_runtime``, which
settles the heap, then ``build_server``, default group commit; the views kept up to date
by its projection process unless ``--projections in-process|external``; every write made by
its writer process unless ``--writer thread``; the server's CPU counts its writer's and its
projection process's). One ``grpc.aio`` client, the
generated stubs and a bearer token drive both. Eight figures, in four same-run pairs:

- ``unary_c32`` / ``echo_c32``  RecordCollection (round-robin over N subjects, a fresh
  idempotency key per call) against echoing 300 bytes, 32 concurrent calls: calls/s.
  Target: ratio >= 0.65.
- ``unary_c8`` / ``echo_c8``    the same at 8 concurrent callers: p50 and p99 latency.
  Target: p99 ratio <= 2.
- ``batch_100`` / ``bare_100``  RecordBatch of 100 RecordCollection items per call (a few
  calls at once) against bare ``eventsourcing`` saving 100 new events of 100 aggregates in one
  ``save()`` in this process (``bench/record.py``'s bare application): events/s.
  Target: ratio >= 0.65.
- ``audit_stream`` / ``audit_read``  StreamAuditLog from position 1 over the log as it stood
  after set-up (>= 50k events, pages of 1000) against ``select_notifications`` pages of 1000
  plus ``mapper.to_domain_event`` on each, by a Ledger opened on the same store in this
  process: events/s. Target: ratio >= 0.5.

Every round runs each figure for a fixed window after a short warm-up; the two figures of a
pair run back to back, and the order of pairs and within pairs rotates per round. The report
gives medians and the median of the per-round ratios. Timings are never asserted: the exit
status is 0 when the run completes, whether or not a target is met. The temporary directory,
the server processes (and PostgreSQL schemas, with ``--backend postgres``) are removed on
normal exit, on errors, on Ctrl-C and on SIGTERM.
"""
# ruff: noqa: E402 (the import path must be fixed before anything imports `grpc`)

from __future__ import annotations

import sys
from pathlib import Path

# This script is called grpc.py, and Python puts its directory first on the import path:
# `import grpc` would find the script itself. Drop that directory before importing anything
# that imports grpc (spawned server processes inherit the cleaned path).
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import argparse
import asyncio
import contextlib
import importlib.util
import itertools
import json
import logging
import math
import multiprocessing
import os
import platform
import secrets
import shutil
import signal
import sqlite3
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from multiprocessing.connection import Connection
from types import ModuleType
from typing import Any
from uuid import uuid4

import grpc
from grpc import aio

from server._pb.pdl.v1 import common_pb2 as cpb
from server._pb.pdl.v1 import ledger_service_pb2 as lpb
from server._pb.pdl.v1 import ledger_service_pb2_grpc as lgrpc
from server._pb.pdl.v1 import query_service_pb2 as qpb
from server._pb.pdl.v1 import query_service_pb2_grpc as qgrpc
from server._pb.pdl.v1 import view_service_pb2 as vpb
from server._pb.pdl.v1 import view_service_pb2_grpc as vgrpc
from server.app import build_server
from server.auth import PrincipalRegistry, token_hash
from server.runtime import Runtime, collect_young_less_often, open_runtime, settle_heap
from server.settings import Scope, Settings, load_settings


def _load_record_bench() -> ModuleType:
    """`bench/record.py`, for its bare application, PostgreSQL helpers and git state.

    Registered under its own name, so `eventsourcing` can resolve the bare aggregate's topic.
    """
    name = "pdl_bench_record"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, _HERE / "record.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


record = _load_record_bench()

PRINCIPAL = "bench-grpc"
NAMESPACE = "bench"
CATEGORY = record.CATEGORY  # network_log.ip_address: not sensitive, collected by default
SOURCE = record.SOURCE
PURPOSE = record.PURPOSE
BATCH = 100
AUDIT_PAGE = 1000
SETUP_BATCH = 1000  # items per RecordBatch call while filling the log (the server's maximum)
ECHO_BYTES = 300
ECHO_METHOD = "/bench.Echo/Echo"
UNARY_THROUGHPUT_CALLERS = 32
LATENCY_CALLERS = 8
CALL_TIMEOUT = 60.0
MAX_CALLS = 10_000_000  # every loop is bounded; the clock normally ends it long before
MAX_PASSES = 100_000
READY_TIMEOUT = 120.0
STOP_GRACE = 2.0
MESSAGE_BYTES = 32 * 1024 * 1024
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MESSAGE_BYTES),
    ("grpc.max_send_message_length", MESSAGE_BYTES),
]

# figure -> (server it talks to, unit of its rate, what it is)
FIGURES: dict[str, tuple[str | None, str, str]] = {
    "unary_c32": ("ledger", "calls/s", "RecordCollection, 32 concurrent calls"),
    "echo_c32": ("echo", "calls/s", "bare aio echo of 300 bytes, 32 concurrent calls"),
    "unary_c8": ("ledger", "calls/s", "RecordCollection, 8 concurrent callers"),
    "echo_c8": ("echo", "calls/s", "bare aio echo of 300 bytes, 8 concurrent callers"),
    "batch_100": ("ledger", "events/s", "RecordBatch, 100 RecordCollection items per call"),
    "bare_100": (None, "events/s", "eventsourcing save() of 100 aggregates x 1 event"),
    "audit_stream": ("ledger", "events/s", "StreamAuditLog, pages of 1000"),
    "audit_read": (None, "events/s", "select_notifications(1000) + to_domain_event"),
}
RECORDING_FIGURES = frozenset({"unary_c32", "unary_c8", "batch_100"})
"""The figures that record events, which the views then fold."""
VIEWS_CATCH_UP_TIMEOUT = 120.0
PAIRS = (
    ("unary_c32", "echo_c32"),
    ("unary_c8", "echo_c8"),
    ("batch_100", "bare_100"),
    ("audit_stream", "audit_read"),
)
PAIR_NAMES = {"unary": PAIRS[0], "latency": PAIRS[1], "batch": PAIRS[2], "audit": PAIRS[3]}
"""`--pairs` names: which pairs of figures a run measures."""


@dataclass(frozen=True)
class RatioSpec:
    top: str
    bottom: str
    metric: str  # "rate" or "p99_ms"
    target: float
    higher_is_better: bool = True


RATIOS = {
    "unary/echo calls/s (c=32)": RatioSpec("unary_c32", "echo_c32", "rate", 0.65),
    "unary/echo p99 (c=8)": RatioSpec("unary_c8", "echo_c8", "p99_ms", 2.0, higher_is_better=False),
    "batch_100/bare_100 events/s": RatioSpec("batch_100", "bare_100", "rate", 0.65),
    "audit_stream/audit_read events/s": RatioSpec("audit_stream", "audit_read", "rate", 0.5),
}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- the server processes (these functions run in the spawned children) ---------------------


async def _serve_until_stopped(conn: Connection, port: int, stats: Callable[[], Any]) -> None:
    """Report the port, then serve until SIGTERM, "stop" or the parent's exit."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    conn.send(("ready", port, os.getpid()))

    def watch_parent() -> None:
        for _ in range(MAX_CALLS):
            try:
                message = conn.recv()
            except (EOFError, OSError):
                break  # the parent is gone: stop rather than linger
            if message != "stats":
                break
            try:
                conn.send(("stats", stats()))
            except OSError:
                break
        with contextlib.suppress(RuntimeError):  # the loop may be closed already
            loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=watch_parent, name="bench-parent-watch", daemon=True).start()
    await stop.wait()


async def _echo(request: bytes, _context: Any) -> bytes:
    return request


async def _echo_server(conn: Connection) -> None:
    server = aio.server(options=CHANNEL_OPTIONS)
    handler = grpc.method_handlers_generic_handler(
        "bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(_echo)}
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    # The same start-up heap treatment and collector threshold the ledger server gets.
    settle_heap()
    collect_young_less_often()
    try:
        await _serve_until_stopped(conn, port, dict)
    finally:
        await server.stop(STOP_GRACE)


def _child_setup() -> None:
    """Ctrl-C is the bench's to handle (it stops its servers), and a child's stdout goes to
    stderr, so that the bench's stdout carries only its report."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.stdout.flush()
    os.dup2(2, 1)


def echo_server_main(conn: Connection) -> None:
    """Child process: a bare grpc.aio server with one unary raw-bytes echo method."""
    _child_setup()
    asyncio.run(_echo_server(conn))


async def _ledger_server(
    settings: Settings, runtime: Runtime, registry: PrincipalRegistry, conn: Connection
) -> None:
    serving = await build_server(settings, runtime, registry)
    committer = serving.committer

    def stats() -> dict[str, int]:
        projections = serving.projections
        return {
            "groups": committer.groups,
            "items": committer.items,
            "projections_pid": (projections.pid or 0) if projections is not None else 0,
        }

    try:
        await _serve_until_stopped(conn, serving.port, stats)
    finally:
        await serving.stop(STOP_GRACE)


def ledger_server_main(
    fields: dict[str, Any], log_path: str, log_level: str, conn: Connection
) -> None:
    """Child process: the ledger server as `pdl serve` builds it, one JSON line per call."""
    _child_setup()
    with open(log_path, "a", encoding="utf-8") as stream:
        logging.basicConfig(level=log_level.upper(), format="%(message)s", stream=stream)
        settings = load_settings(environ={}, **fields)
        registry = PrincipalRegistry.from_settings(settings, admin_token=None)
        runtime = open_runtime(settings)  # settles the heap, as `pdl serve` does
        collect_young_less_often()  # as `pdl serve` does (`server.app.serve`)
        try:
            asyncio.run(_ledger_server(settings, runtime, registry, conn))
        finally:
            runtime.close()


class ServerProcess:
    """A server in a spawned process, reporting its port through a pipe; stopped by handle."""

    def __init__(self, name: str, target: Callable[..., None], args: tuple[Any, ...]) -> None:
        context = multiprocessing.get_context("spawn")
        self.name = name
        self.conn, child = context.Pipe()
        self.process = context.Process(
            target=target, args=(*args, child), name=f"bench-{name}", daemon=False
        )
        self.process.start()
        child.close()
        self.port = 0
        self.pid = self.process.pid or 0

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        if not self.conn.poll(timeout):
            raise RuntimeError(f"the {self.name} server did not start within {timeout:.0f} s")
        try:
            _kind, self.port, self.pid = self.conn.recv()
        except EOFError:
            raise RuntimeError(f"the {self.name} server exited during start-up") from None

    def stats(self) -> dict[str, int]:
        self.conn.send("stats")
        if not self.conn.poll(10):
            raise RuntimeError(f"the {self.name} server did not answer")
        _kind, answer = self.conn.recv()
        return dict(answer)

    def cpu_seconds(self) -> float | None:
        return process_cpu_seconds(self.pid)

    def own_cpu_seconds(self) -> float | None:
        """The server's process alone (without its writer process)."""
        return process_cpu_seconds(self.pid, descendants=False)

    def writes(self) -> tuple[int, int] | None:
        return process_writes(self.pid)

    def stop(self) -> None:
        """Ask it to stop; terminate, then kill, this process only, if it does not."""
        with contextlib.suppress(OSError, ValueError):
            self.conn.send("stop")
        self.process.join(STOP_GRACE + 10)
        if self.process.is_alive():
            log(f"warning: the {self.name} server (pid {self.pid}) did not stop: terminating")
            self.process.terminate()
            self.process.join(5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)
        self.conn.close()
        log(f"stopped the {self.name} server (pid {self.pid})")


# --- CPU accounting from /proc (Linux; None elsewhere) --------------------------------------

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_cpu_seconds(pid: int, *, descendants: bool = True) -> float | None:
    """User + system CPU of a process (all its threads) and, unless told not to, of its
    descendants that are alive (the ledger server's forkserver and writer process)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    except OSError:
        return None
    parts = stat.rsplit(")", 1)[1].split()
    own = (int(parts[11]) + int(parts[12])) / _TICKS
    if not descendants:
        return own
    return own + sum(process_cpu_seconds(child) or 0.0 for child in _children(pid))


def process_writes(pid: int | str, *, descendants: bool = True) -> tuple[int, int] | None:
    """`write`-family system calls made, and the bytes they passed, by a process and its live
    descendants, from `/proc/<pid>/io` (`syscw`, `wchar`): files, pipes and event fds, not
    socket sends. Counts that do not drift with the host's speed, unlike CPU time; for the
    ledger they are mostly the event store's log frames and checkpoint copies."""
    try:
        fields = dict(
            line.split(": ", 1)
            for line in Path(f"/proc/{pid}/io").read_text(encoding="ascii").splitlines()
        )
        calls, written = int(fields["syscw"]), int(fields["wchar"])
    except (OSError, KeyError, ValueError):
        return None
    if descendants and isinstance(pid, int):
        for child in _children(pid):
            more = process_writes(child)
            if more is not None:
                calls, written = calls + more[0], written + more[1]
    return calls, written


def _children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                found.extend(int(c) for c in (task / "children").read_text().split())
    return found


def machine_cpu_seconds() -> tuple[float, float] | None:
    """Busy and stolen CPU seconds of the whole machine, all cores."""
    try:
        first = Path("/proc/stat").read_text(encoding="ascii").splitlines()[0].split()
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in first[1:9])
    return (user + nice + system + irq + softirq) / _TICKS, steal / _TICKS


# --- measurement ------------------------------------------------------------------------------


@dataclass
class Counted:
    events: int
    calls: int
    latencies: list[float] = field(default_factory=list)
    passes: int = 0


@dataclass
class Sample:
    events: int
    calls: int
    seconds: float
    client_cpu: float
    server_cpu: float | None
    server_own_cpu: float | None
    projection_cpu: float | None  # of server_cpu: the projection process's, if it has one
    foreign_cores: float | None
    steal_cores: float | None
    latencies: list[float] = field(default_factory=list, repr=False)
    group_commits: int | None = None
    group_items: int | None = None
    passes: int = 0
    write_calls: int | None = None  # of the side doing the work (`process_writes`)
    write_bytes: int | None = None
    views_catch_up_seconds: float | None = None  # after the window, until the views reach it

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    def percentile_ms(self, q: int) -> float | None:
        if len(self.latencies) < 2:
            return None
        return 1000 * statistics.quantiles(self.latencies, n=100, method="inclusive")[q - 1]

    def metric(self, name: str) -> float | None:
        if name == "rate":
            return self.rate
        if name == "p99_ms":
            return self.percentile_ms(99)
        raise ValueError(name)

    def cpu_per_event(self, in_process: bool) -> float | None:
        """CPU seconds per event of the side doing the work: the server, or this process."""
        cpu = self.client_cpu if in_process else self.server_cpu
        return cpu / self.events if cpu is not None and self.events else None


def cpu_ratio(top: str, a: Sample, bottom: str, b: Sample) -> float | None:
    """Throughput ratio if each side had one core to itself: the bottom's CPU per event over
    the top's (each side's busy process: the server, or the bench for in-process figures)."""
    top_cpu = a.cpu_per_event(FIGURES[top][0] is None)
    bottom_cpu = b.cpu_per_event(FIGURES[bottom][0] is None)
    return bottom_cpu / top_cpu if top_cpu and bottom_cpu else None


def cpu_budget(spec: RatioSpec, a: Sample, b: Sample) -> tuple[float, float] | None:
    """(budget, used) in CPU µs per event for a rate target: at the target rate (the target
    times the bottom's rate in the same round), what this machine's cores leave for the
    server once the bench's own CPU per event is paid, and what the server used. A server
    that needs more than its budget cannot reach the target here, at any concurrency."""
    cores = os.cpu_count()
    if spec.metric != "rate" or not cores or a.server_cpu is None or not a.events or not b.rate:
        return None
    target_rate = spec.target * b.rate
    budget = cores / target_rate - a.client_cpu / a.events
    return 1e6 * budget, 1e6 * a.server_cpu / a.events


class Bench:
    """The two servers, the one aio client, the in-process ceilings, and their clean-up."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.run_id = uuid4().hex[:12]
        self.token = secrets.token_urlsafe(32)
        self.metadata = (("authorization", f"Bearer {self.token}"),)
        self.seq = itertools.count()
        self.last_position = 0
        """The highest log position the recording figures were answered with."""
        self.servers: dict[str, ServerProcess] = {}
        self.schemas: list[str] = []
        self.channels: list[aio.Channel] = []
        self.subject_ids: list[str] = []
        self.audit_end = 0
        self.runtime: Runtime | None = None
        self.bare: Any = None
        self.items: list[Any] = []
        self.info: dict[str, Any] = {}
        self._subject_next = 0
        self._bare_next = 0
        self._profiles: list[subprocess.Popen[bytes]] = []
        self.fields: dict[str, Any] = {}

    # set-up --------------------------------------------------------------------------------

    def settings_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "data_dir": str(self.workdir / "ledger"),
            "listen": "127.0.0.1:0",
            "projections": self.args.projections,
            **(
                {"projection_nice": self.args.projection_nice}
                if self.args.projection_nice is not None
                else {}
            ),
            "writer": self.args.writer,
            "principals": [
                {
                    "name": PRINCIPAL,
                    "scopes": [Scope.RECORD.value, Scope.AUDIT.value, Scope.READ.value],
                    "token_sha256": token_hash(self.token).hex(),
                }
            ],
        }
        if self.args.backend == "postgres":
            schema = f"pdl_bench_{self.run_id}_grpc"
            self.schemas.append(schema)  # noted first, so a failed CREATE is still dropped
            record._pg_execute(f'CREATE SCHEMA "{schema}"')
            fields["database_url"] = (
                f"postgresql://{record.PG_USER}@{record.PG_HOST}:{record.PG_PORT}/{record.PG_DB}"
            )
            fields["postgres_schema"] = schema
        return fields

    def start_servers(self) -> None:
        fields = self.settings_fields()
        self.fields = fields
        log_path = str(self.workdir / "ledger-server.log")
        self.servers["echo"] = ServerProcess("echo", echo_server_main, ())
        self.servers["ledger"] = ServerProcess(
            "ledger", ledger_server_main, (fields, log_path, self.args.server_log)
        )
        for server in self.servers.values():
            server.wait_ready()
            log(f"{server.name} server: pid {server.pid}, port {server.port}")
        self.info["server_pids"] = {name: s.pid for name, s in self.servers.items()}
        self.info["ledger_server_log_level"] = self.args.server_log

    async def connect(self) -> None:
        echo = aio.insecure_channel(f"127.0.0.1:{self.servers['echo'].port}", CHANNEL_OPTIONS)
        ledger = aio.insecure_channel(f"127.0.0.1:{self.servers['ledger'].port}", CHANNEL_OPTIONS)
        self.channels = [echo, ledger]
        for channel in self.channels:
            await asyncio.wait_for(channel.channel_ready(), 30)
        self.echo = echo.unary_unary(ECHO_METHOD)  # raw bytes both ways
        self.ledger = lgrpc.LedgerServiceStub(ledger)
        self.query = qgrpc.QueryServiceStub(ledger)
        self.views = vgrpc.ViewServiceStub(ledger)

    async def register_subjects(self) -> None:
        n_subjects = self.args.subjects
        ids: list[str] = [""] * n_subjects
        numbers = iter(range(n_subjects))

        async def worker() -> None:
            for n in numbers:
                request = lpb.RegisterSubjectRequest(
                    meta=cpb.CommandMeta(idempotency_key=f"{self.run_id}-reg-{n}"),
                    account=cpb.AccountRef(namespace=NAMESPACE, account_id=f"acct-{n}"),
                )
                answer = await self.ledger.RegisterSubject(
                    request, metadata=self.metadata, timeout=CALL_TIMEOUT
                )
                ids[n] = answer.recorded.subject_id

        await asyncio.gather(*(worker() for _ in range(16)))
        self.subject_ids = ids

    async def fill_log(self) -> None:
        """Record at least `--audit-events` collections with RecordBatch (1000 per call)."""
        target = self.args.audit_events
        calls = math.ceil(target / SETUP_BATCH)
        numbers = iter(range(calls))
        last = 0

        async def worker() -> None:
            nonlocal last
            for _ in numbers:
                request = self.batch_request(SETUP_BATCH, "fill")
                answer = await self.ledger.RecordBatch(
                    request, metadata=self.metadata, timeout=CALL_TIMEOUT
                )
                if answer.recorded_count != SETUP_BATCH:
                    raise RuntimeError(f"set-up batch recorded {answer.recorded_count}")
                last = max(last, *(o.recorded.position for o in answer.outcomes))

        await asyncio.gather(*(worker() for _ in range(2)))
        self.audit_end = last

    def open_in_process(self) -> None:
        """The bare application on its own store, and a Ledger on the server's store."""
        if self.args.backend == "sqlite":
            bare_env = {
                "PERSISTENCE_MODULE": "eventsourcing.sqlite",
                "SQLITE_DBNAME": str(self.workdir / "bare.db"),
            }
        else:
            schema = f"pdl_bench_{self.run_id}_bare"
            self.schemas.append(schema)
            record._pg_execute(f'CREATE SCHEMA "{schema}"')
            bare_env = {
                "PERSISTENCE_MODULE": "eventsourcing.postgres",
                "POSTGRES_HOST": record.PG_HOST,
                "POSTGRES_PORT": str(record.PG_PORT),
                "POSTGRES_DBNAME": record.PG_DB,
                "POSTGRES_USER": record.PG_USER,
                "POSTGRES_PASSWORD": "",
                "POSTGRES_SCHEMA": schema,
            }
        self.bare = record.BareApp(env=bare_env)
        for start in range(0, self.args.subjects, BATCH):
            batch = [
                record.Item(f"item-{n}")
                for n in range(start, min(start + BATCH, self.args.subjects))
            ]
            self.bare.save(*batch)
            self.items.extend(batch)
        # The same settings the server runs with: the same store, key store and master key.
        self.runtime = open_runtime(load_settings(environ={}, **self.fields))
        collect_young_less_often()  # the bare ceilings run here: the servers' threshold

    async def set_up(self) -> None:
        started = time.perf_counter()
        self.start_servers()
        await self.connect()
        log(f"registering {self.args.subjects} subjects")
        await self.register_subjects()
        log(f"recording {self.args.audit_events} events for the audit log")
        await self.fill_log()
        self.open_in_process()
        self.info.update(self.sizes())
        self.info["audit_log_events"] = self.audit_end
        self.info["set_up_seconds"] = round(time.perf_counter() - started, 1)
        if self.args.backend == "sqlite":
            self.info["sqlite_version"] = sqlite3.sqlite_version
        else:
            self.info["postgres_version"] = record._pg_scalar("SHOW server_version")
            self.info["schemas"] = list(self.schemas)
        log(f"ready in {self.info['set_up_seconds']} s; audit log of {self.audit_end} events")

    def sizes(self) -> dict[str, Any]:
        request = self.collection_request("size")
        stored = self.runtime_ledger().recorder.select_notifications(self.audit_end, 1)
        return {
            "bytes": {
                "echo_request": len(self.echo_payload(0)),
                "record_collection_request": request.ByteSize(),
                "record_batch_request_100": self.batch_request(BATCH, "size").ByteSize(),
                "stored_state_data_collected": len(stored[0].state) if stored else None,
            }
        }

    # requests ------------------------------------------------------------------------------

    def echo_payload(self, n: int) -> bytes:
        return f"{self.run_id}-echo-{n}".encode().ljust(ECHO_BYTES, b".")

    def collection_request(self, kind: str) -> lpb.RecordCollectionRequest:
        n = next(self.seq)
        subject_id = self.subject_ids[self._subject_next]
        self._subject_next = (self._subject_next + 1) % len(self.subject_ids)
        return lpb.RecordCollectionRequest(
            meta=cpb.CommandMeta(idempotency_key=f"{self.run_id}-{kind}-{n}"),
            subject=cpb.SubjectRef(subject_id=subject_id),
            category=CATEGORY,
            source=SOURCE,
            purposes=[PURPOSE],
            values={"ip": f"198.51.100.{n % 256}"},
        )

    def batch_request(self, size: int, kind: str) -> lpb.RecordBatchRequest:
        return lpb.RecordBatchRequest(
            items=[lpb.BatchItem(collection=self.collection_request(kind)) for _ in range(size)]
        )

    # the timed loops ---------------------------------------------------------------------

    async def _concurrent(
        self, call: Callable[[], Awaitable[int]], callers: int, deadline: float
    ) -> Counted:
        """`callers` coroutines, each calling in a loop until the deadline."""
        done = Counted(events=0, calls=0)

        async def caller() -> None:
            for _ in range(MAX_CALLS):
                t0 = time.perf_counter()
                events = await call()
                t1 = time.perf_counter()
                done.latencies.append(t1 - t0)
                done.events += events
                done.calls += 1
                if t1 >= deadline:
                    return

        await asyncio.gather(*(caller() for _ in range(callers)))
        return done

    async def _echo_call(self) -> int:
        await self.echo(
            self.echo_payload(next(self.seq)), metadata=self.metadata, timeout=CALL_TIMEOUT
        )
        return 1

    async def _unary_call(self) -> int:
        answer = await self.ledger.RecordCollection(
            self.collection_request("unary"), metadata=self.metadata, timeout=CALL_TIMEOUT
        )
        self.last_position = max(self.last_position, answer.recorded.position)
        return 1

    async def _batch_call(self) -> int:
        answer = await self.ledger.RecordBatch(
            self.batch_request(BATCH, "batch"), metadata=self.metadata, timeout=CALL_TIMEOUT
        )
        if answer.recorded_count != BATCH:
            raise RuntimeError(f"a batch recorded {answer.recorded_count} of {BATCH}")
        self.last_position = max(
            self.last_position, *(o.recorded.position for o in answer.outcomes)
        )
        return answer.recorded_count

    async def echo_c32(self, deadline: float) -> Counted:
        return await self._concurrent(self._echo_call, UNARY_THROUGHPUT_CALLERS, deadline)

    async def unary_c32(self, deadline: float) -> Counted:
        return await self._concurrent(self._unary_call, UNARY_THROUGHPUT_CALLERS, deadline)

    async def echo_c8(self, deadline: float) -> Counted:
        return await self._concurrent(self._echo_call, LATENCY_CALLERS, deadline)

    async def unary_c8(self, deadline: float) -> Counted:
        return await self._concurrent(self._unary_call, LATENCY_CALLERS, deadline)

    async def batch_100(self, deadline: float) -> Counted:
        return await self._concurrent(self._batch_call, self.args.batch_concurrency, deadline)

    async def bare_100(self, deadline: float) -> Counted:
        """`bench/record.py`'s bare_100, in this process (blocking; nothing else runs now)."""
        bare, items, calls = self.bare, self.items, 0
        for _ in range(MAX_CALLS):
            batch = []
            for _k in range(BATCH):
                n = next(self.seq)
                item = items[self._bare_next]
                item.note(record.bare_payload(f"{self.run_id}-bare-{n}", n))
                batch.append(item)
                self._bare_next = (self._bare_next + 1) % len(items)
            bare.save(*batch)
            calls += 1
            if time.perf_counter() >= deadline:
                break
        return Counted(events=calls * BATCH, calls=calls)

    async def audit_stream(self, deadline: float) -> Counted:
        """Stream the log from position 1 to the end it had after set-up, again and again."""
        end, done = self.audit_end, Counted(events=0, calls=0)
        request = qpb.StreamAuditLogRequest(from_position=1, page_size=AUDIT_PAGE)
        for _ in range(MAX_PASSES):
            stream = self.query.StreamAuditLog(
                request, metadata=self.metadata, timeout=CALL_TIMEOUT
            )
            done.calls += 1
            try:
                async for page in stream:
                    if page.next_position > end:  # the page that reaches the end of the pass
                        done.events += sum(1 for e in page.events if e.position <= end)
                        done.passes += 1
                        break
                    done.events += len(page.events)
                    if time.perf_counter() >= deadline:
                        break
            finally:
                stream.cancel()
            if time.perf_counter() >= deadline:
                break
        return done

    async def audit_read(self, deadline: float) -> Counted:
        """The same pages read and decoded in this process, by a Ledger on the same store."""
        ledger = self.runtime_ledger()
        recorder, mapper = ledger.recorder, ledger.mapper
        end, position, done = self.audit_end, 1, Counted(events=0, calls=0)
        for _ in range(MAX_CALLS):
            page = recorder.select_notifications(position, AUDIT_PAGE, stop=end)
            for notification in page:
                mapper.to_domain_event(notification)
            done.events += len(page)
            done.calls += 1
            position = page[-1].id + 1 if page else end + 1
            if position > end:
                position = 1
                done.passes += 1
            if time.perf_counter() >= deadline:
                break
        return done

    def projection_nice(self) -> int | None:
        """The projection process's nice increment the server ran with (None: no such
        process)."""
        if self.args.projections != "process":
            return None
        return int(load_settings(environ={}, **self.fields).projection_nice)

    async def views_catch_up(self) -> float:
        """Seconds until the views have folded every position recorded so far: a view read
        with that `min_position`, asked again while it answers VIEW_BEHIND."""
        request = vpb.GetSubjectViewRequest(
            subject=cpb.SubjectRef(subject_id=self.subject_ids[0]), min_position=self.last_position
        )
        started = time.perf_counter()
        while True:
            try:
                await self.views.GetSubjectView(
                    request, metadata=self.metadata, timeout=CALL_TIMEOUT
                )
            except grpc.aio.AioRpcError as error:
                waited = time.perf_counter() - started
                if error.code() != grpc.StatusCode.UNAVAILABLE or waited > VIEWS_CATCH_UP_TIMEOUT:
                    raise
                continue
            return time.perf_counter() - started

    # one sample ------------------------------------------------------------------------------

    async def measure(self, figure: str, profile_to: Path | None) -> Sample:
        loop: Callable[[float], Awaitable[Counted]] = getattr(self, figure)
        server_name = FIGURES[figure][0]
        server = self.servers[server_name] if server_name else None
        # Folding a window's events is that window's cost: after the warm-up and after the
        # window, wait for the views to reach what was recorded, so that none of it runs in
        # the next window (perhaps a baseline's); the readings after the window are taken
        # once the views have caught up (the foreign load is the window's alone).
        folds = figure in RECORDING_FIGURES and self.args.projections != "external"
        if self.args.warmup > 0:
            await loop(time.perf_counter() + self.args.warmup)
            if folds:
                await self.views_catch_up()
        profiler = self.start_profile(server, figure, profile_to)
        stats0 = server.stats() if server is not None and server.name == "ledger" else None
        machine0 = machine_cpu_seconds()
        server0 = server.cpu_seconds() if server is not None else None
        own0 = server.own_cpu_seconds() if server is not None else None
        views_pid = stats0.get("projections_pid", 0) if stats0 is not None else 0
        views0 = process_cpu_seconds(views_pid, descendants=False) if views_pid else None
        writes0 = server.writes() if server is not None else process_writes("self")
        cpu0, t0 = time.process_time(), time.perf_counter()
        done = await loop(t0 + self.args.seconds)
        t1, cpu1 = time.perf_counter(), time.process_time()
        server_window = server.cpu_seconds() if server is not None else None
        machine1 = machine_cpu_seconds()
        self.finish_profile(profiler)
        catch_up = await self.views_catch_up() if folds else None
        server1 = server.cpu_seconds() if server is not None else None
        own1 = server.own_cpu_seconds() if server is not None else None
        views1 = process_cpu_seconds(views_pid, descendants=False) if views_pid else None
        writes1 = server.writes() if server is not None else process_writes("self")
        stats1 = server.stats() if stats0 is not None and server is not None else None
        seconds = t1 - t0
        server_cpu = server1 - server0 if server0 is not None and server1 is not None else None
        foreign = steal = None
        if machine0 is not None and machine1 is not None:
            window = (
                server_window - server0
                if server0 is not None and server_window is not None
                else 0.0
            )
            ours = (cpu1 - cpu0) + window
            foreign = max(0.0, (machine1[0] - machine0[0]) - ours) / seconds
            steal = (machine1[1] - machine0[1]) / seconds
        return Sample(
            events=done.events,
            calls=done.calls,
            seconds=seconds,
            client_cpu=cpu1 - cpu0,
            server_cpu=server_cpu,
            server_own_cpu=own1 - own0 if own0 is not None and own1 is not None else None,
            projection_cpu=views1 - views0 if views0 is not None and views1 is not None else None,
            foreign_cores=foreign,
            steal_cores=steal,
            latencies=done.latencies,
            group_commits=(stats1["groups"] - stats0["groups"]) if stats0 and stats1 else None,
            group_items=(stats1["items"] - stats0["items"]) if stats0 and stats1 else None,
            passes=done.passes,
            write_calls=writes1[0] - writes0[0] if writes0 and writes1 else None,
            write_bytes=writes1[1] - writes0[1] if writes0 and writes1 else None,
            views_catch_up_seconds=catch_up,
        )

    def start_profile(
        self, server: ServerProcess | None, figure: str, profile_to: Path | None
    ) -> subprocess.Popen[bytes] | None:
        """py-spy, sampling the ledger server and its writer for the measured window."""
        if profile_to is None or server is None or server.name != "ledger":
            return None
        spy = py_spy()
        if spy is None:
            log("warning: py-spy not found; no profile")
            return None
        output = profile_to / f"{figure}.txt"
        command = [
            spy,
            "record",
            "--pid",
            str(server.pid),
            "--duration",
            str(max(1, math.ceil(self.args.seconds))),
            "--rate",
            "200",
            *(["--gil"] if self.args.profile_mode == "gil" else []),
            "--subprocesses",  # the writer process too
            "--nonblocking",
            "--format",
            "raw",
            "--output",
            str(output),
        ]
        process = subprocess.Popen(  # noqa: S603 (our own arguments)
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self._profiles.append(process)
        time.sleep(0.3)  # let it attach before the window opens
        return process

    def finish_profile(self, process: subprocess.Popen[bytes] | None) -> None:
        if process is None:
            return
        try:
            process.wait(self.args.seconds + 30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        self._profiles.remove(process)

    # plumbing ----------------------------------------------------------------------------------

    def server_log_lines(self) -> dict[str, int]:
        """Lines the ledger server logged: access lines (JSON) and anything else."""
        counts = {"access": 0, "other": 0}
        path = self.workdir / "ledger-server.log"
        with contextlib.suppress(OSError), path.open(encoding="utf-8") as lines:
            for line in lines:
                counts["access" if line.startswith('{"principal"') else "other"] += 1
        return counts

    def event_store_log(self) -> dict[str, int] | None:
        """The ledger's SQLite write-ahead log at the end: its file's size (the longest the
        log has been) and how many times it was started again (the checkpoint sequence
        number in its header, bytes 12-15)."""
        path = self.workdir / "ledger" / "events.db-wal"
        try:
            with path.open("rb") as log_file:
                header = log_file.read(16)
            size = path.stat().st_size
        except OSError:
            return None
        return {"bytes": size, "restarts": int.from_bytes(header[12:16], "big")}

    def runtime_ledger(self) -> Any:
        assert self.runtime is not None
        return self.runtime.ledger

    async def close_channels(self) -> None:
        for channel in self.channels:
            with contextlib.suppress(Exception):
                await channel.close()
        self.channels = []

    def close(self) -> None:
        """Stop the servers, close the stores, drop the schemas. Never raises."""
        for process in self._profiles:
            with contextlib.suppress(OSError):
                process.kill()
                process.wait(5)
        self._profiles = []
        for server in self.servers.values():
            try:
                server.stop()
            except Exception as exc:  # noqa: BLE001 (clean-up goes on regardless)
                log(f"warning: stopping the {server.name} server: {type(exc).__name__}: {exc}")
        self.servers = {}
        for closer in (
            self.runtime.close if self.runtime is not None else None,
            self.bare.close if self.bare is not None else None,
        ):
            if closer is not None:
                try:
                    closer()
                except Exception as exc:  # noqa: BLE001
                    log(f"warning: closing: {type(exc).__name__}: {exc}")
        self.runtime = self.bare = None
        for schema in self.schemas:
            try:
                record._pg_execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            except Exception as exc:  # noqa: BLE001 (report and go on to the next)
                log(f"warning: could not drop schema {schema}: {type(exc).__name__}: {exc}")
            else:
                log(f"dropped schema {schema}")
        self.schemas = []


def order_of_round(r: int, chosen: tuple[tuple[str, str], ...] = PAIRS) -> list[str]:
    """Pairs rotate by one per round; within a pair, the first alternates."""
    pairs = chosen[r % len(chosen) :] + chosen[: r % len(chosen)]
    return [f for pair in pairs for f in (pair if r % 2 == 0 else pair[::-1])]


async def run(bench: Bench) -> dict[str, list[Sample]]:
    args = bench.args
    samples: dict[str, list[Sample]] = {f: [] for f in FIGURES}
    try:
        await bench.set_up()
        for r in range(args.rounds):
            profile_to = args.profile if r == 0 else None
            for figure in order_of_round(r, args.pairs):
                sample = await bench.measure(figure, profile_to)
                samples[figure].append(sample)
                _, unit, _ = FIGURES[figure]
                latency = ""
                if sample.latencies and unit == "calls/s":
                    latency = (
                        f", p50 {sample.percentile_ms(50):.1f} / p99 "
                        f"{sample.percentile_ms(99):.1f} ms"
                    )
                caught_up = (
                    f", views caught up {sample.views_catch_up_seconds:.2f} s after"
                    if sample.views_catch_up_seconds is not None
                    else ""
                )
                log(
                    f"round {r + 1}/{args.rounds} {figure:12} {sample.rate:>10,.0f} {unit}"
                    f"{latency}  (foreign load {sample.foreign_cores or 0:.2f} cores{caught_up})"
                )
    finally:
        await bench.close_channels()
        bench.info["ledger_server_log"] = bench.server_log_lines()
        if args.backend == "sqlite":
            bench.info["event_store_log"] = bench.event_store_log()
    return samples


# --- report -------------------------------------------------------------------------------------


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _per_event_us(cpu: float | None, events: int) -> float | None:
    return 1e6 * cpu / events if cpu is not None and events else None


def summarise(
    bench: Bench, samples: dict[str, list[Sample]], load0: list[float], git0: dict[str, Any]
) -> dict[str, Any]:
    args = bench.args
    figures: dict[str, Any] = {}
    for name, rows in samples.items():
        if not rows:  # its pair was not chosen (`--pairs`)
            continue
        server_name, unit, what = FIGURES[name]
        data: dict[str, Any] = {
            "what": what,
            "server": server_name or "in-process",
            "unit": unit,
            "median_rate": _median([s.rate for s in rows]),
            "rounds_rate": [s.rate for s in rows],
            "rounds_events": [s.events for s in rows],
            "rounds_calls": [s.calls for s in rows],
            "rounds_seconds": [s.seconds for s in rows],
            "median_client_cpu_us_per_event": _median(
                [_per_event_us(s.client_cpu, s.events) for s in rows]
            ),
            "median_server_cpu_us_per_event": _median(
                [_per_event_us(s.server_cpu, s.events) for s in rows]
            ),
            "median_server_process_cpu_us_per_event": _median(
                [_per_event_us(s.server_own_cpu, s.events) for s in rows]
            ),
            "median_writer_cpu_us_per_event": _median(
                [
                    _per_event_us(
                        s.server_cpu - s.server_own_cpu - (s.projection_cpu or 0.0), s.events
                    )
                    if s.server_cpu is not None and s.server_own_cpu is not None
                    else None
                    for s in rows
                ]
            )
            if server_name == "ledger"
            else None,
            "median_projection_cpu_us_per_event": _median(
                [_per_event_us(s.projection_cpu, s.events) for s in rows]
            )
            if server_name == "ledger"
            else None,
            "median_write_calls_per_event": _median(
                [
                    s.write_calls / s.events if s.write_calls is not None and s.events else None
                    for s in rows
                ]
            ),
            "median_write_bytes_per_event": _median(
                [
                    s.write_bytes / s.events if s.write_bytes is not None and s.events else None
                    for s in rows
                ]
            ),
            "rounds_server_cores": [
                s.server_cpu / s.seconds if s.server_cpu is not None else None for s in rows
            ],
            "rounds_client_cores": [s.client_cpu / s.seconds for s in rows],
            "rounds_foreign_cores": [s.foreign_cores for s in rows],
            "rounds_steal_cores": [s.steal_cores for s in rows],
        }
        if unit == "calls/s" or name == "batch_100":
            for q in (50, 90, 99):
                values = [s.percentile_ms(q) for s in rows]
                data[f"rounds_p{q}_ms"] = values
                data[f"median_p{q}_ms"] = _median(values)
        if any(s.group_commits for s in rows):
            data["rounds_items_per_group_commit"] = [
                s.group_items / s.group_commits if s.group_commits else None for s in rows
            ]
        if any(s.views_catch_up_seconds is not None for s in rows):
            data["rounds_views_catch_up_seconds"] = [s.views_catch_up_seconds for s in rows]
            data["median_views_catch_up_seconds"] = _median(
                [s.views_catch_up_seconds for s in rows]
            )
        if name.startswith("audit"):
            data["rounds_passes"] = [s.passes for s in rows]
        rates = data["rounds_rate"]
        if len(rates) > 1 and data["median_rate"]:
            data["spread"] = (max(rates) - min(rates)) / data["median_rate"]
        figures[name] = data
    ratios: dict[str, Any] = {}
    for label, spec in RATIOS.items():
        if not samples[spec.top]:
            continue
        per_round = []
        for a, b in zip(samples[spec.top], samples[spec.bottom], strict=True):
            top, bottom = a.metric(spec.metric), b.metric(spec.metric)
            if top is not None and bottom:
                per_round.append(top / bottom)
        median = statistics.median(per_round) if per_round else None
        by_cpu = [
            r
            for a, b in zip(samples[spec.top], samples[spec.bottom], strict=True)
            if spec.metric == "rate" and (r := cpu_ratio(spec.top, a, spec.bottom, b)) is not None
        ]
        passed = median is not None and (
            median >= spec.target if spec.higher_is_better else median <= spec.target
        )
        budgets = [
            budget
            for a, b in zip(samples[spec.top], samples[spec.bottom], strict=True)
            if (budget := cpu_budget(spec, a, b)) is not None
        ]
        ratios[label] = {
            "top": spec.top,
            "bottom": spec.bottom,
            "metric": spec.metric,
            "median": median,
            "rounds": per_round,
            "target": spec.target,
            "comparison": ">=" if spec.higher_is_better else "<=",
            "pass": passed,
            "cpu_based_median": statistics.median(by_cpu) if by_cpu else None,
            "cpu_based_rounds": by_cpu,
            "server_cpu_budget_us_per_event": _median([budget for budget, _ in budgets]),
            "server_cpu_used_us_per_event": _median([used for _, used in budgets]),
        }
    foreign = [f for rows in samples.values() for s in rows if (f := s.foreign_cores) is not None]
    return {
        "benchmark": "grpc",
        "created_at": datetime.now(UTC).isoformat(),
        "python": platform.python_version(),
        "grpcio": metadata.version("grpcio"),
        "protobuf": metadata.version("protobuf"),
        "eventsourcing": metadata.version("eventsourcing"),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": load0,
        "load_average_at_end": list(os.getloadavg()),
        "foreign_cores": {
            "median": statistics.median(foreign) if foreign else None,
            "max": max(foreign) if foreign else None,
        },
        # At the start, when the servers load the code; and whether it changed meanwhile.
        "git": {
            **git0,
            "at_end": record.git_state(),
        },
        "settings": {
            "backend": args.backend,
            "seconds": args.seconds,
            "warmup": args.warmup,
            "rounds": args.rounds,
            "subjects": args.subjects,
            "audit_events": args.audit_events,
            "unary_throughput_callers": UNARY_THROUGHPUT_CALLERS,
            "latency_callers": LATENCY_CALLERS,
            "batch": BATCH,
            "batch_concurrency": args.batch_concurrency,
            "audit_page": AUDIT_PAGE,
            "server_log": args.server_log,
            "projections": args.projections,
            "projection_nice": bench.projection_nice(),
            "writer": args.writer,
            "pairs": [name for name, pair in PAIR_NAMES.items() if pair in args.pairs],
            "profile": str(args.profile) if args.profile else None,
        },
        "info": bench.info,
        "figures": figures,
        "ratios": ratios,
    }


def _fmt(value: float | None, spec: str = ",.0f") -> str:
    return "-" if value is None else format(value, spec)


def _kib(value: float | None) -> float | None:
    return value / 1024 if value is not None else None


def print_table(summary: dict[str, Any]) -> None:
    from rich.console import Console  # noqa: PLC0415 (only for the human-readable report)
    from rich.table import Table  # noqa: PLC0415

    console = Console(file=sys.stdout, width=None if sys.stdout.isatty() else 140)
    s = summary["settings"]
    figures = Table(
        title=(
            f"gRPC server vs bare ceilings, {s['backend']}, projections {s['projections']}, "
            f"writer {s['writer']} "
            f"(median of {s['rounds']} rounds x {s['seconds']} s; Python {summary['python']}, "
            f"grpcio {summary['grpcio']})"
        )
    )
    for column in (
        "figure",
        "median rate",
        "per round",
        "p50 / p99 ms",
        "client µs/ev",
        "server µs/ev",
        "of it, writer / views",
        "writes/ev",
        "server cores",
        "foreign cores",
    ):
        figures.add_column(column, justify="left" if column == "figure" else "right")
    for name, f in summary["figures"].items():
        latency = ""
        if "median_p99_ms" in f:
            latency = f"{_fmt(f['median_p50_ms'], '.1f')} / {_fmt(f['median_p99_ms'], '.1f')}"
        server_cores = _median(f["rounds_server_cores"])
        figures.add_row(
            name,
            f"{_fmt(f['median_rate'])} {f['unit']}",
            " / ".join(_fmt(r) for r in f["rounds_rate"]),
            latency,
            _fmt(f["median_client_cpu_us_per_event"], ",.1f"),
            _fmt(f["median_server_cpu_us_per_event"], ",.1f"),
            f"{_fmt(f['median_writer_cpu_us_per_event'], ',.1f')} / "
            f"{_fmt(f['median_projection_cpu_us_per_event'], ',.1f')}",
            f"{_fmt(f['median_write_calls_per_event'], '.2f')} / "
            f"{_fmt(_kib(f['median_write_bytes_per_event']), '.1f')} KiB",
            _fmt(server_cores, ".2f"),
            " / ".join(_fmt(v, ".2f") for v in f["rounds_foreign_cores"]),
        )
    ratios = Table(title="Same-run ratios (median of per-round ratios)")
    for column in (
        "ratio",
        "median",
        "per round",
        "target",
        "result",
        "CPU-based",
        "server µs/ev: used / budget",
    ):
        ratios.add_column(column, justify="left" if column == "ratio" else "right")
    for label, ratio in summary["ratios"].items():
        verdict = "[green]PASS[/green]" if ratio["pass"] else "[red]FAIL[/red]"
        ratios.add_row(
            label,
            _fmt(ratio["median"], ".3f"),
            " / ".join(f"{r:.2f}" for r in ratio["rounds"]),
            f"{ratio['comparison']} {ratio['target']}",
            verdict,
            _fmt(ratio["cpu_based_median"], ".3f"),
            f"{_fmt(ratio['server_cpu_used_us_per_event'], ',.0f')} / "
            f"{_fmt(ratio['server_cpu_budget_us_per_event'], ',.0f')}"
            if ratio["server_cpu_budget_us_per_event"] is not None
            else "-",
        )
    console.print(figures)
    console.print(ratios)
    console.print(
        "CPU-based: the bottom's CPU per event over the top's (server CPU, or the bench's for "
        "in-process figures); a noise-resistant estimate of the ratio, not the target.",
        soft_wrap=True,
    )
    console.print(
        f"budget: at the target rate, the CPU per event that this machine's "
        f"{summary['cpu_count']} cores leave for the server (its writer and views included) "
        "once the bench's own CPU per event is paid; a server using more cannot reach the "
        "target here at any concurrency, and one using less needs its processes to keep the "
        "cores busy to reach it.",
        soft_wrap=True,
    )
    groups = summary["figures"].get("unary_c32", {}).get("rounds_items_per_group_commit")
    if groups:
        console.print(
            "unary_c32 commands per group commit: " + " / ".join(_fmt(g, ".1f") for g in groups)
        )
    console.print(
        f"load average {summary['load_average_at_start']} -> {summary['load_average_at_end']}; "
        f"foreign load (cores busy outside the bench and its servers): "
        f"median {_fmt(summary['foreign_cores']['median'], '.2f')}, "
        f"max {_fmt(summary['foreign_cores']['max'], '.2f')}",
        soft_wrap=True,
    )
    console.print(f"info: {json.dumps(summary['info'])}", soft_wrap=True)
    console.print(f"git: {json.dumps(summary['git'])}", soft_wrap=True)


# --- entry point ----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--seconds", type=float, default=3.0, help="measurement window")
    parser.add_argument("--warmup", type=float, default=0.5, help="warm-up before each window")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of all figures")
    parser.add_argument("--subjects", type=int, default=1000, help="registered subjects")
    parser.add_argument(
        "--audit-events", type=int, default=50_000, help="events recorded for the audit stream"
    )
    parser.add_argument(
        "--batch-concurrency", type=int, default=4, help="RecordBatch calls in flight"
    )
    parser.add_argument(
        "--server-log",
        choices=("info", "warning"),
        default="info",
        help="ledger server log level: info (as `pdl serve`: one access line per call, to a "
        "file in the temporary directory) or warning (no access log)",
    )
    parser.add_argument(
        "--projections",
        choices=("process", "in-process", "external"),
        default="process",
        help="the ledger server keeps the views up to date in a projection process of its own, "
        "as `pdl serve` does (process), or in a thread of its own process (in-process), or "
        "leaves them to `pdl project` workers, which the bench does not run (external: the "
        "write path alone)",
    )
    parser.add_argument(
        "--projection-nice",
        type=int,
        choices=range(20),
        metavar="0-19",
        default=None,
        help="with --projections process: the server's projection_nice setting (default: "
        "the setting's own default, as `pdl serve`)",
    )
    parser.add_argument(
        "--writer",
        choices=("process", "thread"),
        default="process",
        help="the ledger server makes its writes in a writer process of its own, as `pdl serve` "
        "does (process), or in a thread sharing the server's interpreter lock (thread)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="py-spy the ledger server and its writer in round 1 (perturbs that round); "
        "raw stacks to DIR",
    )
    parser.add_argument(
        "--profile-mode",
        choices=("gil", "active"),
        default="gil",
        help="with --profile: sample the threads holding the interpreter lock (gil), or every "
        "thread not idle (active: includes SQLite's commits, which run without the lock)",
    )
    parser.add_argument(
        "--pairs",
        default=",".join(PAIR_NAMES),
        help="comma-separated pairs to measure, of " + ", ".join(PAIR_NAMES) + " (default: all); "
        "the ratios of the others are left out",
    )
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.pairs.split(",") if n.strip()]
    unknown = [n for n in names if n not in PAIR_NAMES]
    if unknown or not names:
        parser.error(f"--pairs takes some of {', '.join(PAIR_NAMES)}; not {', '.join(unknown)}")
    args.pairs = tuple(PAIR_NAMES[n] for n in dict.fromkeys(names))
    if args.seconds <= 0 or args.warmup < 0 or args.rounds < 1:
        parser.error("--seconds must be > 0, --warmup >= 0, --rounds >= 1")
    if args.subjects < SETUP_BATCH:
        parser.error(f"--subjects must be at least {SETUP_BATCH} (one set-up batch)")
    if args.audit_events < 1 or args.batch_concurrency < 1:
        parser.error("--audit-events and --batch-concurrency must be >= 1")
    if args.backend == "postgres" and not record.postgres_listening():
        parser.error(f"nothing listens on {record.PG_HOST}:{record.PG_PORT}")
    if args.profile is not None:
        if py_spy() is None:
            parser.error("--profile needs py-spy: .venv/bin/pip install py-spy")
        args.profile.mkdir(parents=True, exist_ok=True)
    return args


def py_spy() -> str | None:
    """The py-spy beside this interpreter, or on the PATH."""
    beside = shutil.which("py-spy", path=str(Path(sys.executable).parent))
    return beside or shutil.which("py-spy")


def cleanup(bench: Bench, workdir: Path) -> None:
    """Stop and remove everything; a second Ctrl-C cannot cut it short."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        bench.close()
        shutil.rmtree(workdir, ignore_errors=True)
        log(f"removed {workdir}")
    finally:
        signal.signal(signal.SIGINT, previous)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    load0 = list(os.getloadavg())
    git0 = record.git_state()
    workdir = Path(tempfile.mkdtemp(prefix="pdl-bench-grpc-"))
    bench = Bench(args, workdir)
    with record.interrupts_as_keyboard_interrupt():
        try:
            samples = asyncio.run(run(bench))
        except KeyboardInterrupt:
            log("interrupted: cleaning up")
            return 130
        finally:
            cleanup(bench, workdir)
    summary = summarise(bench, samples, load0, git0)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print_table(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())

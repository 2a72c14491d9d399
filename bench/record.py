"""Recording throughput of the ledger against bare `eventsourcing` ceilings, in one run.

Usage::

    .venv/bin/python bench/record.py [--json] [--backends sqlite,postgres] [--seconds S]
                                     [--rounds R] [--warmup W] [--subjects N]

Four figures per back-end, all in events per second:

- ``app_1``    ``Ledger.execute`` of one ``RecordCollection`` per call, round-robin over N
               pre-registered subjects, a fresh idempotency key each call.
- ``app_100``  ``Ledger.execute_batch`` of 100 such commands per call, 100 distinct subjects.
- ``bare_1``   a minimal ``eventsourcing`` aggregate, one event per ``save()`` on an existing
               aggregate (round-robin over N), the same persistence module, its own database.
- ``bare_100`` 100 events per ``save()``, one on each of 100 aggregates.

Every round runs each configuration for a fixed window after a short warm-up, taking turns
(the order rotates per round), so drift on a shared host hits them alike. The report gives
the median per figure and the median of the per-round ratios app_1/bare_1 (target >= 0.7)
and app_100/bare_100 (target >= 0.5). Timings are never asserted: the exit status is 0 when
the run completes, whether or not a target is met.

SQLite runs on files in a temporary directory. PostgreSQL runs when something listens on
127.0.0.1:5432 (database ``test``, user ``postgres``), in fresh schemas that the bench creates
and drops. Both are removed on normal exit, on errors, on Ctrl-C and on SIGTERM.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as `python bench/record.py`, this file's folder comes first on the path, and
# `bench/projections.py` there would hide the `projections` package the server imports;
# drop the folder, as the other benches do.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

import argparse
import contextlib
import itertools
import json
import os
import platform
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from typing import Any
from uuid import UUID, uuid4

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from pydantic import SecretStr

from ledger import commands as c
from ledger.application import Ledger
from ledger.clock import SystemClock
from ledger.policy import SEED_EFFECTIVE_AT, load_seed_policy
from ledger.sealing import MasterKey, Sealer
from ledger.storage import PostgresConfig, StorageConfig, ledger_env
from server.keystore import SqlKeyStore
from server.runtime import collect_young_less_often, settle_heap

PG_HOST = "127.0.0.1"
PG_PORT = 5432
PG_DB = "test"
PG_USER = "postgres"
PG_URL = f"postgresql+psycopg://{PG_USER}@{PG_HOST}:{PG_PORT}/{PG_DB}"

PRINCIPAL = "bench-recorder"
CATEGORY = "network_log.ip_address"
SOURCE = "server_logs"
PURPOSE = "security_detection"
BATCH = 100
FIGURES = ("app_1", "bare_1", "app_100", "bare_100")
RATIOS = {
    "app_1/bare_1": ("app_1", "bare_1", 0.7),
    "app_100/bare_100": ("app_100", "bare_100", 0.5),
}
MAX_CALLS = 10_000_000  # every timed loop is bounded; the clock normally ends it long before
BARE_PAYLOAD_BYTES = 300


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- the bare ceiling: a minimal aggregate on plain eventsourcing --------------------------


class Item(Aggregate):
    """A minimal aggregate: one event method taking a small payload."""

    @event("Created")
    def __init__(self, ref: str) -> None:
        self.ref = ref
        self.notes = 0

    @event("Noted")
    def note(self, payload: dict[str, Any]) -> None:
        self.notes += 1


class BareApp(Application[UUID]):
    """A plain application: no rules, no sealing, no receipts, no cache."""

    name = "BareBench"


def bare_payload(key: str, n: int) -> dict[str, Any]:
    """About 300 bytes of JSON, shaped like the ledger's collection payload."""
    return {
        "occurred_at": datetime.now(UTC).isoformat(),
        "principal": PRINCIPAL,
        "idempotency_key": key,
        "category": CATEGORY,
        "source": SOURCE,
        "purposes": [PURPOSE],
        "fields": ["ip"],
        "storage_region": "cn",
        "value": f"198.51.100.{n % 256}",
        "pad": _PAD,
    }


def _pad_to(size: int) -> str:
    """Padding that brings a typical bare payload to `size` bytes of compact JSON."""
    sample = {**bare_payload("0123456789ab-bare-100000", 100), "pad": ""}
    return "x" * max(0, size - len(json.dumps(sample, separators=(",", ":"))))


_PAD = ""
_PAD = _pad_to(BARE_PAYLOAD_BYTES)


# --- one back-end's rig: the ledger, its key store, and the bare application --------------


@dataclass
class Counted:
    """What one timed loop did."""

    events: int
    calls: int


class Rig:
    """Everything measured on one back-end, and everything to clean up after it."""

    def __init__(self, backend: str, subjects: int, workdir: Path) -> None:
        self.backend = backend
        self.subjects = subjects
        self.workdir = workdir
        self.run_id = uuid4().hex[:12]
        self.seq = itertools.count()
        self.schemas: list[str] = []
        self.ledger: Ledger | None = None
        self.keystore: SqlKeyStore | None = None
        self.bare: BareApp | None = None
        self.subject_ids: list[UUID] = []
        self.items: list[Item] = []
        self.info: dict[str, Any] = {}
        self._app_next = 0
        self._bare_next = 0

    # setup ------------------------------------------------------------------------------

    def open(self) -> None:
        if self.backend == "sqlite":
            storage = StorageConfig(backend="sqlite", sqlite_path=self.workdir / "events.db")
            self.keystore = SqlKeyStore(f"sqlite:///{self.workdir / 'keys.db'}")
            bare_env = {
                "PERSISTENCE_MODULE": "eventsourcing.sqlite",
                "SQLITE_DBNAME": str(self.workdir / "bare.db"),
            }
            self.info = {"sqlite_version": sqlite3.sqlite_version, "dir": str(self.workdir)}
        else:
            app_schema = f"pdl_bench_{self.run_id}_app"
            bare_schema = f"pdl_bench_{self.run_id}_bare"
            for schema in (app_schema, bare_schema):
                self.schemas.append(schema)  # noted first, so a failed CREATE is still dropped
                _pg_execute(f'CREATE SCHEMA "{schema}"')
            storage = StorageConfig(
                backend="postgres",
                postgres=PostgresConfig(
                    host=PG_HOST, port=PG_PORT, dbname=PG_DB, user=PG_USER, schema_name=app_schema
                ),
            )
            self.keystore = SqlKeyStore(PG_URL, schema=app_schema)
            bare_env = {
                "PERSISTENCE_MODULE": "eventsourcing.postgres",
                "POSTGRES_HOST": PG_HOST,
                "POSTGRES_PORT": str(PG_PORT),
                "POSTGRES_DBNAME": PG_DB,
                "POSTGRES_USER": PG_USER,
                "POSTGRES_PASSWORD": "",
                "POSTGRES_SCHEMA": bare_schema,
            }
            self.info = {
                "server_version": _pg_scalar("SHOW server_version"),
                "synchronous_commit": _pg_scalar("SHOW synchronous_commit"),
                "schemas": list(self.schemas),
            }
        self.ledger = Ledger(
            ledger_env(storage),
            sealer=Sealer(MasterKey.generate(), self.keystore),
            clock=SystemClock(),
        )
        self.ledger.ensure_policy(load_seed_policy(), SEED_EFFECTIVE_AT, "pdl-bootstrap")
        self.bare = BareApp(env=bare_env)
        self._register_subjects()
        self._create_items()
        self.info["payload_state_bytes"] = self._payload_sizes()
        settle_heap()  # as `pdl serve` does after start-up; process-wide, so both arms get it
        collect_young_less_often()

    def _register_subjects(self) -> None:
        """One `execute` per subject: registration is not a batchable command."""
        ledger = self._ledger()
        for n in range(self.subjects):
            answer = ledger.execute(
                PRINCIPAL,
                c.RegisterSubject(
                    idempotency_key=f"{self.run_id}-reg-{n}",
                    occurred_at=ledger.clock.now(),
                    namespace="bench",
                    account_id=SecretStr(f"account-{self.run_id}-{n}"),
                ),
            )
            if answer.subject_id is None:
                raise RuntimeError(f"registration {n} named no subject")
            self.subject_ids.append(answer.subject_id)

    def _create_items(self) -> None:
        bare = self._bare()
        for start in range(0, self.subjects, BATCH):
            batch = [Item(f"item-{n}") for n in range(start, min(start + BATCH, self.subjects))]
            bare.save(*batch)
            self.items.extend(batch)

    def _payload_sizes(self) -> dict[str, int]:
        """Stored state bytes of one event of each kind, from one extra collection.

        The ledger stores two events per command: the subject's event and the receipt.
        """
        ledger, bare = self._ledger(), self._bare()
        sizes: dict[str, int] = {}
        answer = ledger.execute(PRINCIPAL, self._command(self.subject_ids[0], next(self.seq)))
        collected = next(iter(ledger.events.get(answer.aggregate_id, gt=answer.version - 1)))
        sizes["app_DataCollected"] = len(ledger.mapper.to_stored_event(collected).state)
        notification = ledger.recorder.select_notifications(answer.position + 1, 1)
        if notification:
            sizes["app_CommandAccepted"] = len(notification[0].state)
        item = Item("sizing")
        item.note(bare_payload("sizing-key", 1))
        noted = item.collect_events()[-1]
        sizes["bare_Noted"] = len(bare.mapper.to_stored_event(noted).state)
        return sizes

    # the four timed loops -----------------------------------------------------------------

    def _command(self, subject_id: UUID, n: int) -> c.RecordCollection:
        return c.RecordCollection(
            idempotency_key=f"{self.run_id}-col-{n}",
            occurred_at=datetime.now(UTC),
            subject=c.SubjectRef(subject_id=subject_id),
            category=CATEGORY,
            source=SOURCE,
            purposes=(PURPOSE,),
            values={"ip": SecretStr(f"198.51.100.{n % 256}")},
        )

    def app_1(self, deadline: float) -> Counted:
        ledger, ids, calls = self._ledger(), self.subject_ids, 0
        for _ in range(MAX_CALLS):
            n = next(self.seq)
            ledger.execute(PRINCIPAL, self._command(ids[self._app_next], n))
            self._app_next = (self._app_next + 1) % len(ids)
            calls += 1
            if time.perf_counter() >= deadline:
                break
        return Counted(events=calls, calls=calls)

    def app_100(self, deadline: float) -> Counted:
        ledger, ids, calls = self._ledger(), self.subject_ids, 0
        for _ in range(MAX_CALLS):
            commands = []
            for _k in range(BATCH):
                commands.append(self._command(ids[self._app_next], next(self.seq)))
                self._app_next = (self._app_next + 1) % len(ids)
            for outcome in ledger.execute_batch(PRINCIPAL, commands):
                if outcome.recorded is None:
                    raise RuntimeError(f"a batch item was not recorded: {outcome.error!r}")
            calls += 1
            if time.perf_counter() >= deadline:
                break
        return Counted(events=calls * BATCH, calls=calls)

    def bare_1(self, deadline: float) -> Counted:
        bare, items, calls = self._bare(), self.items, 0
        for _ in range(MAX_CALLS):
            n = next(self.seq)
            item = items[self._bare_next]
            item.note(bare_payload(f"{self.run_id}-bare-{n}", n))
            bare.save(item)
            self._bare_next = (self._bare_next + 1) % len(items)
            calls += 1
            if time.perf_counter() >= deadline:
                break
        return Counted(events=calls, calls=calls)

    def bare_100(self, deadline: float) -> Counted:
        bare, items, calls = self._bare(), self.items, 0
        for _ in range(MAX_CALLS):
            batch = []
            for _k in range(BATCH):
                n = next(self.seq)
                item = items[self._bare_next]
                item.note(bare_payload(f"{self.run_id}-bare-{n}", n))
                batch.append(item)
                self._bare_next = (self._bare_next + 1) % len(items)
            bare.save(*batch)
            calls += 1
            if time.perf_counter() >= deadline:
                break
        return Counted(events=calls * BATCH, calls=calls)

    # plumbing -----------------------------------------------------------------------------

    def _ledger(self) -> Ledger:
        assert self.ledger is not None
        return self.ledger

    def _bare(self) -> BareApp:
        assert self.bare is not None
        return self.bare

    def close(self) -> None:
        """Close everything opened; drop the schemas. Never raises."""
        for closer in (
            self.ledger.close if self.ledger is not None else None,
            self.keystore.close if self.keystore is not None else None,
            self.bare.close if self.bare is not None else None,
        ):
            if closer is not None:
                try:
                    closer()
                except Exception as exc:  # noqa: BLE001 (clean-up goes on regardless)
                    log(f"warning: closing {self.backend}: {type(exc).__name__}: {exc}")
        self.ledger = self.keystore = self.bare = None
        for schema in self.schemas:
            try:
                _pg_execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            except Exception as exc:  # noqa: BLE001 (report and go on to the next)
                log(f"warning: could not drop schema {schema}: {type(exc).__name__}: {exc}")
            else:
                log(f"dropped schema {schema}")
        self.schemas = []


# --- PostgreSQL helpers ---------------------------------------------------------------------


def postgres_listening(timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((PG_HOST, PG_PORT), timeout=timeout):
            return True
    except OSError:
        return False


def _pg_connect() -> Any:
    import psycopg  # noqa: PLC0415 (only needed when PostgreSQL is measured)

    return psycopg.connect(
        host=PG_HOST, port=PG_PORT, dbname=PG_DB, user=PG_USER, autocommit=True, connect_timeout=5
    )


def _pg_execute(statement: str) -> None:
    with _pg_connect() as conn:
        conn.execute("SET lock_timeout = '10s'")
        conn.execute(statement)  # type: ignore[arg-type] (our own identifiers only)


def _pg_scalar(statement: str) -> str:
    with _pg_connect() as conn:
        row = conn.execute(statement).fetchone()  # type: ignore[arg-type]
        return str(row[0]) if row else ""


# --- measurement ------------------------------------------------------------------------------


@dataclass
class Sample:
    events: int
    calls: int
    seconds: float
    cpu_seconds: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_us_per_event(self) -> float:
        return 1e6 * self.cpu_seconds / self.events if self.events else 0.0


@dataclass
class BackendResult:
    samples: dict[str, list[Sample]] = field(default_factory=lambda: {f: [] for f in FIGURES})
    info: dict[str, Any] = field(default_factory=dict)
    skipped: str | None = None


def measure(loop: Callable[[float], Counted], warmup: float, seconds: float) -> Sample:
    if warmup > 0:
        loop(time.perf_counter() + warmup)
    cpu0, t0 = time.process_time(), time.perf_counter()
    done = loop(t0 + seconds)
    t1, cpu1 = time.perf_counter(), time.process_time()
    return Sample(events=done.events, calls=done.calls, seconds=t1 - t0, cpu_seconds=cpu1 - cpu0)


# Each ratio's two figures run back to back, so a burst of load on the shared host is less
# likely to hit one and not the other; which pair goes first, and which of each pair, alternate.
ORDERS = (
    ("app_1", "bare_1", "app_100", "bare_100"),
    ("bare_100", "app_100", "bare_1", "app_1"),
    ("bare_1", "app_1", "bare_100", "app_100"),
    ("app_100", "bare_100", "app_1", "bare_1"),
)


def order_of_round(r: int) -> tuple[str, ...]:
    return ORDERS[r % len(ORDERS)]


def run(args: argparse.Namespace, workdir: Path, rigs: list[Rig]) -> dict[str, BackendResult]:
    results: dict[str, BackendResult] = {}
    active: list[Rig] = []
    for backend in args.backends:
        results[backend] = BackendResult()
        if backend == "postgres" and not postgres_listening():
            results[backend].skipped = f"nothing listens on {PG_HOST}:{PG_PORT}"
            log(f"postgres: skipped ({results[backend].skipped})")
            continue
        log(f"{backend}: setting up ({args.subjects} subjects, {args.subjects} bare aggregates)")
        directory = workdir / backend
        directory.mkdir()
        rig = Rig(backend, args.subjects, directory)
        rigs.append(rig)
        started = time.perf_counter()
        rig.open()
        results[backend].info = rig.info
        log(f"{backend}: ready in {time.perf_counter() - started:.1f} s")
        active.append(rig)
    for r in range(args.rounds):
        for rig in active:
            for figure in order_of_round(r):
                sample = measure(getattr(rig, figure), args.warmup, args.seconds)
                results[rig.backend].samples[figure].append(sample)
                log(
                    f"round {r + 1}/{args.rounds} {rig.backend:8} {figure:8} "
                    f"{sample.rate:>10,.0f} events/s  ({sample.calls} calls, "
                    f"{sample.cpu_us_per_event:,.0f} µs CPU/event)"
                )
    return results


# --- report -------------------------------------------------------------------------------------


def summarise(args: argparse.Namespace, results: dict[str, BackendResult]) -> dict[str, Any]:
    backends: dict[str, Any] = {}
    for backend, result in results.items():
        if result.skipped is not None:
            backends[backend] = {"skipped": result.skipped}
            continue
        figures = {}
        for name, samples in result.samples.items():
            rates = [s.rate for s in samples]
            figures[name] = {
                "median_events_per_s": statistics.median(rates) if rates else None,
                "rounds_events_per_s": rates,
                "rounds_events": [s.events for s in samples],
                "rounds_calls": [s.calls for s in samples],
                "rounds_seconds": [s.seconds for s in samples],
                "rounds_cpu_us_per_event": [s.cpu_us_per_event for s in samples],
                "median_cpu_us_per_event": (
                    statistics.median(s.cpu_us_per_event for s in samples) if samples else None
                ),
                "events_per_call": 1 if name.endswith("_1") else BATCH,
            }
        ratios = {}
        for label, (top, bottom, target) in RATIOS.items():
            per_round = [
                a.rate / b.rate
                for a, b in zip(result.samples[top], result.samples[bottom], strict=True)
                if b.rate > 0
            ]
            median = statistics.median(per_round) if per_round else None
            ratios[label] = {
                "median": median,
                "rounds": per_round,
                "ratio_of_medians": (
                    figures[top]["median_events_per_s"] / figures[bottom]["median_events_per_s"]
                    if figures[bottom]["median_events_per_s"]
                    else None
                ),
                "target": target,
                "pass": median is not None and median >= target,
            }
        backends[backend] = {"figures": figures, "ratios": ratios, "info": result.info}
    return {
        "benchmark": "record",
        "created_at": datetime.now(UTC).isoformat(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "eventsourcing": metadata.version("eventsourcing"),
        "pydantic": metadata.version("pydantic"),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "load_average_at_end": list(os.getloadavg()),
        "git": git_state(),
        "settings": {
            "seconds": args.seconds,
            "warmup": args.warmup,
            "rounds": args.rounds,
            "subjects": args.subjects,
            "batch": BATCH,
            "backends": args.backends,
        },
        "backends": backends,
    }


def git_state() -> dict[str, Any]:
    """The commit measured, and whether ledger/ or server/ had uncommitted changes."""
    root = Path(__file__).resolve().parent.parent
    state: dict[str, Any] = {}
    try:
        state["commit"] = subprocess.run(
            ["git", "rev-parse", "HEAD"],  # noqa: S607 (read-only, from PATH)
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "ledger", "server"],  # noqa: S607
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout
        state["tracked_changes_in_ledger_or_server"] = bool(changed.strip())
    except (OSError, subprocess.SubprocessError):
        state["commit"] = None
    return state


def print_table(summary: dict[str, Any]) -> None:
    from rich.console import Console  # noqa: PLC0415 (only for the human-readable report)
    from rich.table import Table  # noqa: PLC0415

    console = Console(file=sys.stdout, width=None if sys.stdout.isatty() else 120)
    s = summary["settings"]
    figures = Table(
        title=(
            f"Recording throughput, events/s (median of {s['rounds']} rounds x {s['seconds']} s; "
            f"Python {summary['python']}, eventsourcing {summary['eventsourcing']})"
        )
    )
    for column in ("backend", "figure", "median events/s", "per round", "CPU µs/event"):
        figures.add_column(column, justify="left" if column in ("backend", "figure") else "right")
    ratios = Table(title="Same-run ratios (median of per-round ratios)")
    for column in ("backend", "ratio", "median", "per round", "target", "result"):
        ratios.add_column(column, justify="left" if column in ("backend", "ratio") else "right")
    for backend, data in summary["backends"].items():
        if "skipped" in data:
            figures.add_row(backend, "skipped", data["skipped"], "", "")
            continue
        for name, f in data["figures"].items():
            figures.add_row(
                backend,
                name,
                f"{f['median_events_per_s']:,.0f}",
                " / ".join(f"{r:,.0f}" for r in f["rounds_events_per_s"]),
                f"{f['median_cpu_us_per_event']:,.0f}",
            )
        for label, ratio in data["ratios"].items():
            verdict = "[green]PASS[/green]" if ratio["pass"] else "[red]FAIL[/red]"
            ratios.add_row(
                backend,
                label,
                f"{ratio['median']:.3f}",
                " / ".join(f"{r:.2f}" for r in ratio["rounds"]),
                f">= {ratio['target']}",
                verdict,
            )
    console.print(figures)
    console.print(ratios)
    for backend, data in summary["backends"].items():
        if "info" in data:
            console.print(f"{backend}: {json.dumps(data['info'])}", soft_wrap=True)
    console.print(f"git: {json.dumps(summary['git'])}", soft_wrap=True)


# --- entry point ----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument(
        "--backends", default="sqlite,postgres", help="comma-separated: sqlite, postgres"
    )
    parser.add_argument("--seconds", type=float, default=3.0, help="measurement window")
    parser.add_argument("--warmup", type=float, default=0.5, help="warm-up before each window")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of all configurations")
    parser.add_argument("--subjects", type=int, default=1000, help="subjects / bare aggregates")
    args = parser.parse_args(argv)
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = set(args.backends) - {"sqlite", "postgres"}
    if unknown or not args.backends:
        parser.error(f"unknown back-end(s): {', '.join(sorted(unknown)) or '(none)'}")
    if args.seconds <= 0 or args.warmup < 0 or args.rounds < 1:
        parser.error("--seconds must be > 0, --warmup >= 0, --rounds >= 1")
    if args.subjects < BATCH:
        parser.error(f"--subjects must be at least {BATCH}")
    return args


@contextlib.contextmanager
def interrupts_as_keyboard_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP end the run like Ctrl-C, so the clean-up runs."""

    def handler(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def cleanup(rigs: list[Rig], workdir: Path) -> None:
    """Close and drop everything; a second Ctrl-C cannot cut it short."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        for rig in rigs:
            rig.close()
        shutil.rmtree(workdir, ignore_errors=True)
        log(f"removed {workdir}")
    finally:
        signal.signal(signal.SIGINT, previous)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="pdl-bench-record-"))
    rigs: list[Rig] = []
    with interrupts_as_keyboard_interrupt():
        try:
            results = run(args, workdir, rigs)
        except KeyboardInterrupt:
            log("interrupted: cleaning up")
            return 130
        finally:
            cleanup(rigs, workdir)
    summary = summarise(args, results)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print_table(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())

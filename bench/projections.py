"""Projection throughput against reading the log, and view lag under steady recording.

Usage::

    .venv/bin/python bench/projections.py [--json] [--backends sqlite,postgres] [--events N]
                                          [--rounds R] [--rate PER_SECOND] [--seconds S]

Figures, per back-end:

- ``read``     events/s reading the whole notification log in pages of 500 and decoding every
               event into its payload (the floor any projection pays).
- ``project``  events/s folding the same log into every view from zero (a fresh views
               database each round, opened and closed outside the timing, as the log is
               for ``read``), with the runner's page size of 500 (while it catches up, a
               transaction grows to eight pages), tracking written with each transaction.
- ``ratio``    median over rounds of project/read (target >= 0.3); the two run back to back,
               alternating which goes first.
- ``lag``      p50/p99 milliseconds from a command's acknowledgement to every view having
               folded it, while one thread records single commands at a steady rate and the
               runner follows in the same process, as `pdl serve` runs it (target p99 <= 250 ms
               on SQLite).

The history is realistic for the seed policy: registrations, collections from several
sources (out of order in time), uses, consents and withdrawals, rights requests. Once it is
recorded, the process settles its heap and collects its young generation less often, as
`pdl serve` and `pdl project` do after start-up. Timings are never asserted; the exit status
is 0 whenever the run completes.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as `python bench/projections.py`, this file's folder comes first on the path and its
# name would hide the `projections` package; drop the folder (nothing else lives there).
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

import argparse
import json
import shutil
import signal
import socket
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any
from uuid import UUID, uuid4

import psycopg
from pydantic import SecretStr

from ledger import commands as c
from ledger.application import Ledger
from ledger.clock import SystemClock
from ledger.policy import SEED_EFFECTIVE_AT, RightKind, load_seed_policy
from ledger.sealing import MasterKey, MemoryKeyStore, Sealer
from ledger.storage import PostgresConfig, StorageConfig, ledger_env
from projections import ProjectionRunner, ViewStore, views
from server.runtime import collect_young_less_often, settle_heap

_PAGE = 500
_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _commands(sid: UUID, n: int) -> list[c._Command]:
    """About a dozen commands for one person, some reported late."""
    ref = c.SubjectRef(subject_id=sid)
    now = SystemClock().now()
    out: list[c._Command] = [
        c.RecordCollection(
            idempotency_key=f"col-{sid}-{i}",
            occurred_at=now - timedelta(minutes=(i * 7) % 5),
            subject=ref,
            category=("network_log.ip_address", "network_log.time_zone", "device.attributes")[
                i % 3
            ],
            source=("server_logs", "app", "sdk")[i % 3],
            purposes=(("security_detection",), ("notifications",), ("remembering_settings",))[
                i % 3
            ],
            values={"v": SecretStr(uuid4().hex)},
        )
        for i in range(8)
    ]
    out.append(
        c.RecordUse(
            idempotency_key=f"use-{sid}",
            occurred_at=now,
            subject=ref,
            categories=("network_log.ip_address",),
            purpose="security_detection",
            legal_basis="contract",
        )
    )
    out.append(
        c.GiveConsent(
            idempotency_key=f"con-{sid}",
            occurred_at=now,
            subject=ref,
            purposes=("customer_service",),
            categories=("location.gps", "location.wifi"),
            method="popup",
        )
    )
    if n % 4 == 0:
        out.append(
            c.WithdrawConsent(
                idempotency_key=f"wd-{sid}",
                occurred_at=now,
                subject=ref,
                categories=("location.wifi",),
            )
        )
    return out


def _ledger(config: StorageConfig) -> Ledger:
    app = Ledger(
        ledger_env(config),
        sealer=Sealer(MasterKey.generate(), MemoryKeyStore()),
        clock=SystemClock(),
    )
    app.ensure_policy(load_seed_policy(), SEED_EFFECTIVE_AT, "bench")
    return app


def _register(app: Ledger) -> UUID:
    sid = app.execute(
        "bench",
        c.RegisterSubject(
            idempotency_key=f"reg-{uuid4()}",
            occurred_at=app.clock.now(),
            namespace="app",
            account_id=SecretStr(uuid4().hex),
        ),
    ).subject_id
    assert sid is not None
    return sid


def fill(app: Ledger, events: int) -> int:
    n = 0
    while (app.recorder.max_notification_id() or 0) < events:
        sid = _register(app)
        app.execute_batch("bench", _commands(sid, n))
        if n % 20 == 0:
            app.execute(
                "bench",
                c.OpenRightsRequest(
                    idempotency_key=f"req-{sid}",
                    occurred_at=app.clock.now(),
                    subject=c.SubjectRef(subject_id=sid),
                    kind=RightKind.ACCESS,
                ),
            )
        n += 1
    return app.recorder.max_notification_id() or 0


def read_all(app: Ledger) -> int:
    start, count = 1, 0
    decode = app.mapper.to_domain_event
    while True:
        page = app.recorder.select_notifications(start, _PAGE)
        for n in page:
            getattr(decode(n), "payload", None)
        count += len(page)
        if len(page) < _PAGE:
            return count
        start = page[-1].id + 1


@contextmanager
def view_store(backend: str, workdir: Path, tag: str) -> Iterator[ViewStore]:
    if backend == "sqlite":
        store = ViewStore(f"sqlite:///{workdir / f'views-{tag}.db'}")
        try:
            yield store
        finally:
            store.close()
        return
    schema = f"pdl_bench_views_{uuid4().hex[:10]}"
    with psycopg.connect("host=127.0.0.1 user=postgres dbname=test", autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    store = ViewStore(_PG, schema=schema)
    try:
        yield store
    finally:
        store.close()
        with psycopg.connect("host=127.0.0.1 user=postgres dbname=test", autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def timed(fn: Any) -> tuple[float, int]:
    began = time.perf_counter()
    count = fn()
    return time.perf_counter() - began, count


def throughput(app: Ledger, backend: str, workdir: Path, rounds: int) -> dict[str, Any]:
    reads, projects, ratios = [], [], []
    for r in range(rounds):
        order = ["read", "project"]
        if r % 2:
            order.reverse()
        rates: dict[str, float] = {}
        for name in order:
            if name == "read":
                seconds, count = timed(lambda: read_all(app))
            else:  # a fresh views database, opened and closed outside the timing
                with view_store(backend, workdir, f"r{r}") as store:
                    runner = ProjectionRunner(app, store, views(store.dialect), page_size=_PAGE)
                    seconds, count = timed(runner.catch_up)
            rates[name] = count / seconds
        reads.append(rates["read"])
        projects.append(rates["project"])
        ratios.append(rates["project"] / rates["read"])
        log(f"  round {r + 1}: read {rates['read']:,.0f}/s, project {rates['project']:,.0f}/s")
    return {
        "read_events_per_s": statistics.median(reads),
        "project_events_per_s": statistics.median(projects),
        "ratio": statistics.median(ratios),
        "ratio_rounds": ratios,
        "target_ratio": 0.3,
    }


def lag(app: Ledger, backend: str, workdir: Path, rate: float, seconds: float) -> dict[str, Any]:
    with view_store(backend, workdir, "lag") as store:
        runner = ProjectionRunner(app, store, views(store.dialect), page_size=_PAGE)
        runner.catch_up()
        acked: list[tuple[int, float]] = []
        lags: list[float] = []
        done = threading.Event()

        def watch() -> None:
            index = 0
            while not done.is_set() or index < len(acked):
                reached = runner.position
                now = time.perf_counter()
                while index < len(acked) and acked[index][0] <= reached:
                    lags.append(now - acked[index][1])
                    index += 1
                time.sleep(0.001)

        people = [_register(app) for _ in range(200)]
        runner.start()
        watcher = threading.Thread(target=watch)
        watcher.start()
        interval, began, n = 1.0 / rate, time.perf_counter(), 0
        while time.perf_counter() - began < seconds:
            sid = people[n % len(people)]
            command = _commands(sid, n)[n % 8]
            command = command.model_copy(update={"idempotency_key": f"lag-{uuid4()}"})
            recorded = app.execute("bench", command)
            acked.append((recorded.position, time.perf_counter()))
            n += 1
            pause = began + n * interval - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
        done.set()
        watcher.join(30)
        runner.stop()
    ms = sorted(x * 1000 for x in lags)
    return {
        "commands": n,
        "achieved_rate": n / seconds,
        "lag_p50_ms": ms[len(ms) // 2] if ms else None,
        "lag_p99_ms": ms[min(len(ms) - 1, int(len(ms) * 0.99))] if ms else None,
        "lag_max_ms": ms[-1] if ms else None,
        "target_p99_ms": 250,
    }


def postgres_listening() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=0.5):
            return True
    except OSError:
        return False


def run_backend(backend: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    if backend == "sqlite":
        config = StorageConfig(backend="sqlite", sqlite_path=workdir / "events.db")
        schema = None
    else:
        schema = f"pdl_bench_events_{uuid4().hex[:10]}"
        with psycopg.connect("host=127.0.0.1 user=postgres dbname=test", autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
        config = StorageConfig(
            backend="postgres", postgres=PostgresConfig(dbname="test", schema_name=schema)
        )
    app = _ledger(config)
    try:
        log(f"{backend}: recording a history of {args.events:,} events")
        size = fill(app, args.events)
        # As `pdl serve` and `pdl project` do once started: what set-up made lives on, and
        # the collector no longer rescans it under load.
        settle_heap()
        collect_young_less_often()
        result: dict[str, Any] = {"log_events": size}
        result.update(throughput(app, backend, workdir, args.rounds))
        log(f"{backend}: view lag at {args.rate:g} commands/s for {args.seconds:g} s")
        result.update(lag(app, backend, workdir, args.rate, args.seconds))
        return result
    finally:
        app.close()
        if schema is not None:
            with psycopg.connect(
                "host=127.0.0.1 user=postgres dbname=test", autocommit=True
            ) as conn:
                conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def _interrupted(signum: int, _frame: object) -> None:
    """SIGTERM and SIGHUP end the run like Ctrl-C, so the clean-up runs."""
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.add_argument("--backends", default="sqlite,postgres", help="sqlite,postgres")
    parser.add_argument("--events", type=int, default=20_000, help="log size (default 20,000)")
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds (default 3)")
    parser.add_argument("--rate", type=float, default=100, help="commands/s during the lag test")
    parser.add_argument("--seconds", type=float, default=10, help="length of the lag test")
    args = parser.parse_args()
    backends = [b for b in args.backends.split(",") if b]
    unknown = sorted(set(backends) - {"sqlite", "postgres"})
    if unknown or not backends:
        parser.error(f"unknown back-end(s): {', '.join(unknown) or '(none given)'}")
    if "postgres" in backends and not postgres_listening():
        log("postgres: nothing listens on 127.0.0.1:5432; skipped")
        backends.remove("postgres")
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupted)
    workdir = Path(tempfile.mkdtemp(prefix="pdl-bench-projections-"))
    try:
        results = {b: run_backend(b, args, workdir) for b in backends}
    except KeyboardInterrupt:
        log("interrupted: cleaning up")
        return 130
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        print(json.dumps({"bench": "projections", "results": results}, indent=2))
        return 0
    for backend, r in results.items():
        verdict = "meets" if r["ratio"] >= r["target_ratio"] else "MISSES"
        lag_verdict = "meets" if (r["lag_p99_ms"] or 0) <= r["target_p99_ms"] else "MISSES"
        print(
            f"{backend}: read {r['read_events_per_s']:,.0f} ev/s, project "
            f"{r['project_events_per_s']:,.0f} ev/s, ratio {r['ratio']:.2f} "
            f"({verdict} >= 0.3); lag p50 {r['lag_p50_ms']:.1f} ms, p99 {r['lag_p99_ms']:.1f} ms "
            f"at {r['achieved_rate']:.0f}/s ({lag_verdict} p99 <= 250 ms)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

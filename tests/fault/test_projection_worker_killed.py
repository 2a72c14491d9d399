"""A projection worker killed (SIGKILL) in the middle of the log and started again leaves every
view exactly as a worker that never died would have built it (issue "Projections", item 2).

A real `pdl project` process folds a real SQLite data directory in small pages; it is killed
once its views have committed part of the log, then run again to the end. The views are then
compared, row for row, with views built from zero in another file.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr
from scenario import PRINCIPAL, key, secret
from tests_support import dump

from ledger import commands as c
from projections import VIEW_NAMES, ViewStore, ledger_runner
from server.runtime import VIEWS_FILE, open_runtime
from server.settings import load_settings

pytestmark = pytest.mark.slow

_PEOPLE = 150
_PER_PERSON = 12


def _record_history(data_dir: Path) -> int:
    runtime = open_runtime(load_settings(data_dir=data_dir))
    try:
        ledger = runtime.ledger
        now = ledger.clock.now()
        for n in range(_PEOPLE):
            sid = ledger.execute(
                PRINCIPAL,
                c.RegisterSubject(
                    idempotency_key=key("reg"),
                    occurred_at=now - timedelta(minutes=_PER_PERSON),
                    namespace="app",
                    account_id=SecretStr(secret("account")),
                ),
            ).subject_id
            ref = c.SubjectRef(subject_id=sid)
            batch: list[c._Command] = [
                c.RecordCollection(
                    idempotency_key=key("col"),
                    occurred_at=now - timedelta(minutes=i),
                    subject=ref,
                    category="network_log.ip_address" if i % 2 else "network_log.time_zone",
                    source="server_logs" if i % 3 else "app",
                    purposes=("security_detection",) if i % 2 else ("notifications",),
                    values={"v": SecretStr(secret("v"))},
                )
                for i in range(_PER_PERSON - 2)
            ]
            batch.append(
                c.GiveConsent(
                    idempotency_key=key("con"),
                    occurred_at=now,
                    subject=ref,
                    purposes=("customer_service",),
                    categories=("location.gps",),
                    method="popup",
                )
            )
            if n % 5 == 0:
                batch.append(
                    c.WithdrawConsent(
                        idempotency_key=key("wd"),
                        occurred_at=now,
                        subject=ref,
                        purposes=("customer_service",),
                    )
                )
            outcomes = ledger.execute_batch(PRINCIPAL, batch)
            assert all(o.error is None for o in outcomes)
        return ledger.recorder.max_notification_id() or 0
    finally:
        runtime.close()


def _lowest_position(views_db: Path) -> int:
    if not views_db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{views_db}?mode=ro", uri=True, timeout=1) as conn:
            rows = conn.execute("SELECT position FROM view_tracking").fetchall()
    except sqlite3.OperationalError:  # the table is being made
        return 0
    return min((r[0] for r in rows), default=0) if len(rows) == len(VIEW_NAMES) else 0


def _project(data_dir: Path, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(  # noqa: S603 (our own entry point, with fixed arguments)
        [str(Path(sys.executable).parent / "pdl"), "project", "--data-dir", str(data_dir), *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "PDL_PROJECTIONS": "external"},
    )


def test_a_worker_killed_mid_log_and_restarted_builds_the_views_a_survivor_would(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    end = _record_history(data_dir)
    views_db = data_dir / VIEWS_FILE

    worker = _project(data_dir, "--once", "--page-size", "7")
    deadline = time.monotonic() + 120
    reached = 0
    while time.monotonic() < deadline and worker.poll() is None:
        reached = _lowest_position(views_db)
        if reached > 0:  # its first pages committed: kill it at once (it folds fast)
            break
        time.sleep(0.005)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    assert worker.returncode == -signal.SIGKILL, "the worker finished before it could be killed"
    assert 0 < reached < end

    again = _project(data_dir, "--once", "--page-size", "7")
    _, stderr = again.communicate(timeout=300)
    assert again.returncode == 0, stderr.decode()
    assert _lowest_position(views_db) == end

    runtime = open_runtime(load_settings(data_dir=data_dir, projections="external"))
    try:
        survivor = ViewStore(f"sqlite:///{tmp_path / 'survivor.db'}")
        ledger_runner(runtime.ledger, survivor).catch_up()
        assert runtime.ledger.recorder.max_notification_id() == end  # nothing written meanwhile
        assert dump(runtime.views) == dump(survivor)
        survivor.close()
    finally:
        runtime.close()

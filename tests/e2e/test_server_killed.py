"""`pdl serve` killed outright in the middle of recording loses nothing it acknowledged.

SIGKILL reaches the server, its writer and its projection process at once, while unary calls
(32 in flight, committed in groups) and batches (committed by the writer's committing thread)
are being recorded. Then:
- every call answered OK is in the event store, at the version it was told, with its key;
- a new server on the same data directory answers each acknowledged request again as a replay,
  at the same log position;
- each request that got no answer, sent again with its key, is recorded exactly once, whether
  or not its first attempt reached the store before the kill.
(The guide: nothing acknowledged is ever lost, a retry with the same key is recorded once;
issue #4, "Running it".)
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

import grpc
from scenario import secret
from test_server_ops import ServeProcess, ip_collection, start_pdl_serve

from server._pb.pdl.v1 import common_pb2 as cpb
from server._pb.pdl.v1 import ledger_service_pb2 as lpb
from server.client import LedgerClient
from server.runtime import open_runtime
from server.settings import load_settings

if TYPE_CHECKING:
    from conftest import E2EStore

_BATCH_ITEMS = 20


def _group(pgid: int) -> list[int]:
    """The live (not yet exited) processes of a process group."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        state, _ppid, group = stat.rsplit(")", 1)[1].split()[:3]
        if int(group) == pgid and state not in ("Z", "X"):
            found.append(int(entry))
    return found


def _kill_all(running: ServeProcess) -> int:
    """SIGKILL every process of the server's group at once; how many there were."""
    pgid = running.process.pid
    processes = _group(pgid)
    os.killpg(pgid, signal.SIGKILL)
    running.process.wait(10)
    deadline = time.monotonic() + 10
    while _group(pgid) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not _group(pgid), "a process of the server outlived SIGKILL"
    return len(processes)


Answered = tuple[lpb.RecordCollectionRequest, cpb.Recorded]


@dataclass
class Recording:
    """Unary calls and batches kept in flight until told to stop; each request is kept, with
    the answer it got or without one."""

    client: LedgerClient
    subject_id: str
    answered: list[Answered] = field(default_factory=list)
    unanswered: list[lpb.RecordCollectionRequest] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    batches: int = 0
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def request(self) -> lpb.RecordCollectionRequest:
        return ip_collection(self.subject_id, secret("load"), uuid.uuid4().hex)

    def unary(self, in_flight: int = 32) -> None:
        pending: deque[tuple[lpb.RecordCollectionRequest, Any]] = deque()
        method = self.client.ledger.RecordCollection
        while not self.stop.is_set() or pending:
            while not self.stop.is_set() and len(pending) < in_flight:
                request = self.request()
                pending.append((request, method.future(request, **self.client.options)))
            request, call = pending.popleft()
            try:
                self.answered.append((request, call.result(30).recorded))
            except grpc.RpcError:
                self.unanswered.append(request)
                time.sleep(0.001)

    def batch(self) -> None:
        while not self.stop.is_set():
            items = [self.request() for _ in range(_BATCH_ITEMS)]
            batch = lpb.RecordBatchRequest(items=[lpb.BatchItem(collection=r) for r in items])
            try:
                response = self.client.ledger.RecordBatch(batch, **self.client.options)
            except grpc.RpcError:
                self.unanswered.extend(items)
                time.sleep(0.001)
                continue
            for request, outcome in zip(items, response.outcomes, strict=True):
                if outcome.HasField("recorded"):
                    self.answered.append((request, outcome.recorded))
                else:  # not expected: the test fails on it below
                    self.refused.append(outcome.refusal.reason)
            self.batches += 1

    def start(self) -> None:
        self.threads = [threading.Thread(target=t, daemon=True) for t in (self.unary, self.batch)]
        for thread in self.threads:
            thread.start()

    def wait_for(self, answered: int, batches: int) -> None:
        deadline = time.monotonic() + 60
        while len(self.answered) < answered or self.batches < batches:
            assert time.monotonic() < deadline, (len(self.answered), self.batches)
            time.sleep(0.005)

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(60)
            assert not thread.is_alive()


def _stored_keys(data_dir: Path, store: E2EStore, subject_id: str) -> list[str | None]:
    """The idempotency key of each of the person's stored events, by version."""
    settings = load_settings(
        environ={},
        data_dir=data_dir,
        database_url=store.database_url,
        postgres_schema=store.schema,
        projections="external",
    )
    runtime = open_runtime(settings)
    try:
        return [p.idempotency_key for p in runtime.ledger.history(UUID(subject_id))]
    finally:
        runtime.close()


def test_sigkill_under_load_loses_nothing_acknowledged_and_retries_record_once(
    e2e_store: E2EStore, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    running, target = start_pdl_serve(data_dir, e2e_store, own_session=True)
    token = (data_dir / "admin.token").read_text().strip()
    try:
        with LedgerClient(target, token) as client:
            sid = client.register_subject("app", secret("account")).subject_id
            load = Recording(client, sid)
            load.start()
            load.wait_for(answered=300, batches=3)
            processes = _kill_all(running)  # with calls in flight
            load.finish()
    finally:
        if running.process.poll() is None:
            running.process.kill()
    assert processes >= 3  # the server, its writer and its projection process (and forkserver)
    assert not load.refused
    assert len(load.answered) >= 300
    assert load.unanswered, "the kill came between calls: nothing was in flight"

    stored = _stored_keys(data_dir, e2e_store, sid)
    lost = [r.version for _, r in load.answered if r.version > len(stored)]
    assert not lost, f"{len(lost)} acknowledged events are not in the store"
    for request, recorded in load.answered:
        assert stored[recorded.version - 1] == request.meta.idempotency_key

    again, target = start_pdl_serve(data_dir, e2e_store, own_session=True)
    try:
        with LedgerClient(target, token) as client:
            for request, recorded in load.answered:
                replay = client.ledger.RecordCollection(request, **client.options).recorded
                assert replay.replayed
                assert (replay.position, replay.version) == (recorded.position, recorded.version)
            for request in load.unanswered:
                client.ledger.RecordCollection(request, **client.options)
        again.process.send_signal(signal.SIGTERM)
        assert again.wait(30) == 0, again.stderr
    finally:
        if again.process.poll() is None:
            again.process.kill()

    keys = Counter(_stored_keys(data_dir, e2e_store, sid))
    sent = [r.meta.idempotency_key for r, _ in load.answered] + [
        r.meta.idempotency_key for r in load.unanswered
    ]
    assert {k: keys[k] for k in sent} == dict.fromkeys(sent, 1)  # each request once
    assert sum(keys.values()) == 1 + len(sent)  # and nothing else, but the registration

"""A server whose PostgreSQL goes away (PostgreSQL only): the server reaches the database
through a TCP relay that the test cuts. A write during the outage answers UNAVAILABLE
STORAGE_UNAVAILABLE within seconds instead of waiting for the database to come back, the
server and its recording services turn NOT_SERVING while the read-only ones stay SERVING,
and once the database is back a retry with the same key is recorded once and everything
is SERVING again.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from conftest import Served, e2e_settings, start_server, stop_server
from grpc_health.v1 import health_pb2, health_pb2_grpc
from outcomes import reason_of
from pydantic import SecretStr
from scenario import secret

from server._pb.pdl.v1 import common_pb2 as cpb
from server._pb.pdl.v1 import ledger_service_pb2 as lpb

pytestmark = pytest.mark.postgres

_IP = "network_log.ip_address"
_STATUS = health_pb2.HealthCheckResponse
_OUTAGE_ANSWER_SECONDS = 30
"""The call's deadline during the outage: without connection timeouts the write waited for the
whole outage, and answered DEADLINE_EXCEEDED instead of UNAVAILABLE."""


class Relay:
    """Forwards TCP connections from a loopback port to PostgreSQL until `cut`: then every
    connection is reset and new ones are closed at once, as when the server is down."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self._upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        self._down = False
        self._stopped = False
        threading.Thread(target=self._accept, name="relay", daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            self._down = True
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
                    sock.close()
            self._open.clear()

    def restore(self) -> None:
        with self._lock:
            self._down = False

    def close(self) -> None:
        self._stopped = True
        self.cut()
        self._listener.close()

    def _accept(self) -> None:
        while not self._stopped:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                if self._down:
                    client.close()
                    continue
                try:
                    server = socket.create_connection(self._upstream, timeout=5)
                except OSError:
                    client.close()
                    continue
                self._open += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.close()


@pytest.fixture
def relayed(tmp_path: Path, postgres_schema: str) -> Iterator[tuple[Served, Relay]]:
    relay = Relay(("127.0.0.1", 5432))
    settings = e2e_settings(tmp_path, "postgres", postgres_schema)
    url = SecretStr(f"postgresql://postgres@127.0.0.1:{relay.port}/test")
    settings = settings.model_copy(update={"database_url": url})
    served = start_server(settings)
    try:
        yield served, relay
    finally:
        relay.restore()
        stop_server(served)
        relay.close()


def _health(served: Served) -> dict[str, int]:
    with grpc.insecure_channel(served.target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return {
            name: stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=10).status
            for name in ("", "pdl.v1.LedgerService", "pdl.v1.QueryService")
        }


def test_a_write_without_its_database_is_unavailable_at_once_and_recorded_once_when_back(
    relayed: tuple[Served, Relay],
) -> None:
    served, relay = relayed
    with served.client() as client:
        sid = client.register_subject("app", secret("account")).subject_id
        request = lpb.RecordCollectionRequest(
            meta=cpb.CommandMeta(idempotency_key=f"outage-{uuid.uuid4()}"),
            subject=cpb.SubjectRef(subject_id=sid),
            category=_IP,
            source="server_logs",
            purposes=["security_detection"],
            values={"ip": secret("ip")},
        )
        relay.cut()
        with pytest.raises(grpc.RpcError) as failed:
            client.ledger.RecordCollection(
                request, metadata=client.options["metadata"], timeout=_OUTAGE_ANSWER_SECONDS
            )
        assert failed.value.code() is grpc.StatusCode.UNAVAILABLE, failed.value.details()
        assert reason_of(failed.value) == "STORAGE_UNAVAILABLE"
        assert _health(served) == {
            "": _STATUS.NOT_SERVING,
            "pdl.v1.LedgerService": _STATUS.NOT_SERVING,
            "pdl.v1.QueryService": _STATUS.SERVING,
        }

        relay.restore()
        deadline = time.monotonic() + 30
        while True:
            try:
                done = client.ledger.RecordCollection(request, **client.options).recorded
                break
            except grpc.RpcError as error:
                if error.code() is not grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        again = client.ledger.RecordCollection(request, **client.options).recorded
        assert again.replayed
        assert again.position == done.position
        history = client.history(sid, "DataCollected")
        assert [e.version for e in history] == [done.version]
        assert set(_health(served).values()) == {_STATUS.SERVING}

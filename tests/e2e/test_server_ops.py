"""The server as operators and tools meet it, on SQLite and PostgreSQL: reflection as grpcurl
uses it, health, deadlines, a real `pdl serve` process stopped by SIGTERM under load (nothing
acknowledged lost, one clean log line per call), the loopback-only rule without TLS, and TLS
with and without client certificates.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

import grpc
import pytest
from conftest import TOKENS
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from google.protobuf import descriptor_pb2
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from outcomes import bad_fields, reason_of
from pydantic import ValidationError
from scenario import secret

from server._pb.pdl.v1 import common_pb2 as cpb
from server._pb.pdl.v1 import ledger_service_pb2 as lpb
from server._pb.pdl.v1 import ledger_service_pb2_grpc as lgrpc
from server._pb.pdl.v1 import policy_service_pb2 as ppb
from server._pb.pdl.v1 import policy_service_pb2_grpc as pgrpc
from server._pb.pdl.v1 import query_service_pb2 as qpb
from server._pb.pdl.v1 import query_service_pb2_grpc as qgrpc
from server.app import SERVER_OPTIONS
from server.client import LedgerClient, meta, subject
from server.runtime import open_runtime
from server.settings import PrincipalConfig, Scope, TlsConfig, load_settings

if TYPE_CHECKING:
    from conftest import E2EStore, Served

_IP = "network_log.ip_address"
_PDL = Path(sys.executable).with_name("pdl")
_GRACE_SECONDS = 5.0  # shutdown_grace_seconds of the `pdl serve` processes started here


def ip_collection(
    subject_id: str, value: str, key: str | None = None
) -> lpb.RecordCollectionRequest:
    return lpb.RecordCollectionRequest(
        meta=meta(key, datetime.now(UTC) - timedelta(seconds=1)),
        subject=subject(subject_id),
        category=_IP,
        source="server_logs",
        purposes=["security_detection"],
        values={"ip": value},
    )


# --- reflection and health ----------------------------------------------------------------


def reflect(channel: grpc.Channel, **ask: str) -> reflection_pb2.ServerReflectionResponse:
    """One request on the reflection stream, as grpcurl sends it."""
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(host="", **ask)
    [answer] = list(stub.ServerReflectionInfo(iter([request]), timeout=10))
    return answer


def test_reflection_lists_every_service_without_a_token(served: Served) -> None:
    with grpc.insecure_channel(served.target) as channel:
        answer = reflect(channel, list_services="")

    names = {s.name for s in answer.list_services_response.service}
    assert names == {
        "pdl.v1.LedgerService",
        "pdl.v1.RightsRequestService",
        "pdl.v1.PolicyService",
        "pdl.v1.QueryService",
        "pdl.v1.ViewService",
        "pdl.v1.PolicyNoticeService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    }


def test_reflection_resolves_the_file_that_declares_a_service(served: Served) -> None:
    with grpc.insecure_channel(served.target) as channel:
        answer = reflect(channel, file_containing_symbol="pdl.v1.LedgerService")

    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in answer.file_descriptor_response.file_descriptor_proto
    ]
    by_name = {f.name: f for f in files}
    ledger = by_name["pdl/v1/ledger_service.proto"]
    assert ledger.package == "pdl.v1"
    [service] = ledger.service
    assert service.name == "LedgerService"
    assert "RecordBatch" in {m.name for m in service.method}
    assert "pdl/v1/common.proto" in ledger.dependency


def test_health_says_serving_without_a_token(served: Served) -> None:
    services = ["", "pdl.v1.LedgerService", "pdl.v1.QueryService", "pdl.v1.PolicyService"]
    with grpc.insecure_channel(served.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        answers = {
            name: health.Check(health_pb2.HealthCheckRequest(service=name), timeout=10).status
            for name in services
        }
        with pytest.raises(grpc.RpcError) as unknown:
            health.Check(health_pb2.HealthCheckRequest(service="pdl.v1.NoSuchService"), timeout=10)

    assert answers == dict.fromkeys(services, health_pb2.HealthCheckResponse.SERVING)
    assert unknown.value.code() is grpc.StatusCode.NOT_FOUND


# --- deadlines ----------------------------------------------------------------------------


_DEADLINE_OUTCOMES = (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.OK)
"""A 0.1 ms deadline almost always expires first; on a fast, idle machine the call can win."""


def _with_tiny_deadline(client: LedgerClient, method: str, request: object) -> grpc.StatusCode:
    try:
        getattr(client.ledger, method)(request, metadata=client.options["metadata"], timeout=0.0001)
    except grpc.RpcError as late:
        return late.code()  # type: ignore[attr-defined, no-any-return]
    return grpc.StatusCode.OK


def test_a_call_past_its_deadline_fails_and_leaves_nothing_half_written(
    client: LedgerClient,
) -> None:
    account = cpb.AccountRef(namespace="app", account_id=secret("account"))
    registration = lpb.RegisterSubjectRequest(
        meta=meta(uuid.uuid4().hex, datetime.now(UTC) - timedelta(seconds=1)), account=account
    )
    assert _with_tiny_deadline(client, "RegisterSubject", registration) in _DEADLINE_OUTCOMES
    sid = client.ledger.RegisterSubject(registration, **client.options).recorded.subject_id
    collection = ip_collection(sid, secret("ip"), uuid.uuid4().hex)
    batch = lpb.RecordBatchRequest(
        items=[lpb.BatchItem(collection=ip_collection(sid, secret("ip"))) for _ in range(20)]
    )

    for method, request in [("RecordCollection", collection), ("RecordBatch", batch)]:
        assert _with_tiny_deadline(client, method, request) in _DEADLINE_OUTCOMES, method
        getattr(client.ledger, method)(request, **client.options)  # a replay if it got through

    by_account = client.query.GetSubjectState(
        qpb.GetSubjectStateRequest(subject=cpb.SubjectRef(account=account)), **client.options
    ).state
    assert by_account.subject_id == sid
    events = client.history(sid)
    assert [e.event_type for e in events] == ["SubjectRegistered", *["DataCollected"] * 21]
    keys = [json.loads(e.payload_json)["idempotency_key"] for e in events]
    expected = [
        registration.meta.idempotency_key,
        collection.meta.idempotency_key,
        *(item.collection.meta.idempotency_key for item in batch.items),
    ]
    assert keys == expected


# --- a real `pdl serve` process -----------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def clean_environment() -> dict[str, str]:
    """This process's environment without any PDL_* setting."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PDL_")}


def serve_environment(store: E2EStore) -> dict[str, str]:
    env = {**clean_environment(), "PDL_SHUTDOWN_GRACE_SECONDS": str(_GRACE_SECONDS)}
    if store.database_url is not None and store.schema is not None:
        env["PDL_DATABASE_URL"] = store.database_url
        env["PDL_POSTGRES_SCHEMA"] = store.schema
    return env


@dataclass
class ServeProcess:
    """A `pdl serve` child process, its stderr read line by line as it comes."""

    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    ready: threading.Event = field(default_factory=threading.Event)
    closed: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))
            if line.startswith("pdl: serving on"):
                self.ready.set()
        self.ready.set()
        self.closed.set()

    def wait(self, timeout: float) -> int:
        """Wait for the process to exit and its stderr to be read to the end; its exit code."""
        code = self.process.wait(timeout)
        assert self.closed.wait(10), "stderr was not closed"
        return code

    @property
    def stderr(self) -> str:
        return "\n".join(self.lines)


def start_pdl_serve(
    data_dir: Path, store: E2EStore, *, own_session: bool = False
) -> tuple[ServeProcess, str]:
    """`pdl serve` on `data_dir` and a free loopback port, started and ready: (process,
    target). With `own_session`, in a session of its own, so that one signal to its process
    group reaches all its processes."""
    port = free_port()
    process = subprocess.Popen(  # noqa: S603 (our own script, fixed arguments)
        [str(_PDL), "serve", "--data-dir", str(data_dir), "--listen", f"127.0.0.1:{port}"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=serve_environment(store),
        start_new_session=own_session,
    )
    running = ServeProcess(process)
    if not running.ready.wait(30) or process.poll() is not None:
        process.kill()
        process.wait(10)
        raise AssertionError(f"pdl serve did not start in 30 s:\n{running.stderr}")
    return running, f"127.0.0.1:{port}"


@pytest.fixture
def pdl_serve(e2e_store: E2EStore, tmp_path: Path) -> Iterator[tuple[ServeProcess, Path, str]]:
    """A `pdl serve` process on a fresh data dir and a free loopback port: (process, data dir,
    target); killed after the test if it is still running."""
    data_dir = tmp_path / "data"
    running, target = start_pdl_serve(data_dir, e2e_store)
    try:
        yield running, data_dir, target
    finally:
        if running.process.poll() is None:
            running.process.kill()
            running.process.wait(10)


@dataclass
class Load:
    """Calls kept in flight from one thread until told to stop; what each call answered."""

    client: LedgerClient
    subject_id: str
    in_flight: int = 32
    acknowledged: list[tuple[str, str, cpb.Recorded]] = field(default_factory=list)
    failed: list[grpc.StatusCode] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        pending: list[tuple[str, str, Any]] = []
        while not self.stop.is_set() or pending:
            while not self.stop.is_set() and len(pending) < self.in_flight:
                key, value = uuid.uuid4().hex, secret("load")
                future = self.client.ledger.RecordCollection.future(
                    ip_collection(self.subject_id, value, key), **self.client.options
                )
                pending.append((key, value, future))
            key, value, future = pending.pop(0)
            try:
                self.acknowledged.append((key, value, future.result().recorded))
            except grpc.RpcError as error:
                self.failed.append(error.code())
                time.sleep(0.001)


def test_sigterm_drains_in_flight_calls_and_loses_nothing_acknowledged(
    pdl_serve: tuple[ServeProcess, Path, str], e2e_store: E2EStore
) -> None:
    running, data_dir, target = pdl_serve
    for secret_file in ("admin.token", "master.key"):
        assert (data_dir / secret_file).stat().st_mode & 0o777 == 0o600, secret_file
    assert data_dir.stat().st_mode & 0o777 == 0o700  # made owner-only, whatever the umask
    if e2e_store.backend == "sqlite":
        assert (data_dir / "serve.lock").stat().st_mode & 0o777 == 0o600
    token = (data_dir / "admin.token").read_text().strip()
    account = secret("account")
    with LedgerClient(target, token) as client:
        sid = client.register_subject("app", account).subject_id
        load = Load(client, sid)
        recorder = threading.Thread(target=load.run, daemon=True)
        recorder.start()
        deadline = time.monotonic() + 20
        while len(load.acknowledged) < 200 and time.monotonic() < deadline:
            time.sleep(0.01)

        started = time.monotonic()
        running.process.send_signal(signal.SIGTERM)
        code = running.wait(_GRACE_SECONDS + 5)
        stopped_in = time.monotonic() - started
        load.stop.set()
        recorder.join(30)

    slow_or_failed = [
        line
        for line in running.lines
        if not line.startswith("{") or '"OK"' not in line or json.loads(line)["ms"] > 1000
    ]
    assert code == 0, "\n".join(slow_or_failed)
    # Usually well under a second. Now and then gRPC holds a call that reached the server as
    # it began to stop, never handing it to the servicer, until the grace ends and it cancels
    # it (measured: Server.stop alone took the whole grace, with no task left); so the bound
    # is the grace itself, plus the time to exit.
    assert stopped_in < _GRACE_SECONDS + 1.5, "\n".join(slow_or_failed[-40:])
    assert len(load.acknowledged) >= 200
    # Calls gRPC had queued but not yet handed to the servicer end CANCELLED (or UNAVAILABLE,
    # "Cancelling all calls", at the end of the grace); calls after it, UNAVAILABLE. None was
    # acknowledged, so none may be relied on, and none was recorded (below).
    assert set(load.failed) <= {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED}

    settings = load_settings(
        environ={},
        data_dir=data_dir,
        database_url=e2e_store.database_url,
        postgres_schema=e2e_store.schema,
    )
    runtime = open_runtime(settings)
    try:
        stored = runtime.ledger.history(UUID(sid))
        state = runtime.ledger.subject(UUID(sid)).state
    finally:
        runtime.close()
    assert state.events == len(stored)
    assert state.held[_IP].collections == len(load.acknowledged)
    for key, _, recorded in load.acknowledged:
        assert stored[recorded.version - 1].idempotency_key == key
    collected = [p for p in stored if type(p).__name__ == "DataCollected"]
    assert len(collected) == len(load.acknowledged)  # and nothing unacknowledged was recorded

    calls = [json.loads(line) for line in running.lines if line.startswith("{")]
    assert all(set(c) == {"principal", "method", "status", "ms"} for c in calls)
    assert {c["principal"] for c in calls} == {"admin"}
    ok = [c["method"] for c in calls if c["status"] == "OK"]
    assert ok.count("/pdl.v1.LedgerService/RegisterSubject") == 1
    assert ok.count("/pdl.v1.LedgerService/RecordCollection") == len(load.acknowledged)
    assert "Traceback" not in running.stderr, "\n".join(slow_or_failed)
    # start-up said who keeps the views, and at what priority
    assert "views kept up to date by a projection process of its own (at nice +10" in (
        running.stderr
    )
    for personal in [account, *(value for _, value, _ in load.acknowledged)]:
        assert personal not in running.stderr


def access_log(caplog: pytest.LogCaptureFixture, calls: int) -> list[dict[str, Any]]:
    """The server's per-call log lines, parsed, once there are `calls` of them (the server
    writes a failed call's line just after the client has its status)."""
    deadline = time.monotonic() + 5
    while True:
        lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "pdl.access"]
        if len(lines) >= calls or time.monotonic() > deadline:
            return lines
        time.sleep(0.01)


def test_each_call_is_logged_once_with_its_principal_method_and_status(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pdl.access")
    account = secret("account")
    with served.client("recorder") as recorder, served.client("reader") as reader:
        sid = recorder.register_subject("app", account).subject_id
        reader.subject_state(sid)
        with pytest.raises(grpc.RpcError):
            recorder.subject_state(sid)

    calls = access_log(caplog, 3)
    assert [(c["principal"], c["method"], c["status"]) for c in calls] == [
        ("recorder", "/pdl.v1.LedgerService/RegisterSubject", "OK"),
        ("reader", "/pdl.v1.QueryService/GetSubjectState", "OK"),
        (calls[2]["principal"], "/pdl.v1.QueryService/GetSubjectState", "PERMISSION_DENIED"),
    ]
    assert all(isinstance(c["ms"], float | int) and c["ms"] >= 0 for c in calls)
    assert account not in caplog.text


_MALFORMED = b"\xff\xff\xff\xff"  # no valid protobuf message starts so
_RAW_METHODS = [
    ("/pdl.v1.LedgerService/RegisterSubject", False),
    ("/pdl.v1.LedgerService/RecordBatch", False),
    ("/pdl.v1.QueryService/ListSubjectHistory", False),
    ("/pdl.v1.LedgerService/RecordCollection", False),  # forwarded to the writer as bytes
    ("/pdl.v1.QueryService/StreamAuditLog", True),
]


@pytest.mark.parametrize(("method", "streams"), _RAW_METHODS, ids=[m for m, _ in _RAW_METHODS])
def test_malformed_request_bytes_are_invalid_argument_after_the_credential_and_logged(
    served: Served, caplog: pytest.LogCaptureFixture, method: str, streams: bool
) -> None:
    caplog.set_level(logging.INFO, logger="pdl.access")
    with grpc.insecure_channel(served.target) as channel:
        call = channel.unary_stream(method) if streams else channel.unary_unary(method)

        def send(token: str | None) -> grpc.RpcError:
            metadata = [("authorization", f"Bearer {token}")] if token else []

            def ask() -> object:
                answer = call(_MALFORMED, metadata=metadata, timeout=10)
                return list(answer) if streams else answer

            with pytest.raises(grpc.RpcError) as failed:
                ask()
            return failed.value

        anonymous, invalid = send(None), send(TOKENS["everything"])

    assert anonymous.code() is grpc.StatusCode.UNAUTHENTICATED
    assert bad_fields(invalid) == ["request"]
    assert invalid.details() == "invalid request: request"  # nothing of the parser's own
    calls = access_log(caplog, 2)
    assert [(c["method"], c["status"]) for c in calls] == [
        (method, "UNAUTHENTICATED"),
        (method, "INVALID_ARGUMENT"),
    ]


def test_a_denied_call_is_logged_with_the_principal_that_was_denied(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pdl.access")
    with served.client("reader") as reader, pytest.raises(grpc.RpcError) as denied:
        reader.register_subject("app", secret("account"))

    assert denied.value.code() is grpc.StatusCode.PERMISSION_DENIED
    [call] = access_log(caplog, 1)
    assert (call["principal"], call["status"]) == ("reader", "PERMISSION_DENIED")


def test_serving_on_a_public_address_without_tls_is_refused_in_one_line(tmp_path: Path) -> None:
    finished = subprocess.run(  # noqa: S603 (our own script, fixed arguments)
        [str(_PDL), "serve", "--data-dir", str(tmp_path / "data"), "--listen", "0.0.0.0:50051"],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_environment(),
        check=False,
    )

    assert finished.returncode == 1
    [line] = finished.stderr.splitlines()
    assert line.startswith("error: ")
    assert "loopback" in line
    assert finished.stdout == ""
    assert not (tmp_path / "data").exists()  # refused before any key or token was made


def _refused_port(data_dir: Path, target: str, env: dict[str, str]) -> None:
    """`pdl serve` on `target` exits with one error line: nothing is made on disk, and no
    process of it is left."""
    serve = subprocess.Popen(  # noqa: S603 (our own script, fixed arguments)
        [str(_PDL), "serve", "--data-dir", str(data_dir), "--listen", target],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    stdout, stderr = serve.communicate(timeout=60)

    assert serve.returncode == 1
    assert stderr.splitlines() == [  # gRPC's own log line is not printed before ours
        f"error: cannot listen on {target}: the address is in use or cannot be bound here"
    ]
    assert stdout == ""
    assert not data_dir.exists()  # asked before the key, token and stores were made
    deadline = time.monotonic() + 10  # the writer and projection processes were never started
    while time.monotonic() < deadline:
        try:
            os.killpg(serve.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("a process of the server is still running")


def test_serving_on_a_port_already_taken_is_one_error_line_and_leaves_no_process(
    tmp_path: Path,
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        _refused_port(tmp_path / "data", f"127.0.0.1:{port}", clean_environment())


def test_a_second_server_on_a_running_servers_port_is_refused(
    pdl_serve: tuple[ServeProcess, Path, str], e2e_store: E2EStore, tmp_path: Path
) -> None:
    # gRPC's default SO_REUSEPORT would let both listen, and split the calls between them.
    running, data_dir, target = pdl_serve
    _refused_port(tmp_path / "second", target, serve_environment(e2e_store))

    assert running.process.poll() is None  # the first serves on, alone
    token = (data_dir / "admin.token").read_text().strip()
    with LedgerClient(target, token) as client:
        assert client.register_subject("app", "account-second-server").subject_id


def test_a_second_server_on_a_running_servers_data_dir_is_refused(
    pdl_serve: tuple[ServeProcess, Path, str], e2e_store: E2EStore
) -> None:
    """The embedded store has one writer: a second `pdl serve` on its directory, on another
    port, exits with one error line and leaves the first serving."""
    if e2e_store.backend != "sqlite":
        pytest.skip("the data directory's lock guards the embedded store only")
    running, data_dir, target = pdl_serve
    second = subprocess.run(  # noqa: S603 (our own script, fixed arguments)
        [str(_PDL), "serve", "--data-dir", str(data_dir), "--listen", f"127.0.0.1:{free_port()}"],
        capture_output=True,
        text=True,
        env=serve_environment(e2e_store),
        timeout=60,
        check=False,
    )

    assert second.returncode == 1
    assert second.stderr.splitlines() == [
        f"error: another pdl serve is running on data dir {data_dir}"
    ]
    assert running.process.poll() is None
    token = (data_dir / "admin.token").read_text().strip()
    with LedgerClient(target, token) as client:
        assert client.register_subject("app", "account-after-second").subject_id


def test_the_servers_options_refuse_a_port_another_server_listens_on() -> None:
    # The check before binding would miss a server that took the port since; gRPC itself must
    # then refuse to bind alongside it.
    async def bind_twice() -> int:
        first = aio.server(options=SERVER_OPTIONS)
        port = first.add_insecure_port("127.0.0.1:0")
        await first.start()
        try:
            second = aio.server(options=SERVER_OPTIONS)
            try:
                return second.add_insecure_port(f"127.0.0.1:{port}")
            except RuntimeError:  # gRPC raises, or answers port 0
                return 0
            finally:
                await second.stop(None)
        finally:
            await first.stop(None)

    assert asyncio.run(bind_twice()) == 0


# --- TLS and mutual TLS -------------------------------------------------------------------


@dataclass(frozen=True)
class Certificates:
    """A test CA, a server certificate for 127.0.0.1 and localhost, a client certificate."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.fixture
def certificates(tmp_path: Path) -> Certificates:
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())

    def builder(subject_name: x509.Name, issuer: x509.Name, key: Any) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(subject_name)
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1))
        )

    ca = (
        builder(_name("pdl test ca"), _name("pdl test ca"), ca_key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(
        common_name: str, usage: x509.ObjectIdentifier, names: list[x509.GeneralName]
    ) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        made = builder(_name(common_name), ca.subject, key).add_extension(
            x509.ExtendedKeyUsage([usage]), critical=False
        )
        if names:
            made = made.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = made.sign(ca_key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)

    server_cert, server_key = leaf(
        "localhost",
        ExtendedKeyUsageOID.SERVER_AUTH,
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
    )
    client_cert, client_key = leaf("tls-service", ExtendedKeyUsageOID.CLIENT_AUTH, [])
    files = {
        "ca": ca.public_bytes(serialization.Encoding.PEM),
        "server_cert": server_cert,
        "server_key": server_key,
        "client_cert": client_cert,
        "client_key": client_key,
    }
    for name, data in files.items():
        (tmp_path / f"{name}.pem").write_bytes(data)
    return Certificates(**{name: tmp_path / f"{name}.pem" for name in files})


def tls_server(
    serve_with: Callable[..., Served], certs: Certificates, *, require_client_cert: bool
) -> Served:
    return serve_with(
        tls=TlsConfig(
            cert_file=certs.server_cert,
            key_file=certs.server_key,
            client_ca_file=certs.ca if require_client_cert else None,
            require_client_cert=require_client_cert,
        ),
        extra_principals=(
            PrincipalConfig(
                name="tls-service", scopes=(Scope.READ,), tls_client_subject="tls-service"
            ),
        )
        if require_client_cert  # a certificate can name a principal only under mutual TLS
        else (),
    )


def tls_channel(served: Served, certs: Certificates, *, client_cert: bool) -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=certs.ca.read_bytes(),
        private_key=certs.client_key.read_bytes() if client_cert else None,
        certificate_chain=certs.client_cert.read_bytes() if client_cert else None,
    )
    return grpc.secure_channel(served.target, credentials)


def get_policy(channel: grpc.Channel, **options: Any) -> ppb.GetPolicyResponse:
    return pgrpc.PolicyServiceStub(channel).GetPolicy(ppb.GetPolicyRequest(), timeout=10, **options)


def register_over(channel: grpc.Channel, **options: Any) -> lpb.RegisterSubjectResponse:
    request = lpb.RegisterSubjectRequest(
        meta=meta(), account=cpb.AccountRef(namespace="app", account_id=secret("account"))
    )
    return lgrpc.LedgerServiceStub(channel).RegisterSubject(request, timeout=10, **options)


def test_over_tls_a_bearer_token_authenticates_the_caller(
    serve_with: Callable[..., Served], certificates: Certificates
) -> None:
    served = tls_server(serve_with, certificates, require_client_cert=False)
    ca = certificates.ca.read_bytes()

    with (
        served.client("everything", root_certificates=ca) as client,
        served.client("reader", root_certificates=ca) as reader,
    ):
        sid = client.register_subject("app", secret("account")).subject_id
        state = reader.subject_state(sid)

    assert state.subject_id == sid


def test_a_plaintext_client_cannot_talk_to_a_tls_port(
    serve_with: Callable[..., Served], certificates: Certificates
) -> None:
    served = tls_server(serve_with, certificates, require_client_cert=False)

    with served.client("reader") as plaintext, pytest.raises(grpc.RpcError) as refused:
        plaintext.policy.GetPolicy(ppb.GetPolicyRequest(), **plaintext.options)

    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE


def test_over_tls_a_caller_with_neither_token_nor_certificate_is_unauthenticated(
    serve_with: Callable[..., Served], certificates: Certificates
) -> None:
    served = tls_server(serve_with, certificates, require_client_cert=False)

    with (
        tls_channel(served, certificates, client_cert=False) as channel,
        pytest.raises(grpc.RpcError) as denied,
    ):
        get_policy(channel)

    assert denied.value.code() is grpc.StatusCode.UNAUTHENTICATED


def test_a_client_ca_without_required_client_certificates_is_refused_as_configuration(
    certificates: Certificates,
) -> None:
    """gRPC's Python server cannot ask for an optional client certificate, so a client CA must
    come with required certificates rather than silently never asking for one."""
    with pytest.raises(ValidationError, match="client_ca_file and require_client_cert"):
        TlsConfig(
            cert_file=certificates.server_cert,
            key_file=certificates.server_key,
            client_ca_file=certificates.ca,
            require_client_cert=False,
        )


def test_with_client_certificates_required_the_certificate_names_a_read_only_principal(
    serve_with: Callable[..., Served], certificates: Certificates, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pdl.access")
    served = tls_server(serve_with, certificates, require_client_cert=True)

    with tls_channel(served, certificates, client_cert=True) as channel:
        as_everything = (("authorization", "Bearer tok-everything-0123456789abcdef"),)
        sid = register_over(channel, metadata=as_everything).recorded.subject_id
        caplog.clear()
        policy = get_policy(channel)
        state = qgrpc.QueryServiceStub(channel).GetSubjectState(
            qpb.GetSubjectStateRequest(subject=subject(sid)), timeout=10
        )
        with pytest.raises(grpc.RpcError) as denied:
            register_over(channel)

    assert policy.version.version == "1"
    assert state.state.subject_id == sid
    assert denied.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert reason_of(denied.value) == "PERMISSION_DENIED"
    calls = access_log(caplog, 3)
    assert [(c["method"], c["status"]) for c in calls] == [
        ("/pdl.v1.PolicyService/GetPolicy", "OK"),
        ("/pdl.v1.QueryService/GetSubjectState", "OK"),
        ("/pdl.v1.LedgerService/RegisterSubject", "PERMISSION_DENIED"),
    ]
    assert [c["principal"] for c in calls[:2]] == ["tls-service", "tls-service"]


def test_with_client_certificates_required_a_token_alone_cannot_connect(
    serve_with: Callable[..., Served], certificates: Certificates
) -> None:
    served = tls_server(serve_with, certificates, require_client_cert=True)

    with (
        served.client("everything", root_certificates=certificates.ca.read_bytes()) as client,
        pytest.raises(grpc.RpcError) as refused,
    ):
        client.policy.GetPolicy(ppb.GetPolicyRequest(), **client.options)

    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE

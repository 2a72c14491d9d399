"""The gRPC server: one factory that wires everything, and the serving loop of `pdl serve`.

`build_server` registers the servicers, health and reflection behind the interceptor, binds
the listening address (port 0 picks a free one, as tests do) and returns the server with its
port; nothing is wired at import. `serve` runs it until SIGTERM or SIGINT, then stops taking
calls, lets in-flight calls finish, commits what is queued and closes the store.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ledger.application import Ledger
from ledger.clock import SystemClock
from ledger.errors import ConfigurationError
from server import forwarding
from server._pb.pdl.v1 import (
    ledger_service_pb2,
    notice_service_pb2,
    policy_service_pb2,
    query_service_pb2,
    rights_service_pb2,
    view_service_pb2,
)
from server._pb.pdl.v1 import ledger_service_pb2_grpc as lgrpc
from server._pb.pdl.v1 import notice_service_pb2_grpc as ngrpc
from server._pb.pdl.v1 import policy_service_pb2_grpc as pgrpc
from server._pb.pdl.v1 import query_service_pb2_grpc as qgrpc
from server._pb.pdl.v1 import rights_service_pb2_grpc as rgrpc
from server._pb.pdl.v1 import view_service_pb2_grpc as vgrpc
from server.auth import PrincipalRegistry
from server.interceptors import LedgerInterceptor
from server.projection_process import ProjectionProcess
from server.queries import QueryServicer
from server.runtime import Runtime, collect_young_less_often
from server.servicers import LedgerServicer, PolicyServicer, RightsServicer
from server.settings import Scope, Settings, TlsConfig
from server.views import NoticeServicer, ViewServicer, ViewWaiter
from server.write_health import RoomProbe, WriteHealth, free_bytes_probe
from server.writer import Committer, GroupCommitter
from server.writer_process import ProcessCommitter

_log = logging.getLogger("pdl.server")
_MESSAGE_BYTES = 32 * 1024 * 1024
SERVER_OPTIONS = [
    ("grpc.max_receive_message_length", _MESSAGE_BYTES),
    ("grpc.max_send_message_length", _MESSAGE_BYTES),
    # gRPC sets SO_REUSEPORT by default: a second server on the same port would bind too, and
    # the kernel would split the calls between the two.
    ("grpc.so_reuseport", 0),
]
"""The gRPC options of the ledger's server."""

_SERVICES = {
    ledger_service_pb2.DESCRIPTOR.services_by_name["LedgerService"]: Scope.RECORD,
    rights_service_pb2.DESCRIPTOR.services_by_name["RightsRequestService"]: Scope.RECORD,
    policy_service_pb2.DESCRIPTOR.services_by_name["PolicyService"]: Scope.READ,
    query_service_pb2.DESCRIPTOR.services_by_name["QueryService"]: Scope.READ,
    view_service_pb2.DESCRIPTOR.services_by_name["ViewService"]: Scope.READ,
    notice_service_pb2.DESCRIPTOR.services_by_name["PolicyNoticeService"]: Scope.READ,
}
_OVERRIDES = {
    "/pdl.v1.RightsRequestService/GetRightsRequest": Scope.READ,
    "/pdl.v1.PolicyService/PublishPolicy": Scope.ADMIN,
    "/pdl.v1.QueryService/StreamAuditLog": Scope.AUDIT,
    "/pdl.v1.PolicyNoticeService/AcknowledgePolicy": Scope.RECORD,
    "/pdl.v1.PolicyNoticeService/NotifyPolicy": Scope.ADMIN,
}


def method_scopes() -> dict[str, Scope]:
    """The scope each method of the ledger's API needs."""
    scopes = {
        f"/{service.full_name}/{method.name}": scope
        for service, scope in _SERVICES.items()
        for method in service.methods
    }
    scopes.update(_OVERRIDES)
    return scopes


SERVICE_NAMES = tuple(service.full_name for service in _SERVICES)
_READ_ONLY_SERVICES = ("pdl.v1.QueryService", "pdl.v1.ViewService")
_WRITING_SERVICES = tuple(name for name in SERVICE_NAMES if name not in _READ_ONLY_SERVICES)
"""The services that record (through the writer): while the writer process is replaced, or
after a write found storage full (`server.write_health`), they and the server as a whole are
NOT_SERVING; the read-only services stay SERVING."""


@dataclass
class Serving:
    """A built server and what must be stopped with it."""

    server: aio.Server
    port: int
    committer: Committer
    health: health.aio.HealthServicer
    writes: WriteHealth
    """The health of the server and of its recording services (`server.write_health`)."""
    projections: ProjectionProcess | None = None
    """The projection process, when the views are kept up to date in one."""

    async def stop(self, grace: float) -> None:
        """Refuse new calls, let in-flight ones finish, commit what is queued; then let the
        projection process finish its page."""
        await self.health.enter_graceful_shutdown()
        await self.writes.stop()
        await self.server.stop(grace)
        await self.committer.stop()
        if self.projections is not None:
            await self.projections.stop()


async def build_server(
    settings: Settings, runtime: Runtime, registry: PrincipalRegistry, listen: str | None = None
) -> Serving:
    """Wire the services, health and reflection, bind and start; health says SERVING."""
    address = listen or settings.listen
    check_listen(address, settings.tls)
    ledger, clock = runtime.ledger, runtime.ledger.clock
    committer = _committer(settings, ledger)
    interceptor = LedgerInterceptor(registry, method_scopes(), tls=settings.tls is not None)
    server = aio.server(interceptors=[interceptor], options=SERVER_OPTIONS)
    _by_generic_handlers_only(server)
    if isinstance(committer, ProcessCommitter):  # before the generated handlers, so it serves
        server.add_generic_rpc_handlers(forwarding.generic_handlers(committer))
    lgrpc.add_LedgerServiceServicer_to_server(
        LedgerServicer(ledger, committer, clock, settings.max_batch_items), server
    )
    rgrpc.add_RightsRequestServiceServicer_to_server(
        RightsServicer(ledger, committer, clock), server
    )
    pgrpc.add_PolicyServiceServicer_to_server(PolicyServicer(ledger, committer, clock), server)
    qgrpc.add_QueryServiceServicer_to_server(QueryServicer(ledger, clock), server)
    projections = _projection_process(settings, ledger, committer)
    waiter = ViewWaiter(runtime, settings.view_wait_seconds, projections)
    vgrpc.add_ViewServiceServicer_to_server(ViewServicer(ledger, runtime.views, waiter), server)
    ngrpc.add_PolicyNoticeServiceServicer_to_server(
        NoticeServicer(ledger, committer, clock), server
    )
    checker = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    reflection.enable_server_reflection(
        (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    for name in ("", *SERVICE_NAMES):
        await checker.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    port = _bind(server, address, settings.tls)
    await _start_children(server, committer, projections)
    if projections is None and settings.projections != "external":
        runtime.start_projections(committer.execute_many_threadsafe)
    await server.start()
    for name in _READ_ONLY_SERVICES:
        await checker.set(name, health_pb2.HealthCheckResponse.SERVING)
    writes = WriteHealth(checker, _WRITING_SERVICES, _room_probe(settings))
    await writes.start()
    interceptor.write_health = writes
    if isinstance(committer, ProcessCommitter):
        committer.on_availability = writes.writer_available
    return Serving(server, port, committer, checker, writes, projections)


def _room_probe(settings: Settings) -> RoomProbe | None:
    """How the server tells that storage has room again after a write found it full: free
    space where SQLite keeps its files; none on PostgreSQL (`server.write_health`)."""
    if settings.database_url is not None:
        return None
    return free_bytes_probe(settings.data_dir)


def _committer(settings: Settings, ledger: Ledger) -> Committer:
    """The writer process by default; a thread of this process when asked, or when the ledger
    keeps a clock of its own (tests), which a separate process cannot share."""
    if settings.writer == "process" and isinstance(ledger.clock, SystemClock):
        return ProcessCommitter(settings, ledger, settings.group_commit_items)
    return GroupCommitter(ledger, settings.group_commit_items)


async def _start_children(
    server: aio.Server, committer: Committer, projections: ProjectionProcess | None
) -> None:
    """Start the writer and the projection process side by side (each opens the ledger on a
    core of its own); if either fails, stop the other and the server, and raise."""
    starting = [committer.start(), *([projections.start()] if projections is not None else [])]
    results = await asyncio.gather(*starting, return_exceptions=True)
    failed = [r for r in results if isinstance(r, BaseException)]
    if not failed:
        return
    await server.stop(None)
    if not isinstance(results[0], BaseException):
        await committer.stop()
    if projections is not None and not isinstance(results[-1], BaseException):
        await projections.stop()
    raise failed[0]


def _projection_process(
    settings: Settings, ledger: Ledger, committer: Committer
) -> ProjectionProcess | None:
    """The projection process by default; none when the views are folded in this process, or
    by `pdl project` workers. As for the writer, a ledger with a clock of its own (tests)
    keeps its projections in this process."""
    if settings.projections == "process" and isinstance(ledger.clock, SystemClock):
        return ProjectionProcess(settings, ledger, committer.execute_many)
    return None


def _by_generic_handlers_only(server: aio.Server) -> None:
    """Make the generated `add_*_to_server` functions register services by generic handler only.

    For each method registered by name, grpc.aio's accept loop keeps one pending request and
    runs `asyncio.wait` over all of them for every call it accepts. With this API's 34 methods
    that cost about 0.2 M instructions a call, 13 % of a whole RecordCollection (callgrind, see
    `bench/README.md`). The generic handlers carry the same method handlers, so every call is
    served as before, by the same handlers behind the same interceptor.
    """
    server.add_registered_method_handlers = _skip_registration  # type: ignore[method-assign]


def _skip_registration(service_name: str, method_handlers: object) -> None:
    """The generic handler added with them serves these methods."""


def check_listen(address: str, tls: TlsConfig | None) -> None:
    """Refuse an address the server could not listen on: a non-loopback one without TLS, or
    one taken (asked before anything is opened, and without gRPC's own log line)."""
    host = address.rsplit(":", 1)[0].strip("[]")
    if tls is None:
        loopback = host == "localhost"
        if not loopback:
            try:
                loopback = ipaddress.ip_address(host).is_loopback
            except ValueError:
                loopback = False
        if not loopback:
            msg = f"without TLS the server listens on loopback only, not {host!r}; configure [tls]"
            raise ConfigurationError(msg)
    else:
        check_tls(tls)
    if not _bindable(address):
        raise ConfigurationError(_cannot_listen(address))


def check_tls(tls: TlsConfig) -> None:
    """Refuse TLS files gRPC could not use, naming the file: a certificate chain valid now, a
    private key of a kind gRPC takes that matches its first certificate, and a client CA
    bundle of CA certificates, each in PEM. (gRPC itself only fails to bind, which reads as a
    port problem, or serves and fails every handshake.)"""
    try:
        chain = x509.load_pem_x509_certificates(_read_bytes(tls.cert_file))
    except ValueError:
        raise ConfigurationError(f"{tls.cert_file} is not a PEM certificate chain") from None
    instant = datetime.now(UTC)
    leaf = chain[0]
    if not leaf.not_valid_before_utc <= instant <= leaf.not_valid_after_utc:
        msg = (
            f"the certificate in {tls.cert_file} is valid from {leaf.not_valid_before_utc:%Y-%m-%d}"
            f" to {leaf.not_valid_after_utc:%Y-%m-%d}, not now"
        )
        raise ConfigurationError(msg)
    try:
        key = serialization.load_pem_private_key(_read_bytes(tls.key_file), password=None)
    except (ValueError, TypeError):
        msg = f"{tls.key_file} is not an unencrypted PEM private key"
        raise ConfigurationError(msg) from None
    if not _usable_key(key):
        msg = f"{tls.key_file}: gRPC takes RSA, ECDSA (P-256, P-384, P-521) or Ed25519 keys"
        raise ConfigurationError(msg)
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    encoding = serialization.Encoding.DER
    if key.public_key().public_bytes(encoding, public) != chain[0].public_key().public_bytes(
        encoding, public
    ):
        msg = f"{tls.key_file} is not the key of the certificate in {tls.cert_file}"
        raise ConfigurationError(msg)
    if tls.client_ca_file is not None:
        try:
            authorities = x509.load_pem_x509_certificates(_read_bytes(tls.client_ca_file))
        except ValueError:
            msg = f"{tls.client_ca_file} is not a PEM bundle of CA certificates"
            raise ConfigurationError(msg) from None
        for authority in authorities:
            if not _is_ca(authority):
                msg = (
                    f"{tls.client_ca_file} holds a certificate that is not a CA's"
                    f" ({authority.subject.rfc4514_string()}): whoever holds its key could"
                    " issue a certificate for any principal"
                )
                raise ConfigurationError(msg)


def _usable_key(key: object) -> bool:
    if isinstance(key, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
        return True
    return isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(
        key.curve, ec.SECP256R1 | ec.SECP384R1 | ec.SECP521R1
    )


def _is_ca(certificate: x509.Certificate) -> bool:
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    except x509.ExtensionNotFound:
        return False
    return constraints.value.ca


def _cannot_listen(address: str) -> str:
    return f"cannot listen on {address}: the address is in use or cannot be bound here"


def _bindable(address: str) -> bool:
    """Whether a listening socket could bind at least one of the address's resolved addresses,
    as gRPC needs."""
    host, _, port = address.rpartition(":")
    try:
        found = socket.getaddrinfo(
            host.strip("[]") or None, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except (OSError, ValueError):
        return True  # not ours to judge: gRPC parses and resolves it, and says if it can't
    for family, kind, proto, _name, where in found:
        try:
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC binds
                probe.bind(where)
        except OSError:
            continue
        return True
    return False


def _bind(server: aio.Server, address: str, tls: TlsConfig | None) -> int:
    try:
        if tls is None:
            port = server.add_insecure_port(address)
        else:
            credentials = grpc.ssl_server_credentials(
                [(_read_bytes(tls.key_file), _read_bytes(tls.cert_file))],
                root_certificates=_read_bytes(tls.client_ca_file) if tls.client_ca_file else None,
                require_client_auth=tls.require_client_cert,
            )
            port = server.add_secure_port(address, credentials)
    except RuntimeError:  # gRPC's "Failed to bind": its reason is in its own log line
        port = 0
    if port == 0:  # taken since `check_listen` asked
        raise ConfigurationError(_cannot_listen(address))
    return port


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read {path}: {exc.strerror}") from None


async def serve(
    settings: Settings,
    runtime: Runtime,
    registry: PrincipalRegistry,
    on_ready: Callable[[int], None] | None = None,
) -> None:
    """Serve until SIGTERM or SIGINT; then drain and return with every acknowledged event
    durable."""
    collect_young_less_often()
    serving = await build_server(settings, runtime, registry)
    if on_ready is not None:
        on_ready(serving.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if on_ready is None:  # `pdl serve` says where it listens itself
        _log.info("listening on port %d", serving.port)
    await stop.wait()
    _log.info("stopping: draining in-flight calls")
    await serving.stop(settings.shutdown_grace_seconds)

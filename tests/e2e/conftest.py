"""A real gRPC server on 127.0.0.1:0, on SQLite and on PostgreSQL, with one principal per scope.

The server runs on its own event loop in a background thread; tests talk to it through the
project's client over a real loopback connection.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from server.app import Serving, build_server
from server.auth import PrincipalRegistry, token_hash
from server.client import LedgerClient
from server.runtime import Runtime, open_runtime
from server.settings import PrincipalConfig, Scope, Settings, load_settings

TOKENS = {
    "recorder": "tok-recorder-0123456789abcdef",
    "reader": "tok-reader-0123456789abcdef",
    "auditor": "tok-auditor-0123456789abcdef",
    "admin": "tok-admin-0123456789abcdef",
    "everything": "tok-everything-0123456789abcdef",
}
SCOPES = {
    "recorder": (Scope.RECORD,),
    "reader": (Scope.READ,),
    "auditor": (Scope.AUDIT,),
    "admin": (Scope.ADMIN, Scope.READ),
    "everything": tuple(Scope),
}


@dataclass
class Served:
    """A running server and how to reach it."""

    settings: Settings
    runtime: Runtime
    serving: Serving
    loop: asyncio.AbstractEventLoop
    target: str

    def client(self, who: str = "everything", **options: object) -> LedgerClient:
        return LedgerClient(self.target, TOKENS[who], **options)  # type: ignore[arg-type]

    def run(self, coroutine: object) -> object:
        """Run a coroutine on the server's loop (e.g. to stop it)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(30)  # type: ignore[arg-type]


def principals() -> tuple[PrincipalConfig, ...]:
    return tuple(
        PrincipalConfig(name=name, scopes=SCOPES[name], token_sha256=token_hash(token).hex())
        for name, token in TOKENS.items()
    )


def start_server(settings: Settings) -> Served:
    """Open the runtime and start the server on a fresh event loop in a daemon thread."""
    runtime = open_runtime(settings)
    registry = PrincipalRegistry.from_settings(settings, admin_token=None)
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_forever()

    thread = threading.Thread(target=run, name="pdl-test-server", daemon=True)
    thread.start()
    loop.call_soon_threadsafe(ready.set)
    ready.wait(10)
    serving = asyncio.run_coroutine_threadsafe(build_server(settings, runtime, registry), loop)
    started = serving.result(30)
    return Served(settings, runtime, started, loop, f"127.0.0.1:{started.port}")


def stop_server(served: Served, grace: float = 1.0) -> None:
    served.run(served.serving.stop(grace))
    served.loop.call_soon_threadsafe(served.loop.stop)
    served.runtime.close()


def e2e_settings(
    tmp_path: Path, backend: str, schema: str | None = None, **extra: object
) -> Settings:
    fields: dict[str, object] = {
        "data_dir": tmp_path / "data",
        "listen": "127.0.0.1:0",
        "principals": principals(),
        **extra,
    }
    if backend == "postgres":
        fields["database_url"] = "postgresql://postgres@127.0.0.1:5432/test"
        fields["postgres_schema"] = schema
    return load_settings(environ={}, **fields)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Served]:
    """A running server on each storage back-end."""
    schema = request.getfixturevalue("postgres_schema") if request.param == "postgres" else None
    running = start_server(e2e_settings(tmp_path, request.param, schema))
    try:
        yield running
    finally:
        stop_server(running)


@pytest.fixture
def client(served: Served) -> Iterator[LedgerClient]:
    """A client holding every scope."""
    with served.client() as c:
        yield c


# --- servers with settings of their own, and the store a test's server uses -----------------


@dataclass(frozen=True)
class E2EStore:
    """The storage back-end of one test: SQLite in its data dir, or a fresh PostgreSQL schema."""

    backend: str
    schema: str | None = None

    @property
    def database_url(self) -> str | None:
        return "postgresql://postgres@127.0.0.1:5432/test" if self.backend == "postgres" else None


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def e2e_store(request: pytest.FixtureRequest) -> E2EStore:
    """Each storage back-end in turn, for tests that start their own server or process."""
    if request.param == "postgres":
        return E2EStore("postgres", request.getfixturevalue("postgres_schema"))
    return E2EStore("sqlite")


@pytest.fixture
def serve_with(e2e_store: E2EStore, tmp_path: Path) -> Iterator[Callable[..., Served]]:
    """Starts a server with extra settings (`max_batch_items=5`, `tls=...`) and extra
    principals (`extra_principals=(...)`) on each back-end; stops it after the test."""
    started: list[Served] = []

    def start(*, extra_principals: tuple[PrincipalConfig, ...] = (), **extra: object) -> Served:
        settings = e2e_settings(
            tmp_path,
            e2e_store.backend,
            e2e_store.schema,
            principals=(*principals(), *extra_principals),
            **extra,
        )
        started.append(start_server(settings))
        return started[-1]

    yield start
    for running in started:
        stop_server(running)

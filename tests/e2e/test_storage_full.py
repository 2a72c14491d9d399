"""A server whose storage fills up, on a small file system of its own (SQLite): the write that
finds no room answers RESOURCE_EXHAUSTED STORAGE_FULL and writes nothing, the server and its
recording services turn NOT_SERVING while the read-only ones stay SERVING, and once room is
made the probe turns them SERVING again and writes go on, with every acknowledged event kept.

The file system is a tmpfs mounted for the test, which needs root; elsewhere the test skips.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from conftest import Served, e2e_settings, start_server, stop_server
from grpc_health.v1 import health_pb2, health_pb2_grpc
from outcomes import reason_of
from scenario import secret

_IP = "network_log.ip_address"
_SIZE_MIB = 40
_STATUS = health_pb2.HealthCheckResponse


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of `_SIZE_MIB` MiB, unmounted after the test."""
    where = tmp_path / "fs"
    where.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root and mount(8) to mount a small tmpfs for the data directory")
    mounted = subprocess.run(  # noqa: S603 (fixed arguments)
        ["mount", "-t", "tmpfs", "-o", f"size={_SIZE_MIB}m", "tmpfs", str(where)],  # noqa: S607
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode(errors='replace')}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)  # noqa: S603, S607


def _health(served: Served, names: list[str]) -> dict[str, int]:
    with grpc.insecure_channel(served.target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return {
            name: stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=10).status
            for name in names
        }


def _fill(directory: Path, leave: int) -> Path:
    """A file taking all the free space of `directory`'s file system but `leave` bytes."""
    filler = directory / "filler"
    free = shutil.disk_usage(directory).free
    with filler.open("wb") as out:
        chunk = b"\0" * (1 << 20)
        remaining = max(0, free - leave)
        while remaining > 0:
            n = out.write(chunk[: min(len(chunk), remaining)])
            remaining -= n
    return filler


def test_storage_full_is_resource_exhausted_then_not_serving_until_room(
    small_fs: Path,
) -> None:
    served = start_server(e2e_settings(small_fs, "sqlite"))
    try:
        with served.client() as client:
            sid = client.register_subject("app", secret("account")).subject_id
            acknowledged = [
                client.record_collection(
                    sid, _IP, "server_logs", ["security_detection"], values={"ip": secret("ip")}
                ).position
            ]
            filler = _fill(small_fs, leave=64 << 10)
            big = {f"f{i}": secret("v") + "x" * 4000 for i in range(60)}
            error: grpc.RpcError | None = None
            for _ in range(200):
                try:
                    done = client.record_collection(
                        sid, _IP, "server_logs", ["security_detection"], values=big
                    )
                except grpc.RpcError as failed:
                    error = failed
                    break
                acknowledged.append(done.position)
            assert error is not None, "storage never filled up"
            assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED, error.details()
            assert reason_of(error) == "STORAGE_FULL"

            names = ["", "pdl.v1.LedgerService", "pdl.v1.QueryService", "pdl.v1.ViewService"]
            assert _health(served, names) == {
                "": _STATUS.NOT_SERVING,
                "pdl.v1.LedgerService": _STATUS.NOT_SERVING,
                "pdl.v1.QueryService": _STATUS.SERVING,
                "pdl.v1.ViewService": _STATUS.SERVING,
            }

            filler.unlink()
            deadline = time.monotonic() + 30
            while _health(served, [""])[""] != _STATUS.SERVING:
                assert time.monotonic() < deadline, "still NOT_SERVING with room made"
                time.sleep(0.2)
            assert set(_health(served, names).values()) == {_STATUS.SERVING}

            key = f"after-{uuid.uuid4()}"
            last = client.record_collection(
                sid, _IP, "server_logs", ["security_detection"], idempotency_key=key
            )
            acknowledged.append(last.position)
            logged = {e.position for e in client.audit(page_size=1000)}
        assert set(acknowledged) <= logged
    finally:
        stop_server(served)

"""The statuses of the API that no other end-to-end test reaches, on SQLite and PostgreSQL:
every method without a credential (UNAUTHENTICATED) and with a principal lacking its scope
(PERMISSION_DENIED); ABORTED once concurrency retries are exhausted by a real rival writer;
INTERNAL for an unexpected error, with nothing of it in the answer or the logs;
ALREADY_EXISTS on the write path of commands that run alone; a unary call cancelled by its
client, recorded once when retried. And the README's grpcurl call against the contract.
"""

from __future__ import annotations

import json
import logging
import re
import shlex
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from conftest import TOKENS
from e2e_requests import ip_collection
from google.protobuf import json_format, message_factory, symbol_database
from outcomes import log_end, nothing_written, reason_of
from scenario import secret

from ledger import engine
from server._pb.pdl.v1 import common_pb2 as cpb
from server._pb.pdl.v1 import ledger_service_pb2 as lpb
from server._pb.pdl.v1 import policy_service_pb2 as ppb
from server._pb.pdl.v1 import rights_service_pb2 as rpb
from server.app import method_scopes
from server.client import LedgerClient, meta, subject
from server.runtime import open_runtime
from server.settings import Scope

if TYPE_CHECKING:
    from conftest import Served

_README = Path(__file__).resolve().parents[2] / "README.md"
_LACKING = {
    Scope.RECORD: "reader",
    Scope.READ: "recorder",
    Scope.AUDIT: "reader",
    Scope.ADMIN: "recorder",
}
"""For each scope, a test principal that does not hold it."""


def _streaming(method: str) -> bool:
    service, name = method.lstrip("/").split("/")
    found = symbol_database.Default().pool.FindServiceByName(service).FindMethodByName(name)
    return bool(found.server_streaming)


def _call(channel: grpc.Channel, method: str, token: str | None) -> grpc.RpcError:
    """Call `method` with an empty request; the error it must end with."""
    metadata = () if token is None else (("authorization", f"Bearer {token}"),)
    try:
        if _streaming(method):
            for _ in channel.unary_stream(method)(b"", metadata=metadata, timeout=10):
                pass
        else:
            channel.unary_unary(method)(b"", metadata=metadata, timeout=10)
    except grpc.RpcError as error:
        return error
    pytest.fail(f"{method} answered without the credential or the scope it needs")


def test_every_method_refuses_a_missing_credential_and_a_missing_scope(served: Served) -> None:
    scopes = method_scopes()
    with grpc.insecure_channel(served.target) as channel, served.client() as client:
        before = log_end(client)
        for method, scope in sorted(scopes.items()):
            missing = _call(channel, method, None)
            assert missing.code() is grpc.StatusCode.UNAUTHENTICATED, method
            wrong = _call(channel, method, TOKENS[_LACKING[scope]])
            assert wrong.code() is grpc.StatusCode.PERMISSION_DENIED, method
            assert scope.value in (wrong.details() or ""), method
        assert log_end(client) == before
    assert len(scopes) >= 31


# --- ABORTED and INTERNAL -------------------------------------------------------------------


@pytest.fixture
def thread_served(serve_with: Callable[..., Served]) -> Served:
    """A server whose writes run in a thread of this process (so the test can reach them)."""
    return serve_with(writer="thread", projections="external")


def test_exhausted_retries_against_a_rival_writer_are_aborted_and_write_nothing(
    thread_served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another ledger on the same store records on the same person just before every attempt
    saves, so every save conflicts; after the last attempt the call is ABORTED, and nothing of it is
    written."""
    rival = open_runtime(thread_served.settings)
    try:
        with thread_served.client() as client:
            sid = client.register_subject("app", secret("account")).subject_id
            save = engine.Engine._save
            busy = threading.local()

            def save_after_a_rival(work: engine.Engine, accepted: Any) -> Any:
                if not getattr(busy, "on", False):  # the rival's own save goes straight on
                    busy.on = True
                    try:
                        rival.ledger.execute(
                            "rival", ip_collection_command(sid, rival.ledger.clock.now())
                        )
                    finally:
                        busy.on = False
                return save(work, accepted)

            monkeypatch.setattr(engine.Engine, "_save", save_after_a_rival)
            request = ip_collection(sid)
            before = log_end(client)
            with pytest.raises(grpc.RpcError) as aborted:
                client.ledger.RecordCollection(request, **client.options)
            monkeypatch.setattr(engine.Engine, "_save", save)

            assert aborted.value.code() is grpc.StatusCode.ABORTED
            assert reason_of(aborted.value) == "CONCURRENCY_EXHAUSTED"
            assert request.meta.idempotency_key not in _keys(client, sid)
            assert log_end(client) > before, "the rival wrote meanwhile"
    finally:
        rival.close()


def _keys(client: LedgerClient, sid: str) -> list[str]:
    """The idempotency keys of a person's events, in order."""
    return [json.loads(e.payload_json)["idempotency_key"] for e in client.history(sid)]


def ip_collection_command(sid: str, at: Any) -> Any:
    """The rival's own collection on the person (its key fresh each time)."""
    from pydantic import SecretStr  # noqa: PLC0415

    from ledger import commands as c  # noqa: PLC0415 (only this test writes commands directly)

    return c.RecordCollection(
        idempotency_key=f"rival-{uuid.uuid4()}",
        occurred_at=at,
        subject=c.SubjectRef(subject_id=uuid.UUID(sid)),
        category="network_log.ip_address",
        source="server_logs",
        purposes=("security_detection",),
        values={"ip": SecretStr(secret("ip"))},
    )


def test_an_unexpected_error_is_internal_with_nothing_of_it_told_or_logged(
    thread_served: Served, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    marker = f"not-for-anyone-{uuid.uuid4()}"

    def broken(*_: object) -> None:
        raise RuntimeError(marker)

    monkeypatch.setattr(thread_served.runtime.ledger, "policy_in_force", broken)
    caplog.set_level(logging.DEBUG)
    with thread_served.client() as client, pytest.raises(grpc.RpcError) as failed:
        client.policy.GetPolicy(ppb.GetPolicyRequest(), **client.options)

    assert failed.value.code() is grpc.StatusCode.INTERNAL
    assert marker not in (failed.value.details() or "")
    assert marker not in str(failed.value.trailing_metadata())
    assert marker not in caplog.text
    assert "RuntimeError" in caplog.text, "the error's type is logged for the operator"


# --- ALREADY_EXISTS on commands that run alone --------------------------------------------------


def _register(key: str, account: str) -> Callable[[LedgerClient, str], Any]:
    def call(client: LedgerClient, _sid: str) -> Any:
        request = lpb.RegisterSubjectRequest(
            meta=meta(key), account=cpb.AccountRef(namespace="app", account_id=account)
        )
        return client.ledger.RegisterSubject(request, **client.options)

    return call


def _open_request(key: str, kind: int) -> Callable[[LedgerClient, str], Any]:
    def call(client: LedgerClient, sid: str) -> Any:
        request = rpb.OpenRightsRequestRequest(meta=meta(key), subject=subject(sid), kind=kind)
        return client.rights.OpenRightsRequest(request, **client.options)

    return call


def _erase(key: str, ground: str) -> Callable[[LedgerClient, str], Any]:
    def call(client: LedgerClient, sid: str) -> Any:
        request = lpb.EraseSubjectRequest(
            meta=meta(key), subject=subject(sid), ground=ground, categories=["location.gps"]
        )
        return client.ledger.EraseSubject(request, **client.options)

    return call


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda k: (_register(k, "acct-one"), _register(k, "acct-two")), id="register"),
        pytest.param(
            lambda k: (
                _open_request(k, cpb.RIGHT_KIND_ACCESS),
                _open_request(k, cpb.RIGHT_KIND_CORRECTION),
            ),
            id="open",
        ),
        pytest.param(lambda k: (_erase(k, "no_consent"), _erase(k, "unlawful")), id="erase"),
    ],
)
def test_a_key_reused_for_another_command_that_runs_alone_is_already_exists(
    client: LedgerClient, make: Callable[[str], tuple[Callable[..., Any], Callable[..., Any]]]
) -> None:
    sid = client.register_subject("app", secret("account")).subject_id
    first, other = make(f"k-{uuid.uuid4()}")
    first(client, sid)

    with nothing_written(client), pytest.raises(grpc.RpcError) as conflict:
        other(client, sid)

    assert conflict.value.code() is grpc.StatusCode.ALREADY_EXISTS
    assert reason_of(conflict.value) == "IDEMPOTENCY_CONFLICT"


# --- a unary call cancelled by its client ------------------------------------------------------


def test_a_cancelled_recording_retried_with_its_key_is_recorded_once(client: LedgerClient) -> None:
    sid = client.register_subject("app", secret("account")).subject_id
    request = ip_collection(sid)

    call = client.ledger.RecordCollection.future(request, **client.options)
    call.cancel()
    deadline = time.monotonic() + 10
    while not call.done():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    retried = client.ledger.RecordCollection(request, **client.options).recorded

    assert _keys(client, sid).count(request.meta.idempotency_key) == 1
    assert retried.position <= log_end(client)


# --- the README's grpcurl call ------------------------------------------------------------------


def _grpcurl_call() -> list[str]:
    block = re.search(r"```sh\n(grpcurl .*?)```", _README.read_text(encoding="utf-8"), re.S)
    assert block is not None, "the README shows a grpcurl call"
    return shlex.split(block.group(1).replace("\\\n", " "))


def test_the_readmes_grpcurl_call_fits_the_contract(served: Served) -> None:
    """Its method exists, its header is the one the server reads, its JSON is a valid
    request of that method; and sent as it says, the call records."""
    words = _grpcurl_call()
    method = words[-1]
    header = words[words.index("-H") + 1]
    body = words[words.index("-d") + 1]
    service, name = method.split("/")
    found = symbol_database.Default().pool.FindServiceByName(service).FindMethodByName(name)
    request_type = message_factory.GetMessageClass(found.input_type)
    assert header.startswith("authorization: Bearer ")
    assert "-plaintext" in words
    assert words[-2] == "127.0.0.1:50051"

    request = json_format.Parse(body, request_type())
    request.meta.idempotency_key = f"k-{uuid.uuid4()}"
    with grpc.insecure_channel(served.target) as channel:
        answer = channel.unary_unary(f"/{method}")(
            request.SerializeToString(),
            metadata=(("authorization", f"Bearer {TOKENS['recorder']}"),),
            timeout=10,
        )
    recorded = lpb.RegisterSubjectResponse.FromString(answer).recorded
    assert recorded.event_type == "SubjectRegistered"
    assert json.loads(body)["account"]["namespace"] == "app"

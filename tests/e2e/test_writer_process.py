"""The writer process as a client meets it: every write goes through it, a writer that dies
fails only the calls it had not answered (UNAVAILABLE, safe to retry with the same key) and is
replaced, signals meant for the server do not stop it, and the thread writer still serves."""

from __future__ import annotations

import os
import signal
import time
import uuid
from typing import TYPE_CHECKING

import grpc
import pytest
from e2e_requests import ip_collection
from grpc_health.v1 import health_pb2, health_pb2_grpc
from outcomes import bad_fields, log_end, nothing_written, reason_of
from scenario import secret

from server._pb.pdl.v1 import ledger_service_pb2 as lpb
from server.client import LedgerClient, meta
from server.forwarding import ROUTES
from server.writer_process import ProcessCommitter

if TYPE_CHECKING:
    from collections.abc import Callable

    from conftest import Served

_IP = "network_log.ip_address"


_VALUE = secret("ip")


def _collection(subject_id: str, key: str) -> lpb.RecordCollectionRequest:
    """The same command for the same key (a retry), with one personal value."""
    return ip_collection(subject_id, meta=meta(key), values={"ip": _VALUE})


def _writer(served: Served) -> ProcessCommitter:
    committer = served.serving.committer
    assert isinstance(committer, ProcessCommitter)
    return committer


def _person_and_writer(served: Served, client: LedgerClient) -> tuple[ProcessCommitter, str, int]:
    """The server's writer, a newly registered person, and the writer process's pid."""
    committer = _writer(served)
    person = client.register_subject("app", secret("account")).subject_id
    pid = committer.writer_pid
    assert pid is not None
    return committer, person, pid


def _wait_for_new_writer(committer: ProcessCommitter, old_pid: int) -> int:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        pid = committer.writer_pid
        if pid is not None and pid != old_pid and committer.restarts:
            return pid
        time.sleep(0.05)
    pytest.fail("no new writer process was started")


def test_every_write_is_made_by_a_writer_process_of_its_own(
    served: Served, client: LedgerClient
) -> None:
    pid = _writer(served).writer_pid

    person = client.register_subject("app", secret("account")).subject_id
    recorded = client.record_collection(
        person, _IP, "server_logs", ["security_detection"], values={"ip": secret("ip")}
    )

    assert pid is not None
    assert pid != os.getpid()
    assert recorded.position == log_end(client)
    assert [e.event_type for e in client.history(person)] == ["SubjectRegistered", "DataCollected"]


def test_a_writer_killed_before_it_answers_fails_the_call_with_unavailable_and_a_retry_records_once(
    served: Served, client: LedgerClient
) -> None:
    committer, person, pid = _person_and_writer(served, client)
    key = uuid.uuid4().hex

    os.kill(pid, signal.SIGSTOP)  # the writer takes no more requests...
    try:
        call = client.ledger.RecordCollection.future(_collection(person, key), **client.options)
        time.sleep(0.3)  # ...so this one is sent and waits
        assert not call.done()
    finally:
        os.kill(pid, signal.SIGKILL)
    with pytest.raises(grpc.RpcError) as failed:
        call.result(30)

    assert failed.value.code() is grpc.StatusCode.UNAVAILABLE
    assert reason_of(failed.value) == "WRITER_UNAVAILABLE"
    _wait_for_new_writer(committer, pid)
    retried = client.ledger.RecordCollection(_collection(person, key), **client.options).recorded
    again = client.ledger.RecordCollection(_collection(person, key), **client.options).recorded
    assert (retried.replayed, again.replayed) == (False, True)
    assert again.position == retried.position
    kinds = [e.event_type for e in client.history(person)]
    assert kinds == ["SubjectRegistered", "DataCollected"]


def test_calls_made_while_the_writer_is_replaced_wait_for_the_new_one(
    served: Served, client: LedgerClient
) -> None:
    committer, person, pid = _person_and_writer(served, client)

    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while committer.writer_pid == pid and time.monotonic() < deadline:
        time.sleep(0.01)
    answers: list[str] = []
    for _ in range(5):
        try:
            recorded = client.ledger.RecordCollection(
                _collection(person, uuid.uuid4().hex), **client.options
            ).recorded
            answers.append(recorded.event_type)
        except grpc.RpcError as error:  # sent to the dying writer before its end was seen closed
            answers.append(reason_of(error))

    assert set(answers) <= {"DataCollected", "WRITER_UNAVAILABLE"}
    assert answers[-1] == "DataCollected"
    assert committer.restarts == 1


def test_health_says_not_serving_for_writing_while_the_writer_is_replaced(
    served: Served, client: LedgerClient
) -> None:
    """While there is no writer, the server and its recording services are NOT_SERVING (a
    probe takes the instance out of rotation); the read-only services stay SERVING; health
    comes back once the new writer is up."""
    committer, _person, pid = _person_and_writer(served, client)
    serving = health_pb2.HealthCheckResponse.SERVING
    not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
    with grpc.insecure_channel(served.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        overall = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=60)
        recording = health.Watch(
            health_pb2.HealthCheckRequest(service="pdl.v1.LedgerService"), timeout=60
        )
        assert next(overall).status == serving
        assert next(recording).status == serving
        os.kill(pid, signal.SIGKILL)
        assert next(overall).status == not_serving
        assert next(recording).status == not_serving
        query = health.Check(
            health_pb2.HealthCheckRequest(service="pdl.v1.QueryService"), timeout=10
        )
        assert query.status == serving
        assert next(overall).status == serving
        assert next(recording).status == serving
        overall.cancel()
        recording.cancel()
    assert committer.restarts == 1
    assert committer.writer_pid not in (None, pid)


@pytest.mark.parametrize("method", sorted(ROUTES))
def test_a_forwarded_call_whose_bytes_are_not_its_message_is_invalid_and_writes_nothing(
    client: LedgerClient, method: str
) -> None:
    raw = client.channel.unary_unary(method)  # bytes in, bytes out

    with nothing_written(client), pytest.raises(grpc.RpcError) as bad:
        raw(b"\xff\xff\xff\xff", **client.options)

    assert bad_fields(bad.value) == ["request"]


def test_forwarded_calls_are_answered_with_the_response_message_of_their_method(
    client: LedgerClient,
) -> None:
    person = client.register_subject("app", secret("account")).subject_id
    raw = client.channel.unary_unary("/pdl.v1.LedgerService/RecordCollection")

    answer = lpb.RecordCollectionResponse.FromString(
        raw(_collection(person, uuid.uuid4().hex).SerializeToString(), **client.options)
    )

    assert answer.recorded.event_type == "DataCollected"
    assert answer.recorded.position == log_end(client)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_sent_to_the_writer_does_not_stop_it_before_the_server_stops(
    served: Served, client: LedgerClient, sig: signal.Signals
) -> None:
    committer, person, pid = _person_and_writer(served, client)

    os.kill(pid, sig)  # as a service manager or Ctrl-C sends it to every process of the group
    time.sleep(0.2)
    recorded = client.record_collection(
        person, _IP, "server_logs", ["security_detection"], values={"ip": secret("ip")}
    )

    assert recorded.event_type == "DataCollected"
    assert committer.writer_pid == pid
    assert committer.restarts == 0


def test_with_the_thread_writer_the_server_records_in_its_own_process(
    serve_with: Callable[..., Served],
) -> None:
    served = serve_with(writer="thread")
    key = uuid.uuid4().hex
    with served.client() as client:
        person = client.register_subject("app", secret("account")).subject_id
        batch = client.ledger.RecordBatch(
            lpb.RecordBatchRequest(
                items=[lpb.BatchItem(collection=_collection(person, key)) for _ in "ab"]
            ),
            **client.options,
        )

        assert not isinstance(served.serving.committer, ProcessCommitter)
        assert [o.WhichOneof("outcome") for o in batch.outcomes] == ["recorded", "recorded"]
        assert batch.outcomes[1].recorded.replayed  # the same key twice: recorded once
        assert len(client.history(person)) == 2

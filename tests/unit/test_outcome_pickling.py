"""Answers cross from the writer process to the server's as pickles: they must come back equal,
fields set and all, whatever their ids."""

from __future__ import annotations

import pickle
from uuid import UUID

from hypothesis import given
from hypothesis import strategies as st

from ledger.errors import SubjectNotFound
from ledger.outcomes import ItemOutcome, Recorded

_ids = st.uuids()


@given(
    aggregate=_ids,
    subject=st.one_of(st.none(), _ids, st.just("same")),
    version=st.integers(min_value=1, max_value=2**62),
    position=st.integers(min_value=1, max_value=2**62),
    event_type=st.text(min_size=1, max_size=40),
    replayed=st.booleans(),
)
def test_a_recorded_answer_pickles_back_equal(
    aggregate: UUID,
    subject: UUID | str | None,
    version: int,
    position: int,
    event_type: str,
    replayed: bool,
) -> None:
    done = Recorded(
        aggregate_id=aggregate,
        subject_id=aggregate if subject == "same" else subject,
        version=version,
        position=position,
        event_type=event_type,
        replayed=replayed,
    )
    for protocol in (pickle.HIGHEST_PROTOCOL, 2):
        again = pickle.loads(pickle.dumps(ItemOutcome(done), protocol))  # noqa: S301 (our own bytes)
        assert again == ItemOutcome(done)
        assert again.recorded is not None
        assert again.recorded.model_fields_set == done.model_fields_set
        assert again.recorded.model_dump() == done.model_dump()
        assert isinstance(again.recorded.aggregate_id, UUID)
        assert hash(again.recorded) == hash(done)
        assert again.recorded.model_copy(update={"replayed": True}).replayed is True


def test_a_refused_outcome_pickles_back_with_its_error() -> None:
    error = SubjectNotFound(UUID(int=7))
    again = pickle.loads(pickle.dumps(ItemOutcome(error=error)))  # noqa: S301 (our own bytes)
    assert again.recorded is None
    assert type(again.error) is SubjectNotFound
    assert str(again.error) == str(error)


@given(aggregate=_ids, subject=st.one_of(st.none(), _ids), replayed=st.booleans())
def test_a_trusted_recorded_equals_a_validated_one(
    aggregate: UUID, subject: UUID | None, replayed: bool
) -> None:
    fields = {
        "aggregate_id": aggregate,
        "subject_id": subject,
        "version": 3,
        "position": 41,
        "event_type": "DataCollected",
        "replayed": replayed,
    }
    trusted = Recorded.trusted(aggregate, subject, 3, 41, "DataCollected", replayed=replayed)
    validated = Recorded(**fields)
    assert trusted == validated
    assert trusted.model_fields_set == validated.model_fields_set
    assert trusted.model_dump_json() == validated.model_dump_json()
    assert trusted.model_copy(update={"replayed": True}).replayed is True

"""What the ledger answers: an accepted command's record, a batch item's outcome."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from ledger.errors import LedgerError


class Recorded(BaseModel):
    """The answer to an accepted command."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    aggregate_id: UUID = Field(description="The aggregate the command changed.")
    subject_id: UUID | None = Field(description="The person concerned, if any.")
    version: int = Field(description="Version of the aggregate's last event from the command.")
    position: int = Field(description="Log position (notification id) of that event.")
    event_type: str = Field(description="Type of that event.")
    replayed: bool = Field(description="True when this repeats the answer to an earlier request.")

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickles as its values, the ids as bytes (the writer process sends every answer to
        the server's: pydantic's own pickling sends each field by name, and ids as objects
        with their state, at four times the cost)."""
        d = self.__dict__
        aggregate, subject = d["aggregate_id"], d["subject_id"]
        same = subject == aggregate
        return (
            _recorded,
            (
                aggregate.bytes,
                None if same or subject is None else subject.bytes,
                same,
                d["version"],
                d["position"],
                d["event_type"],
                d["replayed"],
            ),
        )

    @classmethod
    def trusted(
        cls,
        aggregate_id: UUID,
        subject_id: UUID | None,
        version: int,
        position: int,
        event_type: str,
        *,
        replayed: bool,
    ) -> Recorded:
        """A `Recorded` from values of the right types already (a receipt's), without
        validating them again: the engine makes one per accepted command."""
        obj = _new(cls)
        state = {
            "aggregate_id": aggregate_id,
            "subject_id": subject_id,
            "version": version,
            "position": position,
            "event_type": event_type,
            "replayed": replayed,
        }
        _set(obj, "__dict__", state)
        _set(obj, "__pydantic_fields_set__", set(_FIELDS_SET))  # a copy: model_copy adds to it
        _set(obj, "__pydantic_extra__", None)
        _set(obj, "__pydantic_private__", None)
        return obj


_FIELDS_SET = frozenset(Recorded.model_fields)
_new = object.__new__
_set = object.__setattr__


def _recorded(
    aggregate: bytes,
    subject: bytes | None,
    same: bool,
    version: int,
    position: int,
    event_type: str,
    replayed: bool,
) -> Recorded:
    """A pickled `Recorded` again: its values were validated when it was made."""
    aggregate_id = UUID(bytes=aggregate)
    subject_id = aggregate_id if same else None if subject is None else UUID(bytes=subject)
    return Recorded.trusted(
        aggregate_id, subject_id, version, position, event_type, replayed=replayed
    )


@dataclass(frozen=True, slots=True)
class ItemOutcome:
    """One batch item's outcome: recorded, or refused with an error."""

    recorded: Recorded | None = None
    error: LedgerError | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        # a slotted dataclass pickles through `dataclasses.fields()` on every object
        return (ItemOutcome, (self.recorded, self.error))


class BatchAborted(LedgerError):
    """Another item of an all-or-nothing batch was refused, so this one was not recorded."""

    def __init__(self, index: int) -> None:
        self._index = index
        super().__init__(f"not recorded: item {index} of the all-or-nothing batch was refused")

    @property
    def index(self) -> int:
        return self._index

"""What the ledger answers: an accepted command's record, a batch item's outcome."""

from __future__ import annotations

from dataclasses import dataclass
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


@dataclass(frozen=True, slots=True)
class ItemOutcome:
    """One batch item's outcome: recorded, or refused with an error."""

    recorded: Recorded | None = None
    error: LedgerError | None = None


class BatchAborted(LedgerError):
    """Another item of an all-or-nothing batch was refused, so this one was not recorded."""

    def __init__(self, index: int) -> None:
        self._index = index
        super().__init__(f"not recorded: item {index} of the all-or-nothing batch was refused")

    @property
    def index(self) -> int:
        return self._index

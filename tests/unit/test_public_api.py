"""The public API of `ledger` is pinned: a change to it is a deliberate change to this list."""

from __future__ import annotations

import ledger

_PINNED = {
    "SEED_EFFECTIVE_AT", "AcknowledgePolicy", "BatchAborted", "CancelAccount", "ChangeKind",
    "Clock", "CloseRightsRequest", "ConcurrencyExhausted", "ConfigurationError", "CorrectData",
    "Correction", "EraseSubject", "ExtendRightsRequest", "FixedClock", "Footprint", "GiveConsent",
    "IdempotencyConflict", "InvalidCommand", "ItemOutcome", "KeyShreddedError", "KeyStore",
    "Ledger", "LedgerError", "MasterKey", "MemoryKeyStore", "NotifyPolicy", "OpenRightsRequest",
    "PauseRightsRequest", "Policy", "PolicyChange", "PolicyDiff", "PolicyError",
    "PostgresConfig", "PublishPolicy",
    "RecordCollection", "RecordShare", "RecordUse", "Recorded", "RefusalReason", "Refused",
    "RegisterSubject", "ResumeRightsRequest", "RightKind", "RightsRequestNotFound",
    "SealingError", "Sealer", "StorageConfig", "SubjectNotFound", "SubjectRef", "SubjectState",
    "SystemClock", "Touched", "WithdrawConsent", "diff_policies", "ledger_env",
    "load_policy_file", "load_seed_policy", "parse_policy",
}  # fmt: skip


def test_public_api_is_exactly_the_pinned_names() -> None:
    assert set(ledger.__all__) == _PINNED


def test_every_public_name_resolves() -> None:
    missing = [name for name in ledger.__all__ if not hasattr(ledger, name)]
    assert missing == []


def test_every_error_is_a_ledger_error() -> None:
    errors = [getattr(ledger, n) for n in ledger.__all__ if n.endswith(("Error", "Refused"))]
    assert all(issubclass(e, ledger.LedgerError) for e in errors)

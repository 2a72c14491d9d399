"""Reads of the views: pure queries on a `Connection`, answering `projections.answers` models.

Each list is keyset-paged (`projections.paging`) in a stable order and filtered by exact
values; a bad filter, page size or page token raises `BadQuery` naming the argument. "Now" is
passed in (the ledger's clock), as is the retention period of each category under the policy
in force, so a query never reads a clock or the log. Call them inside `ViewStore.read()` so a
page and its summary come from one snapshot.
"""

from __future__ import annotations

from projections.queries.due import DEFAULT_DUE_SOON_DAYS, DeadlineStatus, deadlines, retention_due
from projections.queries.holdings import consents, register, subject_view
from projections.queries.notices import NoticeStatus, policy_notices, policy_versions

__all__ = [
    "DEFAULT_DUE_SOON_DAYS",
    "DeadlineStatus",
    "NoticeStatus",
    "consents",
    "deadlines",
    "policy_notices",
    "policy_versions",
    "register",
    "retention_due",
    "subject_view",
]

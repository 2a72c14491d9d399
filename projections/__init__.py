"""Read models of the ledger's log: current-state views in SQLAlchemy Core tables, each with
its tracking position, folded by one runner; and policy-change notifications.

`views(dialect, notifier)` makes every view; `ProjectionRunner` catches them up and follows
the log; `projections.queries` reads them.
"""

from __future__ import annotations

from ledger.application import Ledger
from projections.consents import ConsentView
from projections.deadlines import DeadlineView
from projections.notices import ExecuteMany, LedgerNotifier, NoticeView, Notifier
from projections.register import RegisterView
from projections.retention import RetentionView
from projections.runner import (
    DEFAULT_GATHER_SECONDS,
    DEFAULT_PAGE_SIZE,
    ProjectionRunner,
    RunnerStopped,
)
from projections.store import ViewStore
from projections.subjects import SubjectView
from projections.view import View

__all__ = [
    "VIEW_NAMES",
    "ConsentView",
    "DeadlineView",
    "LedgerNotifier",
    "NoticeView",
    "ProjectionRunner",
    "RegisterView",
    "RetentionView",
    "RunnerStopped",
    "SubjectView",
    "View",
    "ViewStore",
    "ledger_runner",
    "views",
]

_PLAIN: tuple[type[View], ...] = (
    SubjectView,
    ConsentView,
    RegisterView,
    DeadlineView,
    RetentionView,
)

VIEW_NAMES = (*(kind.name for kind in _PLAIN), NoticeView.name)
"""Every view, by the name its tracking row has, in the order the runner folds them."""


def views(
    dialect: str, notifier: Notifier | None = None, names: tuple[str, ...] = VIEW_NAMES
) -> list[View]:
    """The views named (all by default) for a views database of this dialect; `notifier`
    records policy notifications (without one, none are recorded)."""
    unknown = sorted(set(names) - set(VIEW_NAMES))
    if unknown:
        msg = f"unknown view(s): {', '.join(unknown)}; known: {', '.join(VIEW_NAMES)}"
        raise ValueError(msg)
    made: list[View] = [kind(dialect) for kind in _PLAIN if kind.name in names]
    if NoticeView.name in names:
        made.append(NoticeView(dialect, notifier))
    return made


def ledger_runner(
    ledger: Ledger,
    store: ViewStore,
    names: tuple[str, ...] = VIEW_NAMES,
    *,
    page_size: int = DEFAULT_PAGE_SIZE,
    execute_many: ExecuteMany | None = None,
    gather_seconds: float = DEFAULT_GATHER_SECONDS,
) -> ProjectionRunner:
    """A runner of the named views (all by default) over the ledger's log, recording policy
    notices through the ledger's own command (made by `execute_many` when given: the server
    hands its writer's)."""
    notifier = LedgerNotifier(ledger, execute_many=execute_many)
    chosen = views(store.dialect, notifier, names)
    return ProjectionRunner(
        ledger, store, chosen, page_size=page_size, gather_seconds=gather_seconds
    )

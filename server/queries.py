"""The query service: a person's state and history, and the audit stream of the whole log.

History comes in pages; the audit stream sends pages of stored events per message (one
message per event would cap it at the framing cost), exactly as stored, and in follow mode
keeps tailing the log.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from eventsourcing.domain import Aggregate
from eventsourcing.persistence import Notification
from eventsourcing.utils import get_topic
from grpc import aio

from ledger.application import Ledger
from ledger.clock import Clock
from ledger.policy_book import PolicyBook
from ledger.rights import RightsRequest
from ledger.rules import FUTURE_TOLERANCE
from ledger.subject import Subject
from projections import paging
from server import convert
from server._pb.pdl.v1 import query_service_pb2 as qpb
from server._pb.pdl.v1 import query_service_pb2_grpc as qgrpc
from server.errors import FieldViolation, InvalidRequest, TooManyFollowers

Context = aio.ServicerContext[Any, Any]

_DEFAULT_HISTORY_PAGE = 100
_MAX_HISTORY_PAGE = 1000
_DEFAULT_AUDIT_PAGE = 500
_MAX_AUDIT_PAGE = 1000
_FOLLOW_POLL_SECONDS = 0.05
MOST_FOLLOWERS = 64
"""Followed audit streams one server tails at once: each polls the store every 50 ms on the
threads every read shares (1,000 followers took a core and slowed every call tenfold)."""
_MESSAGE_BUDGET = 4 * 1024 * 1024
"""Bytes per audit message (stored state) or history page, well under the send limit and
within gRPC's default receive limit, so that any client can read a page whatever its events
weigh (an event over it goes alone)."""
_LIBRARY_EVENTS = frozenset({"Event", "Created"})
"""The classes `eventsourcing` makes for every aggregate (its base event, its default created
event); the ledger records neither."""


def _event_topics(*aggregates: type[Aggregate]) -> dict[str, str]:
    """Event type name to stored topic, for every event of these aggregates."""
    topics: dict[str, str] = {}
    for aggregate in aggregates:
        for name in dir(aggregate):
            kind = getattr(aggregate, name)
            if (
                name not in _LIBRARY_EVENTS
                and isinstance(kind, type)
                and issubclass(kind, Aggregate.Event)
                and kind.__qualname__ == f"{aggregate.__qualname__}.{name}"
            ):
                topics[name] = get_topic(kind)
    return topics


_LAST_INSTANT = datetime.max.replace(tzinfo=UTC)


def _bound(request: qpb.ListSubjectHistoryRequest, name: str) -> datetime | None:
    """A time bound of the history, rounded up to the microsecond (events are recorded to the
    microsecond): an event recorded before an instant between two microseconds is before it."""
    instant = convert.instant(request, name)
    if instant is not None and getattr(request, name).nanos % 1_000 and instant < _LAST_INSTANT:
        instant += timedelta(microseconds=1)
    return instant


EVENT_TOPICS = _event_topics(Subject, RightsRequest, PolicyBook)
"""Every event the ledger records (the audit stream's filter)."""
SUBJECT_EVENT_TYPES = frozenset(_event_topics(Subject))
"""The events of a person's own stream, which is what their history holds (their rights
requests are their own aggregates: the audit stream and the deadlines show them)."""


class QueryServicer(qgrpc.QueryServiceServicer):
    """Reads of the log."""

    def __init__(self, ledger: Ledger, clock: Clock) -> None:
        self._ledger = ledger
        self._clock = clock
        self._most_followers = MOST_FOLLOWERS
        self._followers = 0

    async def GetSubjectState(
        self, request: qpb.GetSubjectStateRequest, context: Context
    ) -> qpb.GetSubjectStateResponse:
        ref = convert.subject_ref(request.subject, "subject")
        as_of = convert.instant(request, "as_of")
        if as_of is not None and as_of > self._clock.now() + FUTURE_TOLERANCE:
            raise InvalidRequest([FieldViolation("as_of", "in the future")])
        state = await asyncio.to_thread(self._ledger.subject_state, ref, as_of)
        return qpb.GetSubjectStateResponse(state=convert.subject_state(state))

    async def ListSubjectHistory(
        self, request: qpb.ListSubjectHistoryRequest, context: Context
    ) -> qpb.ListSubjectHistoryResponse:
        ref = convert.subject_ref(request.subject, "subject")
        size = _page_size(request.page_size, _DEFAULT_HISTORY_PAGE, _MAX_HISTORY_PAGE)
        types = set(request.event_types)
        if types - set(EVENT_TOPICS):
            raise InvalidRequest([FieldViolation("event_types", "unknown event type")])
        if types - SUBJECT_EVENT_TYPES:
            raise InvalidRequest(
                [FieldViolation("event_types", "not an event of a person's history")]
            )
        start = _bound(request, "recorded_from")
        end = _bound(request, "recorded_to")
        if start is not None and end is not None and end < start:
            raise InvalidRequest([FieldViolation("recorded_to", "before recorded_from")])
        subject_id = await asyncio.to_thread(self._ledger.resolve, ref)
        # a token names the last version of its page, for this person and these filters only
        filters = [subject_id, sorted(types), start, end]
        want = paging.page("history", filters, size, request.page_token, (int,))
        after = int(want.after[0]) if want.after is not None else 0
        payloads = await asyncio.to_thread(self._ledger.history, subject_id)
        page: list[qpb.HistoryEvent] = []
        next_token = ""
        weight = 0
        for version, payload in enumerate(payloads, start=1):
            if version <= after:
                continue
            if types and type(payload).__name__ not in types:
                continue
            if (start and payload.recorded_at < start) or (end and payload.recorded_at >= end):
                continue
            if len(page) == size:
                next_token = paging.token_for(want, (page[-1].version,))
                break
            event = convert.history_event(version, payload)
            weight += event.ByteSize() + 8
            if page and weight > _MESSAGE_BUDGET:  # a full page by weight: the rest follows
                next_token = paging.token_for(want, (page[-1].version,))
                break
            page.append(event)
        return qpb.ListSubjectHistoryResponse(events=page, next_page_token=next_token)

    async def StreamAuditLog(
        self, request: qpb.StreamAuditLogRequest, context: Context
    ) -> AsyncIterator[qpb.StreamAuditLogResponse]:
        if request.from_position < 0:
            raise InvalidRequest([FieldViolation("from_position", "must not be negative")])
        size = _page_size(request.page_size, _DEFAULT_AUDIT_PAGE, _MAX_AUDIT_PAGE)
        unknown = sorted(set(request.event_types) - set(EVENT_TOPICS))
        if unknown:
            raise InvalidRequest([FieldViolation("event_types", "unknown event type")])
        topics = [EVENT_TOPICS[t] for t in request.event_types]
        if not request.follow:
            async for response in self._audit(request, size, topics):
                yield response
            return
        if self._followers >= self._most_followers:  # each polls the store every 50 ms
            raise TooManyFollowers(self._most_followers)
        self._followers += 1
        try:
            async for response in self._audit(request, size, topics):
                yield response
        finally:
            self._followers -= 1

    async def _audit(
        self, request: qpb.StreamAuditLogRequest, size: int, topics: list[str]
    ) -> AsyncIterator[qpb.StreamAuditLogResponse]:
        select = self._ledger.recorder.select_notifications
        position = max(request.from_position, 1)
        while True:
            page: Sequence[Notification] = await asyncio.to_thread(
                select, position, size, topics=topics
            )
            if page:
                position = page[-1].id + 1
                for chunk in _by_size(page):
                    yield qpb.StreamAuditLogResponse(
                        events=[_audit_event(n) for n in chunk], next_position=chunk[-1].id + 1
                    )
            if len(page) < size:
                if not request.follow:
                    return
                await asyncio.sleep(_FOLLOW_POLL_SECONDS)


def _by_size(page: Sequence[Notification]) -> Iterator[Sequence[Notification]]:
    """Split a page so that no message grows past `_MESSAGE_BUDGET` bytes of stored state."""
    start, size = 0, 0
    for index, n in enumerate(page):
        size += len(n.state) + 128
        if size > _MESSAGE_BUDGET and index > start:
            yield page[start:index]
            start, size = index, len(n.state) + 128
    yield page[start:]


def _audit_event(n: Notification) -> qpb.AuditEvent:
    return qpb.AuditEvent(
        position=n.id,
        aggregate_id=str(n.originator_id),
        version=n.originator_version,
        event_type=n.topic.rsplit(".", 1)[-1],
        stored_state=n.state,
    )


def _page_size(asked: int, default: int, most: int) -> int:
    if asked < 0 or asked > most:
        raise InvalidRequest([FieldViolation("page_size", f"give 0 (default) to {most}")])
    return asked or default

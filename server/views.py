"""The view and policy-notice services: thin servicers over `projections.queries` and the ledger.

A view read takes four steps: proto to query arguments (`convert_views`), wait until the views
have folded the request's `min_position` (read-your-writes, `ViewWaiter`), one query on one
read snapshot in a worker thread, answer to proto. Revealing a person's values also needs the
`reveal` scope and opens them with the ledger's sealer, in this process, for this answer only.

The notice service streams `PolicyNotified` events from the log in pages (as the audit stream
does), and records acknowledgements and manual notices through the group committer, as every
recording RPC does. Errors become status in the interceptor.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, TypeVar

from grpc import aio

from ledger import events as ev
from ledger.application import Ledger
from ledger.commands import SubjectRef
from ledger.errors import KeyShreddedError
from projections import VIEW_NAMES
from projections import queries as q
from projections.answers import SubjectViewAnswer
from projections.runner import ProjectionRunner
from projections.store import TRACKING, ViewStore
from server import convert_views as cv
from server._pb.pdl.v1 import notice_service_pb2 as npb
from server._pb.pdl.v1 import notice_service_pb2_grpc as ngrpc
from server._pb.pdl.v1 import view_service_pb2 as vpb
from server._pb.pdl.v1 import view_service_pb2_grpc as vgrpc
from server.auth import CURRENT_PRINCIPAL, authorize
from server.convert_results import recorded, timestamp
from server.errors import FieldViolation, InvalidRequest, PositionNotWritten, ViewBehind
from server.projection_process import ProjectionProcess
from server.queries import EVENT_TOPICS
from server.request_reader import subject_ref
from server.runtime import Runtime
from server.servicers import RecordingServicer
from server.settings import Scope

Context = aio.ServicerContext[Any, Any]
_T = TypeVar("_T")

_reveals = logging.getLogger("pdl.reveal")
_FIRST_PAUSE_SECONDS = 0.002
_MOST_PAUSE_SECONDS = 0.05
_ANSWER_MARGIN_SECONDS = 0.25
"""Time kept back from a call's deadline to answer VIEW_BEHIND before the deadline passes."""
_REVEAL = "/pdl.v1.ViewService/GetSubjectView with reveal"
_DEFAULT_NOTICE_PAGE = 500
_MAX_NOTICE_PAGE = 1000
_MAX_VERSION_CHARS = 32
_FOLLOW_POLL_SECONDS = 0.05
_NOTIFIED_TOPIC = EVENT_TOPICS["PolicyNotified"]


class ViewWaiter:
    """Waits until the views have folded a log position, within the time a call allows.

    With the projection process a read is woken by the report of the position it waits for
    (no I/O, no polling); with the projections in this process it watches the runner's
    position; with external workers it polls the tracking rows, the least of the views'
    positions.
    """

    def __init__(
        self, runtime: Runtime, most_seconds: float, process: ProjectionProcess | None = None
    ) -> None:
        self._runtime = runtime
        self._most = most_seconds
        self._process = process

    def _followed(self) -> ProjectionProcess | ProjectionRunner | None:
        """What folds the views here: the projection process, or this process's runner
        (started after the waiter is made); None with external workers."""
        return self._process if self._process is not None else self._runtime.runner

    async def reached(self) -> int:
        """The position every view has folded."""
        followed = self._followed()
        if followed is not None:
            return followed.position
        positions = await asyncio.to_thread(self._runtime.views.positions)
        return min(positions.get(name, 0) for name in VIEW_NAMES)

    async def wait(self, position: int, context: Context) -> None:
        """Return once the views reached `position`; raise `ViewBehind` when time runs out."""
        if position == 0:
            return
        reached = await self.reached()
        if reached >= position:
            return
        written = await asyncio.to_thread(self._runtime.ledger.recorder.max_notification_id)
        if position > (written or 0):  # nothing would ever wake this wait but a stranger's write
            raise PositionNotWritten(position, written or 0)
        budget = self._most
        remaining = context.time_remaining()
        if remaining is not None:
            budget = min(budget, remaining - min(_ANSWER_MARGIN_SECONDS, remaining / 5))
        if self._process is not None:  # woken by the report that reaches it, not by polling
            reached_it = self._process.reached(position)
            try:
                await asyncio.wait_for(reached_it, max(budget, 0))
            except TimeoutError:
                raise ViewBehind(position, self._process.position) from None
            return
        self._hurry()
        deadline = time.monotonic() + budget
        pause = _FIRST_PAUSE_SECONDS
        while reached < position:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ViewBehind(position, reached)
            await asyncio.sleep(min(pause, left))
            pause = min(pause * 2, _MOST_PAUSE_SECONDS)
            reached = await self.reached()
            if reached < position:
                self._hurry()

    def _hurry(self) -> None:
        """Have the projections fold what is in the log without letting more gather."""
        followed = self._followed()
        if followed is not None:
            followed.hurry()


class ViewServicer(vgrpc.ViewServiceServicer):
    """Reads of the current-state views."""

    def __init__(self, ledger: Ledger, store: ViewStore, waiter: ViewWaiter) -> None:
        self._ledger = ledger
        self._store = store
        self._waiter = waiter

    async def _read(
        self, min_position: int, context: Context, query: Callable[..., _T], *args: Any, **kw: Any
    ) -> _T:
        """Wait for `min_position`, then run `query` on one read snapshot in a worker thread."""
        await self._waiter.wait(cv.min_position(min_position), context)
        return await asyncio.to_thread(self._run, query, args, kw)

    def _run(self, query: Callable[..., _T], args: Sequence[Any], kw: dict[str, Any]) -> _T:
        with self._store.read() as conn:
            return query(conn, *args, **kw)

    async def GetSubjectView(
        self, request: vpb.GetSubjectViewRequest, context: Context
    ) -> vpb.GetSubjectViewResponse:
        principal = CURRENT_PRINCIPAL.get()
        if request.reveal:
            authorize(principal, Scope.REVEAL, _REVEAL)
        ref = subject_ref(request.subject, "subject")
        wait = cv.min_position(request.min_position)
        await self._waiter.wait(wait, context)
        subject_id = await asyncio.to_thread(self._ledger.resolve, ref)
        view, position = await asyncio.to_thread(self._run, _view_and_position, (subject_id,), {})
        opened = None
        if request.reveal:
            opened = await asyncio.to_thread(_open, self._ledger, view)
            # A JSON line as the access log's (principal names are JSON-safe): who opened
            # whose values, by pseudonym; the fields stay in `extra` for structured handlers.
            _reveals.info(
                '{"event":"revealed","principal":"%s","subject":"%s"}',
                principal.name,
                view.subject_id,
                extra={"principal": principal.name, "subject": str(view.subject_id)},
            )
        return vpb.GetSubjectViewResponse(view=cv.subject_view(view, opened), position=position)

    async def ListConsents(
        self, request: vpb.ListConsentsRequest, context: Context
    ) -> vpb.ListConsentsResponse:
        ref = subject_ref(request.subject, "subject")
        await self._waiter.wait(cv.min_position(request.min_position), context)
        subject_id = await asyncio.to_thread(self._ledger.resolve, ref)
        page = await asyncio.to_thread(
            self._run,
            q.consents,
            (subject_id,),
            {
                "now": self._ledger.clock.now(),
                "include_withdrawn": request.include_withdrawn,
                "purpose": request.purpose,
                "category": request.category,
                "page_size": request.page_size,
                "page_token": request.page_token,
            },
        )
        return vpb.ListConsentsResponse(
            consents=[cv.consent(r) for r in page.items], next_page_token=page.next_page_token
        )

    async def ListProcessingRegister(
        self, request: vpb.ListProcessingRegisterRequest, context: Context
    ) -> vpb.ListProcessingRegisterResponse:
        page = await self._read(
            request.min_position,
            context,
            q.register,
            activity=cv.activity(request.activity),
            category=request.category,
            purpose=request.purpose,
            recipient_class=request.recipient_class,
            region=request.region,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return vpb.ListProcessingRegisterResponse(
            entries=[cv.register_entry(r) for r in page.items],
            next_page_token=page.next_page_token,
        )

    async def ListRequestDeadlines(
        self, request: vpb.ListRequestDeadlinesRequest, context: Context
    ) -> vpb.ListRequestDeadlinesResponse:
        status = cv.deadline_status(request.status)
        kind = cv.right_kind(request.kind)
        page = await self._read(
            request.min_position,
            context,
            q.deadlines,
            now=self._ledger.clock.now(),
            status=status,
            kind=kind,
            due_within_days=request.due_within_days,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return vpb.ListRequestDeadlinesResponse(
            requests=[cv.deadline(r) for r in page.items],
            next_page_token=page.next_page_token,
            summary=[cv.deadline_counts(s) for s in page.summary],
            as_of=timestamp(page.as_of),
        )

    async def ListRetentionDue(
        self, request: vpb.ListRetentionDueRequest, context: Context
    ) -> vpb.ListRetentionDueResponse:
        await self._waiter.wait(cv.min_position(request.min_position), context)
        now = self._ledger.clock.now()
        published, policy = await asyncio.to_thread(self._ledger.policy_in_force, now)
        page = await asyncio.to_thread(
            self._run,
            q.retention_due,
            (),
            {
                "now": now,
                "retention_days": {c.id: c.retention_days for c in policy.categories},
                "category": request.category,
                "page_size": request.page_size,
                "page_token": request.page_token,
            },
        )
        return vpb.ListRetentionDueResponse(
            items=[cv.retention_due(r) for r in page.items],
            next_page_token=page.next_page_token,
            policy_version=published.version,
            as_of=timestamp(page.as_of),
        )

    async def ListPolicyVersions(
        self, request: vpb.ListPolicyVersionsRequest, context: Context
    ) -> vpb.ListPolicyVersionsResponse:
        page = await self._read(
            request.min_position,
            context,
            q.policy_versions,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return vpb.ListPolicyVersionsResponse(
            versions=[cv.version(r) for r in page.items], next_page_token=page.next_page_token
        )

    async def ListPolicyNotices(
        self, request: vpb.ListPolicyNoticesRequest, context: Context
    ) -> vpb.ListPolicyNoticesResponse:
        status = cv.notice_status(request.status)
        page = await self._read(
            request.min_position,
            context,
            q.policy_notices,
            request.version,
            status=status,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return vpb.ListPolicyNoticesResponse(
            notices=[cv.notice(r) for r in page.items], next_page_token=page.next_page_token
        )


def _view_and_position(conn: Any, subject_id: Any) -> tuple[SubjectViewAnswer, int]:
    """A person's view and the position every view had reached, from one snapshot."""
    view = q.subject_view(conn, subject_id)
    tracked = {row.view: row.position for row in conn.execute(TRACKING.select())}
    return view, min(tracked.get(name, 0) for name in VIEW_NAMES)


def _open(ledger: Ledger, view: SubjectViewAnswer) -> cv.Opened:
    """Open a person's values with their data key; nothing once the person is erased, and no
    value of a category erased since it was set. The key store and the ledger's own state of
    the person are asked, since the views may not have folded the erasure yet."""
    sid, sealer = view.subject_id, ledger.sealer
    state = ledger.subject_state(SubjectRef(subject_id=sid))
    if ledger.key_gone(state) or view.key_shredded:
        return cv.Opened(key_shredded=True)
    try:
        values = {
            (held.category, f.field): sealer.open(
                sid, f.seal_field, f.sealed, category=held.category
            )
            for held in view.categories
            for f in held.fields
            if not state.value_erased(held.category, f.set_at)
        }
        account = view.account_id_sealed
        account_id = None if account is None else sealer.open(sid, "account_id", account)
    except KeyShreddedError:
        sealer.forget(sid)
        return cv.Opened(key_shredded=True)
    return cv.Opened(values=values, account_id=account_id)


class NoticeServicer(RecordingServicer, ngrpc.PolicyNoticeServiceServicer):
    """Streams policy notifications; records acknowledgements and manual notices."""

    async def AcknowledgePolicy(
        self, request: npb.AcknowledgePolicyRequest, context: Context
    ) -> npb.AcknowledgePolicyResponse:
        done = await self._record(cv.acknowledge_policy(request, self._clock.now()))
        return npb.AcknowledgePolicyResponse(recorded=recorded(done))

    async def NotifyPolicy(
        self, request: npb.NotifyPolicyRequest, context: Context
    ) -> npb.NotifyPolicyResponse:
        done = await self._record(cv.notify_policy(request, self._clock.now()))
        return npb.NotifyPolicyResponse(recorded=recorded(done))

    async def StreamPolicyNotifications(
        self, request: npb.StreamPolicyNotificationsRequest, context: Context
    ) -> AsyncIterator[npb.StreamPolicyNotificationsResponse]:
        problems = []
        if request.from_position < 0:
            problems.append(FieldViolation("from_position", "must not be negative"))
        if not 0 <= request.page_size <= _MAX_NOTICE_PAGE:
            problems.append(FieldViolation("page_size", f"give 0 (default) to {_MAX_NOTICE_PAGE}"))
        if len(request.version) > _MAX_VERSION_CHARS:
            problems.append(FieldViolation("version", f"at most {_MAX_VERSION_CHARS} characters"))
        if problems:
            raise InvalidRequest(problems)
        size = request.page_size or _DEFAULT_NOTICE_PAGE
        position = max(request.from_position, 1)
        while True:
            read, last, found = await asyncio.to_thread(self._page, position, size, request.version)
            if read:
                position = last + 1
            if found:
                yield npb.StreamPolicyNotificationsResponse(
                    notifications=found, next_position=position
                )
            if read < size:
                if not request.follow:
                    return
                await asyncio.sleep(_FOLLOW_POLL_SECONDS)

    def _page(
        self, start: int, size: int, version: str
    ) -> tuple[int, int, list[npb.PolicyNotification]]:
        """Read up to `size` PolicyNotified entries from `start`: how many were read, the last
        position read, and the notifications of `version` (all when empty) among them."""
        page = self._ledger.recorder.select_notifications(start, size, topics=[_NOTIFIED_TOPIC])
        payload_of = self._ledger.payload_of
        found = []
        for n in page:
            payload = payload_of(n)
            if isinstance(payload, ev.PolicyNotified) and version in ("", payload.version):
                found.append(cv.notification(n.id, payload))
        return len(page), (page[-1].id if page else 0), found

"""The view queries, on rows folded from real ledger events: a person's view, consents, the
processing register, rights-request deadlines, retention due, policy versions and notices;
their filters, keyset paging and the errors of bad arguments.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any, TypeVar
from uuid import UUID, uuid4

import pytest
from pydantic import SecretStr
from scenario import (
    PRINCIPAL,
    collection,
    consent,
    gps_collection,
    key,
    later,
    secret,
    share,
    subject,
    use,
    withdrawal,
)
from sqlalchemy.engine import Connection

import projections
from ledger import commands as c
from ledger.application import Ledger
from ledger.errors import SubjectNotFound
from ledger.events import ConsentGiver, RequestOutcome
from ledger.policy import RightKind, load_seed_policy
from ledger.rights import RequestStatus
from projections import ProjectionRunner, ViewStore
from projections import queries as q
from projections.answers import Paged
from projections.errors import BadQuery, PolicyVersionNotFound
from projections.subjects import REFERENCE_FIELD

_T = TypeVar("_T")
_IP = "network_log.ip_address"
_GPS = "location.gps"
_USAGE = "network_log.usage"
_DAY = timedelta(days=1)


class Views:
    """A views database folded from a ledger's log, and a way to read it."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.store = ViewStore("sqlite://")
        self.runner = ProjectionRunner(ledger, self.store, projections.views(self.store.dialect))

    def read(self, query: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """Fold everything recorded so far, then run one query in a read transaction."""
        self.runner.catch_up()
        with self.store.read() as conn:
            return query(conn, *args, **kwargs)

    def every_page(self, query: Callable[..., Paged[Any]], *args: Any, **kwargs: Any) -> list[Any]:
        """Every row of a paged query, following its tokens."""
        rows: list[Any] = []
        token = ""
        while True:
            got = self.read(query, *args, page_token=token, **kwargs)
            rows.extend(got.items)
            token = got.next_page_token
            if not token:
                return rows


@pytest.fixture
def views(memory_ledger: Ledger) -> Iterator[Views]:
    folded = Views(memory_ledger)
    yield folded
    folded.store.close()


def record(ledger: Ledger, command: c._Command) -> int:
    """Execute a command; its log position."""
    return ledger.execute(PRINCIPAL, command).position


def now(ledger: Ledger) -> Any:
    return ledger.clock.now()


# --- a person's view ------------------------------------------------------------------------


def _usage_for_ads(ledger: Ledger, sid: UUID, **fields: Any) -> None:
    """Consent to advertising on usage data, then usage data collected for it."""
    record(ledger, consent(sid, at=later(ledger), purposes=("advertising",), categories=(_USAGE,)))
    fields = {"category": _USAGE, "source": "app", "purposes": ("advertising",), **fields}
    record(ledger, collection(sid, at=later(ledger), mode="consent", **fields))


def test_a_subject_view_groups_each_held_category_with_its_facets_and_sealed_fields(
    views: Views,
) -> None:
    ledger = views.ledger
    sid = subject(ledger)
    record(ledger, collection(sid, at=later(ledger)))
    record(ledger, consent(sid, at=later(ledger)))
    record(ledger, gps_collection(sid, at=later(ledger), mode="consent"))
    record(ledger, use(sid, at=later(ledger)))
    _usage_for_ads(ledger, sid, values={}, reference=SecretStr(secret("ref")))
    last = record(ledger, share(sid, at=later(ledger)))

    view = views.read(q.subject_view, sid)

    assert (view.subject_id, view.namespace, view.storage_region) == (sid, "app", "cn-mainland")
    assert (view.erased, view.cancelled, view.key_shredded, view.minor) == (False,) * 4
    assert view.account_id_sealed is not None
    assert view.account_id_sealed.startswith("s1:")
    assert view.last_position == last
    assert view.events == 8
    by_name = {cat.category: cat for cat in view.categories}
    assert sorted(by_name) == [_GPS, _IP, _USAGE]
    ip = by_name[_IP]
    assert (ip.collections, ip.sources) == (1, ("server_logs",))
    assert ip.purposes == ("security_detection",)
    assert ip.bases == ("automatic", "contract")
    assert ip.regions == ("cn-mainland",)
    assert [(f.field, f.seal_field) for f in ip.fields] == [("ip", "ip")]
    assert ip.fields[0].sealed.startswith("s2:")
    assert by_name[_GPS].bases == ("consent",)
    usage = by_name[_USAGE]
    assert usage.recipient_classes == ("third_party_partners",)
    assert usage.recipients == ("Example Ads Ltd",)
    assert [(f.field, f.seal_field) for f in usage.fields] == [(REFERENCE_FIELD, "reference")]
    assert usage.fields[0].position < last
    assert view.recipient_classes == ("third_party_partners",)
    assert view.recipients == ("Example Ads Ltd",)


def test_a_subject_view_names_each_recipient_with_its_class(views: Views) -> None:
    ledger = views.ledger
    sid = subject(ledger)
    record(ledger, collection(sid, at=later(ledger)))  # an IP, for security detection
    _usage_for_ads(ledger, sid, values={"page": SecretStr(secret("page"))})
    staff = {
        "recipient_class": "employees_affiliates",
        "purpose": "security_detection",
        "legal_basis": "contract",
    }
    for recipient in ("Hosting Staff", "Affiliate SOC"):
        record(
            ledger, share(sid, at=later(ledger), categories=(_IP,), recipient=recipient, **staff)
        )
    record(ledger, share(sid, at=later(ledger), categories=(_USAGE,), recipient="Ads Co"))

    view = views.read(q.subject_view, sid)

    by_name = {cat.category: cat for cat in view.categories}
    pairs = {
        name: [(w.recipient_class, w.recipients) for w in cat.shared_with]
        for name, cat in by_name.items()
    }
    assert pairs == {
        _IP: [("employees_affiliates", ("Affiliate SOC", "Hosting Staff"))],
        _USAGE: [("third_party_partners", ("Ads Co",))],
    }
    assert by_name[_IP].recipient_classes == ("employees_affiliates",)
    assert by_name[_IP].recipients == ("Affiliate SOC", "Hosting Staff")
    assert [(w.recipient_class, w.recipients) for w in view.shared_with] == [
        *pairs[_IP],
        *pairs[_USAGE],
    ]
    assert view.recipient_classes == ("employees_affiliates", "third_party_partners")
    assert view.recipients == ("Ads Co", "Affiliate SOC", "Hosting Staff")


def test_the_sealed_values_of_a_subject_view_open_with_the_ledger_sealer(views: Views) -> None:
    ledger = views.ledger
    ip = secret("ip")
    sid = subject(ledger)
    record(ledger, collection(sid, at=later(ledger), values={"ip": SecretStr(ip)}))

    (held,) = views.read(q.subject_view, sid).categories
    (field,) = held.fields

    assert ip not in field.sealed
    opened = ledger.sealer.open(sid, field.seal_field, field.sealed, category=held.category)
    assert opened == ip


def test_a_subject_the_views_do_not_hold_is_not_found(views: Views) -> None:
    with pytest.raises(SubjectNotFound):
        views.read(q.subject_view, uuid4())
    with pytest.raises(SubjectNotFound):
        views.read(q.consents, uuid4(), now=now(views.ledger))


def test_after_full_erasure_the_view_keeps_the_flags_and_drops_every_value(views: Views) -> None:
    ledger = views.ledger
    sid = subject(ledger)
    record(ledger, collection(sid, at=later(ledger)))
    at = later(ledger)
    record(
        ledger,
        c.EraseSubject(
            idempotency_key=key("er"),
            occurred_at=at,
            subject=c.SubjectRef(subject_id=sid),
            ground="no_consent",
        ),
    )

    view = views.read(q.subject_view, sid)

    assert view.erased
    assert view.key_shredded
    assert view.closed_at == at
    assert view.account_id_sealed is None
    assert view.categories == ()


def test_erasing_one_category_leaves_the_others_in_the_view(views: Views) -> None:
    ledger = views.ledger
    sid = subject(ledger)
    record(ledger, collection(sid, at=later(ledger)))
    record(ledger, consent(sid, at=later(ledger)))
    record(ledger, gps_collection(sid, at=later(ledger), mode="consent"))
    record(
        ledger,
        c.EraseSubject(
            idempotency_key=key("er"),
            occurred_at=later(ledger),
            subject=c.SubjectRef(subject_id=sid),
            ground="no_consent",
            categories=(_GPS,),
        ),
    )

    view = views.read(q.subject_view, sid)

    assert [cat.category for cat in view.categories] == [_IP]
    assert not view.erased
    assert not view.key_shredded


# --- consents -------------------------------------------------------------------------------


def test_consents_list_those_in_force_and_with_withdrawn_their_interval(views: Views) -> None:
    ledger = views.ledger
    sid = subject(ledger)
    given = later(ledger)
    record(ledger, consent(sid, at=given, purposes=("customer_service", "advertising")))
    withdrawn = later(ledger)
    record(ledger, withdrawal(sid, at=withdrawn, purposes=("advertising",)))
    record(ledger, consent(sid, at=later(ledger), given_by=ConsentGiver.SUBJECT, method="popup"))

    in_force = views.read(q.consents, sid, now=now(ledger)).items
    everything = views.read(q.consents, sid, now=now(ledger), include_withdrawn=True).items

    assert [(r.purpose, r.category, r.in_force) for r in in_force] == [
        ("customer_service", _GPS, True),
        ("customer_service", _GPS, True),
    ]
    assert in_force[1].method == "popup"
    assert len(everything) == 3
    (ended,) = [r for r in everything if not r.in_force]
    assert (ended.purpose, ended.given_at, ended.withdrawn_at) == ("advertising", given, withdrawn)
    assert ended.policy_version == "1"
    assert ended.given_by is ConsentGiver.SUBJECT


def test_a_consent_dated_ahead_of_now_is_listed_but_not_yet_in_force(views: Views) -> None:
    """A consent may be dated a little ahead of the ledger's clock; until then it is not in
    force, as the ledger's own rules say."""
    ledger = views.ledger
    sid = subject(ledger)
    ahead = now(ledger) + timedelta(minutes=2)
    record(ledger, consent(sid, at=ahead))

    (listed,) = views.read(q.consents, sid, now=now(ledger)).items
    (later_on,) = views.read(q.consents, sid, now=ahead).items

    assert (listed.given_at, listed.in_force) == (ahead, False)
    assert later_on.in_force


def test_consents_filter_by_purpose_and_category(views: Views) -> None:
    ledger = views.ledger
    sid = subject(ledger)
    record(
        ledger,
        consent(
            sid,
            at=later(ledger),
            purposes=("customer_service", "advertising"),
            categories=(_GPS, _USAGE),
        ),
    )

    def listed(**filters: str) -> list[tuple[str, str]]:
        rows = views.read(q.consents, sid, now=now(ledger), **filters).items
        return [(r.purpose, r.category) for r in rows]

    assert listed(purpose="advertising") == [("advertising", _GPS), ("advertising", _USAGE)]
    assert listed(category=_USAGE) == [("advertising", _USAGE), ("customer_service", _USAGE)]
    assert listed(purpose="advertising", category=_GPS) == [("advertising", _GPS)]
    assert listed(purpose="promotions") == []


# --- paging ---------------------------------------------------------------------------------


def test_pages_of_one_row_list_every_consent_once_in_order(views: Views) -> None:
    ledger = views.ledger
    sid = subject(ledger)
    for _ in range(3):
        record(
            ledger,
            consent(sid, at=later(ledger), purposes=("customer_service", "advertising")),
        )

    paged = views.every_page(q.consents, sid, now=now(ledger), page_size=1)
    whole = views.read(q.consents, sid, now=now(ledger)).items

    assert len(whole) == 6
    assert paged == list(whole)


def test_a_page_token_only_works_with_the_filters_it_was_given_for(views: Views) -> None:
    ledger = views.ledger
    sid = subject(ledger)
    record(ledger, consent(sid, at=later(ledger), purposes=("customer_service", "advertising")))
    token = views.read(q.consents, sid, now=now(ledger), page_size=1).next_page_token
    assert token

    with pytest.raises(BadQuery) as caught:
        views.read(q.consents, sid, now=now(ledger), purpose="advertising", page_token=token)
    assert caught.value.field == "page_token"
    with pytest.raises(BadQuery):
        views.read(q.register, page_token=token)


@pytest.mark.parametrize(
    "token",
    ["x", "bm90IGpzb24", "W10", "\u00e9", "a" * 3000, "WyJ4Il0", "W1tdXQ", "!!!!"],
)
def test_a_page_token_the_query_did_not_give_is_a_bad_query(views: Views, token: str) -> None:
    with pytest.raises(BadQuery) as caught:
        views.read(q.register, page_token=token)
    assert caught.value.field == "page_token"


@pytest.mark.parametrize("size", [-1, 1001, 2**31 - 1])
def test_a_page_size_outside_0_to_1000_is_a_bad_query(views: Views, size: int) -> None:
    with pytest.raises(BadQuery) as caught:
        views.read(q.policy_versions, page_size=size)
    assert caught.value.field == "page_size"


@pytest.mark.parametrize(("field", "value"), [("category", "a\x00b"), ("purpose", "p" * 129)])
def test_a_filter_with_nul_or_over_128_characters_is_a_bad_query(
    views: Views, field: str, value: str
) -> None:
    with pytest.raises(BadQuery) as caught:
        views.read(q.register, **{field: value})
    assert caught.value.field == field


# --- the processing register ----------------------------------------------------------------


def test_the_register_counts_people_and_events_per_activity_and_filters_them(
    views: Views,
) -> None:
    ledger = views.ledger
    first, second = subject(ledger), subject(ledger)
    for sid in (first, second, first):
        record(ledger, collection(sid, at=later(ledger)))
    record(ledger, use(first, at=later(ledger)))
    record(
        ledger, consent(first, at=later(ledger), purposes=("advertising",), categories=(_USAGE,))
    )
    record(
        ledger,
        collection(
            first,
            at=later(ledger),
            category=_USAGE,
            source="app",
            purposes=("advertising",),
            mode="consent",
        ),
    )
    shared_at = later(ledger)
    record(ledger, share(first, at=shared_at))

    rows = views.every_page(q.register, page_size=2)
    collected = views.read(q.register, activity="collection", category=_IP).items
    shares = views.read(q.register, recipient_class="third_party_partners").items

    assert len(rows) == 4
    assert (collected[0].subjects, collected[0].events) == (2, 3)
    assert collected[0].legal_basis == "automatic"
    assert collected[0].region == "cn-mainland"
    (shared,) = shares
    assert (shared.activity, shared.category, shared.purpose) == ("share", _USAGE, "advertising")
    assert shared.first_seen == shared.last_seen == shared_at
    assert views.read(q.register, activity="use", purpose="security_detection").items[0].events == 1
    assert views.read(q.register, region="eu-west").items == ()


def test_an_unknown_register_activity_is_a_bad_query(views: Views) -> None:
    with pytest.raises(BadQuery) as caught:
        views.read(q.register, activity="sale")
    assert caught.value.field == "activity"


# --- rights-request deadlines ---------------------------------------------------------------


def _long_registered(ledger: Ledger) -> UUID:
    """A person registered 30 days ago, so requests received since are theirs to make."""
    return subject(ledger, at=now(ledger) - 30 * _DAY)


def _open(ledger: Ledger, sid: UUID, received_days_ago: int, **fields: Any) -> UUID:
    at = later(ledger)
    return ledger.execute(
        PRINCIPAL,
        c.OpenRightsRequest(
            idempotency_key=key("req"),
            occurred_at=at,
            subject=c.SubjectRef(subject_id=sid),
            kind=fields.pop("kind", RightKind.ACCESS),
            received_at=at - received_days_ago * _DAY,
            **fields,
        ),
    ).aggregate_id


def _close(ledger: Ledger, request_id: UUID) -> None:
    ledger.execute(
        PRINCIPAL,
        c.CloseRightsRequest(
            idempotency_key=key("close"),
            occurred_at=later(ledger),
            request_id=request_id,
            outcome=RequestOutcome.REFUSED,
            reason="duplicate",
        ),
    )


def test_deadlines_by_status_and_their_summary_per_kind(views: Views) -> None:
    ledger = views.ledger
    sid = _long_registered(ledger)
    overdue = _open(ledger, sid, 20)
    soon = _open(ledger, sid, 13)
    running = _open(ledger, sid, 0, kind=RightKind.CORRECTION, categories=(_IP,))
    paused = _open(ledger, sid, 10)  # paused before it fell due (§6.4)
    ledger.execute(
        PRINCIPAL,
        c.PauseRightsRequest(
            idempotency_key=key("p"), occurred_at=later(ledger), request_id=paused, reason="id"
        ),
    )
    late = _open(ledger, sid, 20)
    _close(ledger, late)
    on_time = _open(ledger, sid, 0)
    _close(ledger, on_time)
    at = now(ledger)

    def ids(status: q.DeadlineStatus, **filters: Any) -> set[UUID]:
        got = views.read(q.deadlines, now=at, status=status, **filters)
        return {r.request_id for r in got.items}

    assert ids(q.DeadlineStatus.ALL) == {overdue, soon, running, paused, late, on_time}
    assert ids(q.DeadlineStatus.OPEN) == {overdue, soon, running, paused}
    assert ids(q.DeadlineStatus.PAUSED) == {paused}
    assert ids(q.DeadlineStatus.OVERDUE) == {overdue}
    assert ids(q.DeadlineStatus.DUE_SOON) == {soon}
    assert ids(q.DeadlineStatus.DUE_SOON, due_within_days=20) == {soon, running}
    assert ids(q.DeadlineStatus.CLOSED) == {late, on_time}
    assert ids(q.DeadlineStatus.CLOSED_LATE) == {late}
    assert ids(q.DeadlineStatus.ALL, kind=RightKind.CORRECTION) == {running}

    page = views.read(q.deadlines, now=at)
    rows = {r.request_id: r for r in page.items}
    assert rows[paused].status is RequestStatus.PAUSED
    assert not rows[paused].overdue
    assert rows[overdue].overdue
    assert rows[soon].due_soon
    assert rows[late].late
    assert rows[late].outcome is RequestOutcome.REFUSED
    assert [r.due_at for r in page.items] == sorted(r.due_at for r in page.items)
    assert page.as_of == at
    access, correction = page.summary
    assert (access.kind, correction.kind) == (RightKind.ACCESS, RightKind.CORRECTION)
    assert (access.total, access.open, access.paused, access.overdue) == (5, 3, 1, 1)
    assert (access.due_soon, access.closed, access.closed_late) == (1, 2, 1)
    assert (correction.total, correction.open, correction.due_soon) == (1, 1, 0)
    only = views.read(q.deadlines, now=at, kind=RightKind.CORRECTION).summary
    assert [s.kind for s in only] == [RightKind.CORRECTION]


@pytest.mark.parametrize(("days_paused", "overdue"), [(19, False), (21, True)])
def test_a_request_paused_past_the_latest_it_may_be_due_is_overdue__clause_6_4(
    views: Views, days_paused: int, overdue: bool
) -> None:
    """Received 10 days ago and paused: 15 days of deadline and 15 of extension run out 20
    days from now, after which it can only end late, resumed or not."""
    ledger = views.ledger
    request = _open(ledger, _long_registered(ledger), 10)
    ledger.execute(
        PRINCIPAL,
        c.PauseRightsRequest(
            idempotency_key=key("p"), occurred_at=later(ledger), request_id=request, reason="id"
        ),
    )
    at = later(ledger, days_paused * 24 * 3600)

    page = views.read(q.deadlines, now=at)
    listed = views.read(q.deadlines, now=at, status=q.DeadlineStatus.OVERDUE)

    (row,) = page.items
    assert (row.status, row.overdue) == (RequestStatus.PAUSED, overdue)
    assert [r.request_id for r in listed.items] == ([request] if overdue else [])
    assert page.summary[0].overdue == int(overdue)


def test_deadline_pages_keep_their_token_while_time_moves_on(views: Views) -> None:
    ledger = views.ledger
    sid = _long_registered(ledger)
    opened = {_open(ledger, sid, days) for days in (1, 2, 3)}
    first = views.read(q.deadlines, now=now(ledger), page_size=2)
    rest = views.read(
        q.deadlines, now=later(ledger, 3600), page_size=2, page_token=first.next_page_token
    )

    assert {r.request_id for r in (*first.items, *rest.items)} == opened
    assert rest.next_page_token == ""


@pytest.mark.parametrize("days", [-1, 367])
def test_due_within_days_outside_0_to_366_is_a_bad_query(views: Views, days: int) -> None:
    with pytest.raises(BadQuery) as caught:
        views.read(q.deadlines, now=now(views.ledger), due_within_days=days)
    assert caught.value.field == "due_within_days"


# --- retention due --------------------------------------------------------------------------


def test_retention_due_lists_data_held_past_its_period_longest_overdue_first(
    views: Views,
) -> None:
    ledger = views.ledger
    seed = {cat.id: cat.retention_days for cat in load_seed_policy().categories}
    old, recent = subject(ledger), subject(ledger)
    record(ledger, collection(old, at=later(ledger)))
    record(ledger, consent(old, at=later(ledger), purposes=("advertising",), categories=(_USAGE,)))
    record(
        ledger,
        collection(old, at=later(ledger), category=_USAGE, source="app", purposes=("advertising",)),
    )
    record(ledger, collection(recent, at=ledger.clock.advance(30 * _DAY)))
    start = now(ledger) - 30 * _DAY

    assert views.read(q.retention_due, now=start + 89 * _DAY, retention_days=seed).items == ()
    due = views.read(q.retention_due, now=start + 100 * _DAY, retention_days=seed).items
    assert [(r.subject_id, r.category, r.retention_days) for r in due] == [(old, _IP, 90)]
    assert due[0].due_at == due[0].last_at + 90 * _DAY
    assert due[0].in_policy

    much_later = start + 400 * _DAY
    every = views.read(q.retention_due, now=much_later, retention_days=seed).items
    assert [(r.subject_id, r.category) for r in every] == [
        (old, _IP),
        (recent, _IP),
        (old, _USAGE),
    ]
    usage = views.read(q.retention_due, now=much_later, retention_days=seed, category=_USAGE)
    assert [r.category for r in usage.items] == [_USAGE]
    paged = views.every_page(q.retention_due, now=much_later, retention_days=seed, page_size=1)
    assert paged == list(every)


def test_a_category_the_policy_no_longer_declares_is_due_from_its_last_collection(
    views: Views,
) -> None:
    ledger = views.ledger
    sid = subject(ledger)
    record(ledger, collection(sid, at=later(ledger)))

    (row,) = views.read(q.retention_due, now=later(ledger), retention_days={}).items

    assert (row.category, row.in_policy, row.retention_days) == (_IP, False, 0)
    assert row.due_at == row.last_at


# --- policy versions and notices ------------------------------------------------------------


def _publish_v2(ledger: Ledger) -> int:
    return record(
        ledger,
        c.PublishPolicy(
            idempotency_key=key("pub"),
            occurred_at=later(ledger),
            policy=load_seed_policy().model_copy(update={"version": "2"}),
            effective_at=now(ledger) + 30 * _DAY,
            major=True,
            changes=("notice by hand",),
        ),
    )


def _notice(ledger: Ledger, kind: type[c.NotifyPolicy | c.AcknowledgePolicy], sid: UUID) -> int:
    return record(
        ledger,
        kind(
            idempotency_key=key("notice"),
            occurred_at=later(ledger),
            subject=c.SubjectRef(subject_id=sid),
            version="2",
        ),
    )


def test_policy_versions_list_reasons_and_notice_counts_and_notices_filter_by_status(
    views: Views,
) -> None:
    ledger = views.ledger
    told, acknowledged, silent = subject(ledger), subject(ledger), subject(ledger)
    published = _publish_v2(ledger)
    views.runner.catch_up()
    _notice(ledger, c.NotifyPolicy, told)
    notified_at = _notice(ledger, c.NotifyPolicy, acknowledged)
    acked_at = _notice(ledger, c.AcknowledgePolicy, acknowledged)

    first, second = views.read(q.policy_versions).items

    assert (first.version, first.previous_version, second.version) == ("1", None, "2")
    assert second.major
    assert "notice by hand" in second.reasons
    assert second.position == published
    assert (second.notified, second.acknowledged) == (2, 1)
    assert second.effective_at - second.published_at == 30 * _DAY

    def notices(status: q.NoticeStatus) -> set[UUID]:
        return {r.subject_id for r in views.read(q.policy_notices, "2", status=status).items}

    assert notices(q.NoticeStatus.ALL) == {told, acknowledged}
    assert notices(q.NoticeStatus.NOTIFIED) == {told, acknowledged}
    assert notices(q.NoticeStatus.UNACKNOWLEDGED) == {told}
    assert notices(q.NoticeStatus.ACKNOWLEDGED) == {acknowledged}
    assert silent not in notices(q.NoticeStatus.ALL)
    (row,) = views.read(q.policy_notices, "2", status=q.NoticeStatus.ACKNOWLEDGED).items
    assert (row.notified_position, row.acknowledged_position) == (notified_at, acked_at)
    assert row.method == "popup"
    assert [r.version for r in views.every_page(q.policy_versions, page_size=1)] == ["1", "2"]


def test_notices_of_a_version_never_published_are_not_found(views: Views) -> None:
    with pytest.raises(PolicyVersionNotFound):
        views.read(q.policy_notices, "9")
    with pytest.raises(BadQuery) as caught:
        views.read(q.policy_notices, "")
    assert caught.value.field == "version"
    with pytest.raises(BadQuery):
        views.read(q.policy_notices, "9" * 33)


def test_queries_read_a_connection_only(views: Views) -> None:
    """Every query is a read: the views are byte-for-byte the same after each."""
    ledger = views.ledger
    sid = subject(ledger)
    record(ledger, collection(sid, at=later(ledger)))
    views.runner.catch_up()

    def dump(conn: Connection) -> list[Any]:
        return [
            sorted(map(tuple, conn.execute(table.select())))
            for table in projections.store.METADATA.sorted_tables
        ]

    before = views.read(dump)
    views.read(q.subject_view, sid)
    views.read(q.consents, sid, now=now(ledger), include_withdrawn=True)
    views.read(q.register)
    views.read(q.deadlines, now=now(ledger))
    views.read(q.retention_due, now=now(ledger), retention_days={})
    views.read(q.policy_versions)
    assert views.read(dump) == before

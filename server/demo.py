"""The scripted demo: a realistic history under the seed policy, recorded one command a step.

The ledger accepts each step (and says where in the log it went) or refuses it with the reason
and the policy clause. The clock is fixed and moved between steps, so the story reads the same
every run; the personal values are fresh random ones each run (`DemoValues`) and are never
printed: the output names people only by their pseudonyms.
"""

from __future__ import annotations

import secrets
from dataclasses import astuple, dataclass
from datetime import date, datetime, timedelta
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

from pydantic import SecretStr
from rich.console import Console
from rich.text import Text

from ledger import commands as cmd
from ledger.application import Ledger, Recorded
from ledger.clock import FixedClock
from ledger.errors import KeyShreddedError, LedgerError, Refused
from ledger.errors import RefusalReason as R
from ledger.events import CollectionMode, ConsentGiver, RequestOutcome
from ledger.policy import Policy, RightKind

__all__ = ["DEMO_START", "DEMO_ZONE", "DemoFailed", "DemoSummary", "DemoValues", "run_demo"]

DEMO_ZONE = ZoneInfo("Asia/Shanghai")
DEMO_START = datetime(2026, 3, 2, 9, 0, tzinfo=DEMO_ZONE)
"""The demo's clock starts here every run (a Monday morning in Shanghai)."""

PRINCIPAL = "pdl-demo"
SEED_POLICY_ID = "sossen-privacy-policy"
ADS_PARTNER = "Example Ads Ltd"

Ids = tuple[str, ...]
DemoCommand = (
    cmd.RecordingCommand | cmd.RegisterSubject | cmd.OpenRightsRequest | cmd.CloseRightsRequest
)


class DemoFailed(LedgerError):
    """The demo cannot go on: the policy in force is not the seed, or a step it needs failed."""


@dataclass(frozen=True, slots=True)
class DemoValues:
    """The personal values one run records; fresh and random each run, and never printed."""

    adult_account: str
    minor_account: str
    guardian_account: str
    adult_page: str
    minor_page: str
    ip_address: str
    gps_fix: str

    @classmethod
    def generate(cls) -> DemoValues:
        tag, rnd = secrets.token_hex(6), secrets.randbelow
        return cls(
            adult_account=f"demo-adult-{tag}",
            minor_account=f"demo-minor-{tag}",
            guardian_account=f"demo-guardian-{tag}",
            adult_page=f"/energy/dashboard?session={secrets.token_hex(8)}",
            minor_page=f"/energy/tips?session={secrets.token_hex(8)}",
            ip_address=f"10.{rnd(256)}.{rnd(256)}.{1 + rnd(254)}",
            gps_fix=f"{31.2 + rnd(100_000) / 1e6:.6f},{121.4 + rnd(100_000) / 1e6:.6f}",
        )

    def all(self) -> tuple[str, ...]:
        """Every value, for checking that none of them shows up where it must not."""
        return tuple(str(v) for v in astuple(self))


@dataclass(frozen=True, slots=True)
class DemoSummary:
    """What a run did."""

    accepted: int
    refused: int
    unexpected: int
    adult: UUID
    minor: UUID
    log_size: int


def run_demo(
    ledger: Ledger, clock: FixedClock, console: Console, values: DemoValues
) -> DemoSummary:
    """Record the scripted history, printing each step; return what happened."""
    clock.set(DEMO_START)
    published, policy = ledger.policy_in_force(clock.now())
    if policy.policy_id != SEED_POLICY_ID:
        msg = f"the demo follows the bundled seed policy; {policy.policy_id!r} is in force"
        raise DemoFailed(msg)
    s = _Script(ledger, clock, console)
    s.note(f"pdl demo: policy {policy.policy_id} version {published.version}, clock {DEMO_ZONE}")
    adult, minor = _people(s, values)
    _collection_and_consent(s, values, adult, minor)
    _sharing(s, adult)
    _withdrawal(s, adult)
    _deletion(s, policy, minor)
    return DemoSummary(
        accepted=s.accepted,
        refused=s.refused,
        unexpected=s.unexpected,
        adult=adult,
        minor=minor,
        log_size=ledger.recorder.max_notification_id() or 0,
    )


# --- the story ------------------------------------------------------------------------------


def _people(s: _Script, v: DemoValues) -> tuple[UUID, UUID]:
    adult = s.step(
        "register an adult (namespace app, born 1988)",
        cmd.RegisterSubject(
            **s.at(0, 9, 0), namespace="app", account_id=SecretStr(v.adult_account), birth_year=1988
        ),
    )
    minor_account = SecretStr(v.minor_account)
    s.step(
        "register a minor (born 2011, aged 15) without a guardian",
        cmd.RegisterSubject(
            **s.at(0, 9, 5), namespace="app", account_id=minor_account, birth_year=2011
        ),
        expect=R.MINOR_WITHOUT_GUARDIAN,
    )
    minor = s.step(
        "register the minor with their guardian's account",
        cmd.RegisterSubject(
            **s.at(0, 9, 6),
            namespace="app",
            account_id=minor_account,
            birth_year=2011,
            guardian_account_id=SecretStr(v.guardian_account),
        ),
    )
    return s.subject(adult, "the adult"), s.subject(minor, "the minor")


def _collection_and_consent(s: _Script, v: DemoValues, adult: UUID, minor: UUID) -> None:
    s.step(
        "collect the adult's usage log by default (sdk, for product_analysis)",
        _collect(
            s.at(0, 9, 10), adult, "network_log.usage", "sdk", "product_analysis", page=v.adult_page
        ),
    )
    s.step(
        "collect the adult's IP address by default (server_logs, for security_detection)",
        _collect(
            s.at(0, 9, 11),
            adult,
            "network_log.ip_address",
            "server_logs",
            "security_detection",
            ip=v.ip_address,
        ),
    )
    gps = "collect the adult's GPS fix (app, for customer_service)"
    s.step(
        f"{gps} before any consent",
        _collect(s.at(0, 9, 15), adult, "location.gps", "app", "customer_service", fix=v.gps_fix),
        expect=R.SENSITIVE_CATEGORY_WITHOUT_CONSENT,
    )
    s.step(
        "the adult allows location for customer_service (device_permission)",
        _consent(
            s.at(0, 9, 16),
            adult,
            ("customer_service",),
            ("location.gps",),
            method="device_permission",
        ),
    )
    s.step(
        f"{gps} after consent",
        _collect(s.at(0, 9, 17), adult, "location.gps", "app", "customer_service", fix=v.gps_fix),
    )
    analysis = ("product_analysis",), ("network_log.usage",)
    s.step(
        "the minor consents to product_analysis by themselves (popup)",
        _consent(s.at(0, 9, 30), minor, *analysis),
        expect=R.MINOR_CONSENT_REQUIRES_GUARDIAN,
    )
    s.step(
        "the guardian consents to product_analysis for the minor (popup)",
        _consent(s.at(0, 9, 32), minor, *analysis, given_by=ConsentGiver.GUARDIAN),
    )
    s.step(
        "collect the minor's usage log (sdk, for product_analysis)",
        _collect(
            s.at(0, 9, 35), minor, "network_log.usage", "sdk", "product_analysis", page=v.minor_page
        ),
    )


def _sharing(s: _Script, adult: UUID) -> None:
    ads = ("network_log.usage", "device_id.idfa", "device_id.android_id")
    s.step(
        "the adult consents to advertising with usage logs and ad identifiers (popup)",
        _consent(s.at(0, 10, 0), adult, ("advertising",), ads),
    )
    s.step(
        f"share the adult's GPS fix with {ADS_PARTNER} for advertising",
        _share(s.at(0, 10, 5), adult, "location.gps"),
        expect=R.CATEGORY_NOT_NEEDED_FOR_PURPOSE,
    )
    s.step(
        f"share the adult's usage log with {ADS_PARTNER} for advertising",
        _share(s.at(0, 10, 6), adult, "network_log.usage"),
    )
    s.step(
        "sell the adult's usage log to Example Data Broker Co",
        _share(s.at(0, 10, 10), adult, "network_log.usage", "Example Data Broker Co", sale=True),
        expect=R.SALE_PROHIBITED,
    )


def _withdrawal(s: _Script, adult: UUID) -> None:
    s.step(
        "the adult withdraws consent to product_analysis (settings)",
        cmd.WithdrawConsent(
            **s.at(1, 10, 0), subject=_ref(adult), purposes=("product_analysis",), method="settings"
        ),
    )
    s.step(
        "use the adult's usage log for product_analysis",
        _use(s.at(1, 10, 5), adult, "network_log.usage", "product_analysis", "consent"),
        expect=R.CONSENT_WITHDRAWN,
    )
    s.step(
        "use the adult's IP address for security_detection (basis contract)",
        _use(s.at(1, 10, 6), adult, "network_log.ip_address", "security_detection", "contract"),
    )


def _deletion(s: _Script, policy: Policy, minor: UUID) -> None:
    opened = s.step(
        "the guardian asks to delete the minor's data (ground account_cancelled)",
        cmd.OpenRightsRequest(
            **s.at(2, 11, 0),
            subject=_ref(minor),
            kind=RightKind.DELETION,
            ground="account_cancelled",
        ),
    )
    if opened is None:
        raise DemoFailed("the deletion request was not recorded")
    request = s.ledger.rights_request(opened.aggregate_id)
    deadline = policy.response_deadline
    s.note(
        f"    request {request.request_id}: due {_local(request.due_at)} "
        f"({deadline.days} {request.deadline_kind} days from receipt, {deadline.clause})"
    )
    s.step(
        "close the deletion request as fulfilled",
        cmd.CloseRightsRequest(
            **s.at(7, 15, 0),
            request_id=request.request_id,
            outcome=RequestOutcome.FULFILLED,
            reason="identity of the guardian verified; all data erased",
        ),
    )
    closed, state = s.ledger.rights_request(request.request_id), s.ledger.subject_state(_ref(minor))
    timing = (
        "late" if closed.late else f"{(closed.due_at - s.clock.now()).days} days before it was due"
    )
    s.note(
        f"    closed {timing}: the minor is erased={state.erased}, "
        f"account cancelled={state.cancelled}, "
        f"data key shredded={state.key_shredded}, sealed values {_readability(s.ledger, minor)}"
    )
    s.step(
        "use the minor's usage log after the erasure",
        _use(s.at(7, 15, 5), minor, "network_log.usage", "product_analysis", "consent"),
        expect=R.SUBJECT_ERASED,
    )


# --- command builders -----------------------------------------------------------------------


def _ref(subject_id: UUID) -> cmd.SubjectRef:
    return cmd.SubjectRef(subject_id=subject_id)


def _collect(
    stamp: dict[str, Any], who: UUID, category: str, source: str, purpose: str, **values: str
) -> cmd.RecordCollection:
    sensitive = category.startswith("location.")
    return cmd.RecordCollection(
        **stamp,
        subject=_ref(who),
        category=category,
        source=source,
        purposes=(purpose,),
        mode=CollectionMode.CONSENT if sensitive else CollectionMode.AUTOMATIC,
        values={k: SecretStr(v) for k, v in values.items()},
    )


def _consent(
    stamp: dict[str, Any], who: UUID, purposes: Ids, categories: Ids, **more: Any
) -> cmd.GiveConsent:
    return cmd.GiveConsent(
        **stamp, subject=_ref(who), purposes=purposes, categories=categories, **more
    )


def _share(
    stamp: dict[str, Any], who: UUID, category: str, to: str = ADS_PARTNER, **more: Any
) -> cmd.RecordShare:
    return cmd.RecordShare(
        **stamp,
        subject=_ref(who),
        categories=(category,),
        recipient=to,
        recipient_class="third_party_partners",
        purpose="advertising",
        **more,
    )


def _use(
    stamp: dict[str, Any], who: UUID, category: str, purpose: str, basis: str
) -> cmd.RecordUse:
    return cmd.RecordUse(
        **stamp, subject=_ref(who), categories=(category,), purpose=purpose, legal_basis=basis
    )


# --- running and printing -------------------------------------------------------------------


class _Script:
    """Moves the clock, records each step and prints its outcome, counting as it goes."""

    def __init__(self, ledger: Ledger, clock: FixedClock, console: Console) -> None:
        self.ledger, self.clock, self.console = ledger, clock, console
        self.run_id = secrets.token_hex(6)
        self.accepted = self.refused = self.unexpected = self._steps = 0
        self._day: date | None = None
        self._ok, self._no = ("✓", "✗") if _can_encode(console, "✓✗") else ("+", "x")

    def at(self, day: int, hour: int, minute: int) -> dict[str, Any]:
        """Set the clock to a local time on a day of the story; the common command fields."""
        when = (DEMO_START + timedelta(days=day)).replace(hour=hour, minute=minute)
        if when.date() != self._day:
            self._day = when.date()
            self.console.print(Text(f"-- {when:%a %Y-%m-%d} ({DEMO_ZONE})", style="bold"))
        self.clock.set(when)
        self._steps += 1
        return {"idempotency_key": f"demo-{self.run_id}-{self._steps:02d}", "occurred_at": when}

    def step(
        self, description: str, command: DemoCommand, expect: R | None = None
    ) -> Recorded | None:
        try:
            recorded = self.ledger.execute(PRINCIPAL, command)
        except Refused as refusal:
            self.refused += 1
            outcome = f"{refusal.reason.value} ({refusal.clause}): {refusal.detail}"
            missed = None if refusal.reason is expect else expect or "accepted"
            self._line(f"{self._no} refused  ", "red", description, outcome, missed)
            return None
        except LedgerError as error:
            self._line(
                f"{self._no} error    ", "red", description, str(error), expect or "accepted"
            )
            return None
        self.accepted += 1
        outcome = f"({recorded.event_type} @ position {recorded.position})"
        self._line(f"{self._ok} accepted ", "green", description, outcome, expect)
        return recorded

    def note(self, text: str) -> None:
        self.console.print(Text(text, style="dim" if text.startswith(" ") else ""))

    def subject(self, recorded: Recorded | None, who: str) -> UUID:
        if recorded is None or recorded.subject_id is None:
            raise DemoFailed(f"the registration of {who} was not recorded")
        return recorded.subject_id

    def _line(
        self, mark: str, style: str, description: str, outcome: str, expected: object
    ) -> None:
        line = Text(mark, style=style)
        line.append(f" {description}  ")
        line.append(outcome, style="dim" if style == "green" else style)
        if expected is not None:
            self.unexpected += 1
            line.append(f"  [NOT AS SCRIPTED: expected {expected}]", style="bold yellow")
        self.console.print(line)


def _readability(ledger: Ledger, subject_id: UUID) -> str:
    """Whether the subject's sealed values can still be opened (never what they are)."""
    try:
        ledger.reveal(ledger.history(subject_id)[0])
    except KeyShreddedError:
        return "unreadable"
    return "STILL READABLE"


def _local(instant: datetime) -> str:
    return instant.astimezone(DEMO_ZONE).isoformat(sep=" ", timespec="minutes")


def _can_encode(console: Console, text: str) -> bool:
    try:
        text.encode(console.encoding)
    except (UnicodeEncodeError, LookupError):
        return False
    return True

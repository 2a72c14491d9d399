"""Proto requests to ledger commands: the first step of a servicer (CONVENTIONS §8).

Pure functions, no I/O. proto3 cannot tell "not given" from a zero value, so an empty string, a
0, an unset message or a `*_UNSPECIFIED` enum means "not given" and the command's default
applies (a required field without one is reported as required). Each command is validated by
its own pydantic model; every problem becomes one `InvalidRequest` whose violations name the
PROTO field path (`meta.occurred_at`, `subject.account.account_id`, `purposes[0]`, ...) and
never carry a field's value. The other direction, results to proto, is `server.convert_results`,
re-exported here so a servicer needs only this module.

The high-rate recording commands (collection, use, share, consent given and withdrawn,
correction) are built directly first (`server.convert_direct`); a request with any fault goes
through the reader, so it is answered exactly as before.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

from ledger import commands as cmd
from ledger.application import ItemOutcome
from ledger.errors import PolicyError
from ledger.events import CollectionMode
from ledger.policy import parse_policy
from server._pb.pdl.v1 import ledger_service_pb2 as lpb
from server._pb.pdl.v1 import policy_service_pb2 as ppb
from server._pb.pdl.v1 import rights_service_pb2 as rpb
from server.convert_direct import (
    collection_fields,
    consent_fields,
    correction_fields,
    direct_first,
    share_fields,
    use_fields,
    withdrawal_fields,
)
from server.convert_results import (
    CONSENT_GIVERS,
    REQUEST_OUTCOMES,
    RIGHT_KINDS,
    history_event,
    item_outcome,
    policy_version,
    recorded,
    rights_request,
    subject_state,
    timestamp,
)
from server.errors import FieldViolation, InvalidRequest
from server.request_reader import (
    ACCOUNT,
    CORRECTION,
    GIVER_NAMES,
    KIND_NAMES,
    OUTCOME_NAMES,
    Draft,
    instant,
    join_path,
    subject_ref,
    uuid_field,
)

__all__ = [
    "batch_item",
    "batch_response",
    "cancel_account",
    "close_rights_request",
    "correct_data",
    "erase_subject",
    "extend_rights_request",
    "give_consent",
    "history_event",
    "instant",
    "item_outcome",
    "open_rights_request",
    "pause_rights_request",
    "policy_version",
    "publish_policy",
    "record_collection",
    "record_share",
    "record_use",
    "recorded",
    "register_subject",
    "resume_rights_request",
    "rights_request",
    "subject_ref",
    "subject_state",
    "timestamp",
    "uuid_field",
    "withdraw_consent",
]


def register_subject(req: lpb.RegisterSubjectRequest, now: datetime) -> cmd.RegisterSubject:
    """RegisterSubject: birth year 0 means unknown, empty jurisdiction means "cn"."""
    d = Draft(req.meta, now, ACCOUNT)
    d.text("namespace", req.account.namespace, "account.namespace", keep_empty=True)
    d.text("account_id", req.account.account_id, "account.account_id", keep_empty=True)
    if req.birth_year:
        d.data["birth_year"] = req.birth_year
    d.data["minor"] = req.minor
    d.uuid("guardian_subject_id", req.guardian_subject_id)
    d.texts_of(req, "guardian_account_id", "jurisdiction", "storage_region", "cross_border_basis")
    return d.build(cmd.RegisterSubject)


@direct_first(cmd.RecordCollection, collection_fields)
def record_collection(req: lpb.RecordCollectionRequest, now: datetime) -> cmd.RecordCollection:
    """RecordCollection: `with_consent` chooses the consent mode, else automatic."""
    d = Draft(req.meta, now, {"mode": "with_consent"})
    d.subject(req.subject)
    d.texts("purposes", req.purposes)
    d.data["mode"] = CollectionMode.CONSENT if req.with_consent else CollectionMode.AUTOMATIC
    d.mapping("values", req.values)
    d.texts("fields", req.fields)
    d.texts_of(req, "category", "source", "reference", "storage_region", "cross_border_basis")
    return d.build(cmd.RecordCollection)


@direct_first(cmd.RecordUse, use_fields)
def record_use(req: lpb.RecordUseRequest, now: datetime) -> cmd.RecordUse:
    """RecordUse: empty legal basis means "consent"."""
    d = Draft(req.meta, now)
    d.subject(req.subject)
    d.texts("categories", req.categories)
    d.texts_of(req, "purpose", "legal_basis")
    return d.build(cmd.RecordUse)


@direct_first(cmd.RecordShare, share_fields)
def record_share(req: lpb.RecordShareRequest, now: datetime) -> cmd.RecordShare:
    """RecordShare: empty legal basis means "consent", empty region the policy's."""
    d = Draft(req.meta, now)
    d.subject(req.subject)
    d.texts("categories", req.categories)
    d.texts_of(req, "recipient", "recipient_class", "purpose", "legal_basis", "legal_ground")
    d.texts_of(req, "destination_region", "cross_border_basis")
    d.data["anonymised"] = req.anonymised
    d.data["sale"] = req.sale
    return d.build(cmd.RecordShare)


@direct_first(cmd.GiveConsent, consent_fields)
def give_consent(req: lpb.GiveConsentRequest, now: datetime) -> cmd.GiveConsent:
    """GiveConsent: an unspecified giver is the person, an empty method "popup"."""
    d = Draft(req.meta, now)
    d.subject(req.subject)
    d.texts("purposes", req.purposes)
    d.texts("categories", req.categories)
    d.choice("given_by", req.given_by, CONSENT_GIVERS, GIVER_NAMES, required=False)
    d.texts_of(req, "method")
    return d.build(cmd.GiveConsent)


@direct_first(cmd.WithdrawConsent, withdrawal_fields)
def withdraw_consent(req: lpb.WithdrawConsentRequest, now: datetime) -> cmd.WithdrawConsent:
    """WithdrawConsent: at least one purpose or category; empty method means "settings"."""
    d = Draft(req.meta, now, {"": "purposes"})
    d.subject(req.subject)
    d.texts("purposes", req.purposes)
    d.texts("categories", req.categories)
    d.choice("withdrawn_by", req.withdrawn_by, CONSENT_GIVERS, GIVER_NAMES, required=False)
    d.texts_of(req, "method")
    return d.build(cmd.WithdrawConsent)


@direct_first(cmd.CorrectData, correction_fields)
def correct_data(req: lpb.CorrectDataRequest, now: datetime) -> cmd.CorrectData:
    """CorrectData."""
    d = Draft(req.meta, now)
    d.subject(req.subject)
    d.texts_of(req, "category")
    d.mapping("values", req.values)
    return d.build(cmd.CorrectData)


def erase_subject(req: lpb.EraseSubjectRequest, now: datetime) -> cmd.EraseSubject:
    """EraseSubject: no categories means everything, and the person's key."""
    d = Draft(req.meta, now)
    d.subject(req.subject)
    d.texts_of(req, "ground")
    d.texts("categories", req.categories)
    return d.build(cmd.EraseSubject)


def cancel_account(req: lpb.CancelAccountRequest, now: datetime) -> cmd.CancelAccount:
    """CancelAccount."""
    d = Draft(req.meta, now)
    d.subject(req.subject)
    return d.build(cmd.CancelAccount)


def batch_item(item: lpb.BatchItem, now: datetime) -> cmd.RecordingCommand:
    """One item of RecordBatch; violations are named under the item's oneof member."""
    which = item.WhichOneof("command")
    try:
        match which:
            case "collection":
                return record_collection(item.collection, now)
            case "use":
                return record_use(item.use, now)
            case "share":
                return record_share(item.share, now)
            case "consent":
                return give_consent(item.consent, now)
            case "withdrawal":
                return withdraw_consent(item.withdrawal, now)
            case "correction":
                return correct_data(item.correction, now)
    except InvalidRequest as exc:
        raise InvalidRequest(
            [FieldViolation(join_path(str(which), v.field), v.description) for v in exc.violations]
        ) from None
    members = "collection, use, share, consent, withdrawal, correction"
    raise InvalidRequest([FieldViolation("command", f"required: one of {members}")])


def batch_response(outcomes: Sequence[ItemOutcome]) -> lpb.RecordBatchResponse:
    """RecordBatch's answer: each item's `recorded` (filled in place, the same fields as
    `recorded` gives) or the status that item alone would have had, and the recorded count."""
    response = lpb.RecordBatchResponse()
    add = response.outcomes.add
    count = 0
    for outcome in outcomes:
        done = outcome.recorded
        if done is None:
            add().CopyFrom(item_outcome(outcome))
            continue
        count += 1
        message = add().recorded
        message.aggregate_id = aggregate_id = str(done.aggregate_id)
        if done.subject_id is not None:  # most often the aggregate itself: one str() less
            same = done.subject_id == done.aggregate_id
            message.subject_id = aggregate_id if same else str(done.subject_id)
        message.version = done.version
        message.position = done.position
        message.event_type = done.event_type
        message.replayed = done.replayed
    response.recorded_count = count
    return response


# --- RightsRequestService ------------------------------------------------------------------


def open_rights_request(req: rpb.OpenRightsRequestRequest, now: datetime) -> cmd.OpenRightsRequest:
    """OpenRightsRequest: the kind is required; unset received-at means occurred-at."""
    d = Draft(req.meta, now, {"": "purposes"})
    d.subject(req.subject)
    d.choice("kind", req.kind, RIGHT_KINDS, KIND_NAMES, required=True)
    d.texts_of(req, "ground")
    d.texts("purposes", req.purposes)
    d.texts("categories", req.categories)
    d.time("received_at", req, "received_at", "received_at")
    return d.build(cmd.OpenRightsRequest)


def extend_rights_request(
    req: rpb.ExtendRightsRequestRequest, now: datetime
) -> cmd.ExtendRightsRequest:
    """ExtendRightsRequest: days 0 means not given."""
    d = Draft(req.meta, now)
    d.uuid("request_id", req.request_id)
    if req.days:
        d.data["days"] = req.days
    d.texts_of(req, "reason")
    return d.build(cmd.ExtendRightsRequest)


def pause_rights_request(
    req: rpb.PauseRightsRequestRequest, now: datetime
) -> cmd.PauseRightsRequest:
    """PauseRightsRequest."""
    d = Draft(req.meta, now)
    d.uuid("request_id", req.request_id)
    d.texts_of(req, "reason")
    return d.build(cmd.PauseRightsRequest)


def resume_rights_request(
    req: rpb.ResumeRightsRequestRequest, now: datetime
) -> cmd.ResumeRightsRequest:
    """ResumeRightsRequest."""
    d = Draft(req.meta, now)
    d.uuid("request_id", req.request_id)
    return d.build(cmd.ResumeRightsRequest)


def close_rights_request(
    req: rpb.CloseRightsRequestRequest, now: datetime
) -> cmd.CloseRightsRequest:
    """CloseRightsRequest: the outcome is required; a correction when either part is given."""
    d = Draft(req.meta, now, CORRECTION)
    d.uuid("request_id", req.request_id)
    d.choice("outcome", req.outcome, REQUEST_OUTCOMES, OUTCOME_NAMES, required=True)
    d.texts_of(req, "reason")
    if req.correction_category or req.correction_values:
        part = Draft(None, None)
        part.text("category", req.correction_category, "correction_category")
        part.mapping("values", req.correction_values, "correction_values")
        d.problems.extend(part.problems)
        d.data["correction"] = part.data
    return d.build(cmd.CloseRightsRequest)


# --- PolicyService -------------------------------------------------------------------------


def publish_policy(req: ppb.PublishPolicyRequest, now: datetime) -> cmd.PublishPolicy:
    """PublishPolicy: `document_json` is parsed and validated as a policy; an unset
    `effective_at` is reported as required, not defaulted."""
    d = Draft(req.meta, now, {"policy": "document_json"})
    if len(req.document_json) > cmd.POLICY_DOCUMENT_MAX_CHARS:
        d.bad("document_json", f"at most {cmd.POLICY_DOCUMENT_MAX_CHARS} characters")
        d.time("effective_at", req, "effective_at", "effective_at")
        return d.build(cmd.PublishPolicy)
    try:
        document = json.loads(req.document_json) if req.document_json else None
    except json.JSONDecodeError as exc:
        d.bad("document_json", f"not valid JSON: {exc.msg} at character {exc.pos}")
    except (ValueError, RecursionError):
        d.bad("document_json", "not valid JSON")
    else:
        if not isinstance(document, dict):
            d.bad("document_json", "required: a JSON object")
        else:
            try:
                d.data["policy"] = parse_policy(document)
            except PolicyError as exc:
                d.bad("document_json", str(exc))
    d.time("effective_at", req, "effective_at", "effective_at")
    if req.major:  # proto3 cannot tell false from unset: false lets the ledger classify
        d.data["major"] = True
    d.texts("changes", req.changes)
    return d.build(cmd.PublishPolicy)

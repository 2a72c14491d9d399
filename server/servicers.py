"""The recording services: thin servicers, in four steps each.

Proto to command (`convert`), the application (through the group committer), result to
proto; errors become status in the interceptor. The recording principal is the
authenticated caller, taken from `CURRENT_PRINCIPAL`, never from the request.
"""

from __future__ import annotations

import asyncio
from typing import Any

from grpc import aio

from ledger import commands as cmd
from ledger.application import Ledger, Recorded
from ledger.clock import Clock
from server import convert
from server._pb.pdl.v1 import ledger_service_pb2 as lpb
from server._pb.pdl.v1 import ledger_service_pb2_grpc as lgrpc
from server._pb.pdl.v1 import policy_service_pb2 as ppb
from server._pb.pdl.v1 import policy_service_pb2_grpc as pgrpc
from server._pb.pdl.v1 import rights_service_pb2 as rpb
from server._pb.pdl.v1 import rights_service_pb2_grpc as rgrpc
from server.auth import CURRENT_PRINCIPAL
from server.errors import FieldViolation, InvalidRequest
from server.writer import Committer

Context = aio.ServicerContext[Any, Any]


class RecordingServicer:
    """What the recording servicers share: the ledger, the committer and the clock."""

    def __init__(self, ledger: Ledger, committer: Committer, clock: Clock) -> None:
        self._ledger = ledger
        self._committer = committer
        self._clock = clock

    async def _record(self, command: cmd._Command) -> Recorded:
        return await self._committer.record(CURRENT_PRINCIPAL.get().name, command)


class LedgerServicer(RecordingServicer, lgrpc.LedgerServiceServicer):
    """Records collections, uses, shares, consents, corrections, erasures."""

    def __init__(
        self, ledger: Ledger, committer: Committer, clock: Clock, max_batch_items: int
    ) -> None:
        super().__init__(ledger, committer, clock)
        self._max_batch_items = max_batch_items

    async def RegisterSubject(
        self, request: lpb.RegisterSubjectRequest, context: Context
    ) -> lpb.RegisterSubjectResponse:
        done = await self._record(convert.register_subject(request, self._clock.now()))
        return lpb.RegisterSubjectResponse(recorded=convert.recorded(done))

    async def RecordCollection(
        self, request: lpb.RecordCollectionRequest, context: Context
    ) -> lpb.RecordCollectionResponse:
        done = await self._record(convert.record_collection(request, self._clock.now()))
        return lpb.RecordCollectionResponse(recorded=convert.recorded(done))

    async def RecordUse(
        self, request: lpb.RecordUseRequest, context: Context
    ) -> lpb.RecordUseResponse:
        done = await self._record(convert.record_use(request, self._clock.now()))
        return lpb.RecordUseResponse(recorded=convert.recorded(done))

    async def RecordShare(
        self, request: lpb.RecordShareRequest, context: Context
    ) -> lpb.RecordShareResponse:
        done = await self._record(convert.record_share(request, self._clock.now()))
        return lpb.RecordShareResponse(recorded=convert.recorded(done))

    async def GiveConsent(
        self, request: lpb.GiveConsentRequest, context: Context
    ) -> lpb.GiveConsentResponse:
        done = await self._record(convert.give_consent(request, self._clock.now()))
        return lpb.GiveConsentResponse(recorded=convert.recorded(done))

    async def WithdrawConsent(
        self, request: lpb.WithdrawConsentRequest, context: Context
    ) -> lpb.WithdrawConsentResponse:
        done = await self._record(convert.withdraw_consent(request, self._clock.now()))
        return lpb.WithdrawConsentResponse(recorded=convert.recorded(done))

    async def CorrectData(
        self, request: lpb.CorrectDataRequest, context: Context
    ) -> lpb.CorrectDataResponse:
        done = await self._record(convert.correct_data(request, self._clock.now()))
        return lpb.CorrectDataResponse(recorded=convert.recorded(done))

    async def EraseSubject(
        self, request: lpb.EraseSubjectRequest, context: Context
    ) -> lpb.EraseSubjectResponse:
        done = await self._record(convert.erase_subject(request, self._clock.now()))
        return lpb.EraseSubjectResponse(recorded=convert.recorded(done))

    async def CancelAccount(
        self, request: lpb.CancelAccountRequest, context: Context
    ) -> lpb.CancelAccountResponse:
        done = await self._record(convert.cancel_account(request, self._clock.now()))
        return lpb.CancelAccountResponse(recorded=convert.recorded(done))

    async def RecordBatch(
        self, request: lpb.RecordBatchRequest, context: Context
    ) -> lpb.RecordBatchResponse:
        count = len(request.items)
        if not 0 < count <= self._max_batch_items:
            raise InvalidRequest(
                [FieldViolation("items", f"give 1 to {self._max_batch_items} items")]
            )
        now = self._clock.now()
        commands: list[cmd._Command] = []
        violations: list[FieldViolation] = []
        for index, item in enumerate(request.items):
            try:
                commands.append(convert.batch_item(item, now))
            except InvalidRequest as bad:
                violations.extend(
                    FieldViolation(f"items[{index}].{v.field}", v.description)
                    for v in bad.violations
                )
        if violations:
            raise InvalidRequest(violations)
        outcomes = await self._committer.record_many(
            CURRENT_PRINCIPAL.get().name, commands, all_or_nothing=request.all_or_nothing
        )
        return convert.batch_response(outcomes)


class RightsServicer(RecordingServicer, rgrpc.RightsRequestServiceServicer):
    """Opens, extends, pauses, resumes and closes rights requests."""

    async def _answer(self, done: Recorded) -> rpb.RightsRequest:
        state = await asyncio.to_thread(self._ledger.rights_request, done.aggregate_id)
        return convert.rights_request(state)

    async def OpenRightsRequest(
        self, request: rpb.OpenRightsRequestRequest, context: Context
    ) -> rpb.OpenRightsRequestResponse:
        done = await self._record(convert.open_rights_request(request, self._clock.now()))
        return rpb.OpenRightsRequestResponse(
            recorded=convert.recorded(done), request=await self._answer(done)
        )

    async def ExtendRightsRequest(
        self, request: rpb.ExtendRightsRequestRequest, context: Context
    ) -> rpb.ExtendRightsRequestResponse:
        done = await self._record(convert.extend_rights_request(request, self._clock.now()))
        return rpb.ExtendRightsRequestResponse(
            recorded=convert.recorded(done), request=await self._answer(done)
        )

    async def PauseRightsRequest(
        self, request: rpb.PauseRightsRequestRequest, context: Context
    ) -> rpb.PauseRightsRequestResponse:
        done = await self._record(convert.pause_rights_request(request, self._clock.now()))
        return rpb.PauseRightsRequestResponse(
            recorded=convert.recorded(done), request=await self._answer(done)
        )

    async def ResumeRightsRequest(
        self, request: rpb.ResumeRightsRequestRequest, context: Context
    ) -> rpb.ResumeRightsRequestResponse:
        done = await self._record(convert.resume_rights_request(request, self._clock.now()))
        return rpb.ResumeRightsRequestResponse(
            recorded=convert.recorded(done), request=await self._answer(done)
        )

    async def CloseRightsRequest(
        self, request: rpb.CloseRightsRequestRequest, context: Context
    ) -> rpb.CloseRightsRequestResponse:
        done = await self._record(convert.close_rights_request(request, self._clock.now()))
        return rpb.CloseRightsRequestResponse(
            recorded=convert.recorded(done), request=await self._answer(done)
        )

    async def GetRightsRequest(
        self, request: rpb.GetRightsRequestRequest, context: Context
    ) -> rpb.GetRightsRequestResponse:
        request_id = convert.uuid_field(request.request_id, "request_id")
        state = await asyncio.to_thread(self._ledger.rights_request, request_id)
        return rpb.GetRightsRequestResponse(request=convert.rights_request(state))


class PolicyServicer(RecordingServicer, pgrpc.PolicyServiceServicer):
    """Publishes policy versions and tells which is in force."""

    async def PublishPolicy(
        self, request: ppb.PublishPolicyRequest, context: Context
    ) -> ppb.PublishPolicyResponse:
        command = convert.publish_policy(request, self._clock.now())
        done = await self._record(command)
        versions = await asyncio.to_thread(self._ledger.policy_versions)
        published = next(v for v in versions if v.version == command.policy.version)
        return ppb.PublishPolicyResponse(
            recorded=convert.recorded(done), version=convert.policy_version(published)
        )

    async def GetPolicy(
        self, request: ppb.GetPolicyRequest, context: Context
    ) -> ppb.GetPolicyResponse:
        at = convert.instant(request, "at") or self._clock.now()
        published, policy = await asyncio.to_thread(self._ledger.policy_in_force, at)
        return ppb.GetPolicyResponse(
            version=convert.policy_version(published), document_json=policy.model_dump_json()
        )

"""The subject's direct event path (`Subject._emit`) leaves an aggregate exactly as the
library's own `trigger_event` would, and as replaying the stored events does, for every kind
of event it triggers."""

from __future__ import annotations

import copy
from dataclasses import asdict

from pydantic import SecretStr
from scenario import PRINCIPAL, collection, consent, key, later, ref, secret, share, subject, use
from scenario import withdrawal as withdraw

from ledger import commands as c
from ledger.application import Ledger
from ledger.subject import _FOLDS, Subject


def _commands(ledger: Ledger, sid: object) -> list[c._Command]:
    return [
        collection(sid, at=later(ledger)),  # type: ignore[arg-type]
        consent(sid, at=later(ledger)),  # type: ignore[arg-type]
        use(sid, at=later(ledger)),  # type: ignore[arg-type]
        collection(  # type: ignore[arg-type]
            sid, at=later(ledger), category="network_log.usage", purposes=("advertising",)
        ),
        consent(  # type: ignore[arg-type]
            sid,
            at=later(ledger),
            purposes=("advertising",),
            categories=("network_log.usage",),
            method="popup",
        ),
        share(sid, at=later(ledger)),  # type: ignore[arg-type]
        c.CorrectData(
            idempotency_key=key("cor"),
            occurred_at=later(ledger),
            subject=ref(sid),  # type: ignore[arg-type]
            category="network_log.ip_address",
            values={"ip": SecretStr(secret("ip"))},
        ),
        withdraw(sid, at=later(ledger)),  # type: ignore[arg-type]
    ]


def test_every_kind_emitted_directly_matches_the_library_path_and_replay(
    memory_ledger: Ledger,
) -> None:
    sid = subject(memory_ledger)
    kinds: set[str] = set()
    for command in _commands(memory_ledger, sid):
        before = memory_ledger.subject(sid)
        memory_ledger.execute(PRINCIPAL, command)
        live = memory_ledger.subject(sid)
        last = list(memory_ledger.events.get(sid, gt=before.version))
        assert len(last) == 1
        event = last[0]
        kinds.add(type(event).__name__)

        by_library = copy.deepcopy(before)
        by_library.trigger_event(type(event), payload=event.payload, timestamp=event.timestamp)  # type: ignore[attr-defined]
        assert asdict(by_library.state) == asdict(live.state)
        assert (by_library.version, by_library.modified_on) == (live.version, live.modified_on)

    assert kinds == set(_FOLDS)
    live = memory_ledger.subject(sid)
    memory_ledger._evict(sid)  # read back from the stored events alone
    replayed = memory_ledger.subject(sid)
    assert isinstance(replayed, Subject)
    assert replayed is not live
    assert asdict(replayed.state) == asdict(live.state)
    assert replayed.version == live.version

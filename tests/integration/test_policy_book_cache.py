"""Each process re-checks the policy book every second (another may publish): it reads the
book again only when its latest event has moved, not the whole book every second."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from scenario import sqlite_ledger

from ledger import commands as c
from ledger.policy import load_seed_policy
from ledger.policy_book import POLICY_BOOK_ID, TAKES_EFFECT_AFTER
from ledger.sealing import MasterKey


def test_the_book_is_read_again_only_once_another_process_published(tmp_path: Path) -> None:
    master = MasterKey.generate()
    here, there = sqlite_ledger(tmp_path, master), sqlite_ledger(tmp_path, master)
    try:
        now = here.clock.now()
        assert here.policy_in_force(now)[0].version == "1"
        reads: list[Any] = []
        get = here.repository.get

        def counting(aggregate_id: Any, *args: Any, **kwargs: Any) -> Any:
            if aggregate_id == POLICY_BOOK_ID:
                reads.append(aggregate_id)
            return get(aggregate_id, *args, **kwargs)

        here.repository.get = counting  # type: ignore[method-assign]
        for _ in range(3):
            here._book_checked = 0.0  # a second has passed
            assert here.policy_in_force(now)[0].version == "1"
        assert reads == []

        effective = now + TAKES_EFFECT_AFTER + timedelta(minutes=1)
        there.execute(
            "admin",
            c.PublishPolicy(
                idempotency_key="publish-2",
                occurred_at=now,
                policy=load_seed_policy().model_copy(update={"version": "2"}),
                effective_at=effective,
            ),
        )
        here._book_checked = 0.0
        assert here.policy_in_force(effective)[0].version == "2"
        assert reads == [POLICY_BOOK_ID]
    finally:
        for app in (here, there):
            app.close()
            app.sealer.store.close()

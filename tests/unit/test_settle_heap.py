"""`settle_heap`: what a long-running process (server, writer, projection worker) does to its
collector once started. Run in a child interpreter, so this test process keeps its own."""

from __future__ import annotations

import json
import subprocess
import sys

_PROBE = """
import gc, json
from server.runtime import YOUNG_GENERATION_THRESHOLD, settle_heap
before = gc.get_threshold()
kept = [[] for _ in range(1000)]  # start-up objects that live on
settle_heap()
settle_heap()  # twice, as the writer and `open_runtime` may both call it
print(json.dumps({"before": before, "after": gc.get_threshold(),
                  "young": YOUNG_GENERATION_THRESHOLD, "frozen": gc.get_freeze_count(),
                  "kept": len(kept)}))
"""


def test_settle_heap_freezes_start_up_and_collects_young_objects_less_often() -> None:
    done = subprocess.run(  # noqa: S603 (this interpreter, with a fixed probe)
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True, timeout=60
    )
    seen = json.loads(done.stdout)
    young, older, oldest = seen["after"]
    assert young == seen["young"] > seen["before"][0]
    assert (older, oldest) == tuple(seen["before"][1:])  # the older generations as they were
    assert seen["frozen"] >= seen["kept"]

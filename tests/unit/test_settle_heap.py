"""What a process does to its collector once started: `settle_heap` (every process that opens a
runtime) and `collect_young_less_often` (the long-running ones: server, writer, projection
worker). Run in a child interpreter, so this test process keeps its own."""

from __future__ import annotations

import json
import subprocess
import sys

_PROBE = """
import gc, json
from server.runtime import YOUNG_GENERATION_THRESHOLD, collect_young_less_often, settle_heap
before = gc.get_threshold()
kept = [[] for _ in range(1000)]  # start-up objects that live on
settle_heap()
settled = gc.get_threshold()
collect_young_less_often()
collect_young_less_often()  # twice, as a writer started again may
print(json.dumps({"before": before, "settled": settled, "after": gc.get_threshold(),
                  "young": YOUNG_GENERATION_THRESHOLD, "frozen": gc.get_freeze_count(),
                  "kept": len(kept)}))
"""


def test_settling_freezes_start_up_and_a_server_collects_young_objects_less_often() -> None:
    done = subprocess.run(  # noqa: S603 (this interpreter, with a fixed probe)
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True, timeout=60
    )
    seen = json.loads(done.stdout)
    assert seen["settled"] == seen["before"]  # settling alone leaves the thresholds be
    assert seen["frozen"] >= seen["kept"]
    young, older, oldest = seen["after"]
    assert young == seen["young"] > seen["before"][0]
    assert (older, oldest) == tuple(seen["before"][1:])  # the older generations as they were

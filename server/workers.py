"""Projection workers: `pdl project` keeps views up to date in processes of their own.

For PostgreSQL deployments, where many `pdl serve` processes write and none should also fold
views, each worker process runs the projection runner for its share of the views; a view
belongs to exactly one worker. A worker stops cleanly on SIGTERM or SIGINT (the page in hand is
committed or not at all), and resumes from its tracking positions when started again.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

from projections import ledger_runner
from projections.runner import Progress
from server.runtime import Runtime, collect_young_less_often, open_runtime
from server.settings import load_settings

__all__ = ["catch_up", "follow", "run_workers", "split"]


def split(names: Sequence[str], workers: int) -> list[tuple[str, ...]]:
    """Deal the views out to at most `workers` groups, in view order."""
    workers = max(1, min(workers, len(names)))
    groups: list[list[str]] = [[] for _ in range(workers)]
    for index, name in enumerate(names):
        groups[index % workers].append(name)
    return [tuple(g) for g in groups]


def catch_up(
    runtime: Runtime,
    names: Sequence[str],
    *,
    rebuild: Sequence[str] = (),
    page_size: int = 500,
    progress: Progress | None = None,
) -> int:
    """Rebuild the `rebuild` views from zero, then bring `names` up to the end of the log."""
    runner = ledger_runner(runtime.ledger, runtime.views, tuple(names), page_size=page_size)
    if rebuild:
        return runner.rebuild(rebuild, progress)
    return runner.catch_up(progress)


def follow(runtime: Runtime, names: Sequence[str], stop: threading.Event, page_size: int) -> None:
    """Keep `names` up to date until `stop` is set."""
    runner = ledger_runner(runtime.ledger, runtime.views, tuple(names), page_size=page_size)
    runner.start()
    try:
        stop.wait()
    finally:
        runner.stop()


def run_workers(
    config: Path | None,
    data_dir: Path | None,
    groups: Sequence[tuple[str, ...]],
    page_size: int,
    *,
    nice: int = 0,
    on_start: Callable[[int, tuple[str, ...]], None] | None = None,
) -> int:
    """One process per group of views, until SIGTERM/SIGINT, each `nice` lower in CPU priority
    than this one; returns how many failed."""
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(
            target=_worker,
            args=(config, data_dir, group, page_size, os.getpid(), nice),
            name=f"pdl-project-{'-'.join(group)}",
        )
        for group in groups
    ]
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

    asked = threading.Event()

    def _stop(_signum: int, _frame: FrameType | None) -> None:
        asked.set()

    for sig in previous:
        signal.signal(sig, _stop)
    try:
        for process, group in zip(processes, groups, strict=True):
            process.start()
            if on_start is not None and process.pid is not None:
                on_start(process.pid, group)
        told = False
        while any(p.is_alive() for p in processes):
            if asked.is_set() and not told:
                told = True
                for process in processes:
                    process.terminate()  # SIGTERM: the worker finishes its page and exits
            for process in processes:
                process.join(0.2)
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    # A worker stopped by the SIGTERM it was sent before its handler was in place stopped
    # as asked, not failed.
    stopped = (0, None, -signal.SIGTERM) if asked.is_set() else (0, None)
    return sum(1 for p in processes if p.exitcode not in stopped)


def _worker(
    config: Path | None,
    data_dir: Path | None,
    names: tuple[str, ...],
    page_size: int,
    parent: int,
    nice: int,
) -> None:
    """A worker process: follow its views until SIGTERM, or until its parent is gone."""
    if nice:
        os.nice(nice)  # folding is deferred work: a server's calls on this machine come first
    halt = threading.Event()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides; SIGTERM stops us
    signal.signal(signal.SIGTERM, lambda _s, _f: halt.set())

    def _watch_parent() -> None:
        while not halt.wait(1.0):
            if os.getppid() != parent:
                halt.set()

    threading.Thread(target=_watch_parent, daemon=True).start()
    runtime = open_runtime(load_settings(config, data_dir=data_dir))
    collect_young_less_often()
    try:
        follow(runtime, names, halt, page_size)
    finally:
        runtime.close()

"""Ctrl-C and SIGTERM stop the whole study, once; a second one exits at once.

Ray Tune stops its own experiment on SIGINT, but only the experiment whose loop runs in the
main thread, and the study then went on to its next phase (a reference model interrupted in its
own Tune run, then a whole search after it). Here one study-wide event stops every Tune loop of
the study, in any thread: `catch_interrupts` installs the study's handler for SIGINT and
SIGTERM and makes each of the study's Tune runs watch that event instead of installing its own
handler. A Tune run that sees it stops stepping, saves its experiment state one last time with
the interrupted trials still unfinished (so ``Tuner.restore`` continues them from their last
checkpoints) and returns; `raise_if_interrupted` after every phase turns that into
`StudyInterrupted`, so no later phase starts.

Tune takes the event through ``ray.tune.tune._setup_signal_catching``, the function that
builds the event its loop watches (Ray 2.60; tests/search/test_interrupt.py fails if it
moves).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading

from robustmsa.errors import RobustMSAError

INTERRUPTED = threading.Event()
_received: list[int] = []  # the signals received while the study ran, in order
# Tune's warnings when its loop stops on the event: "Resume experiment with: Tuner.restore(...)"
# (the study's own line says how to resume it) and "Failed to fetch metrics" of trials that had
# not reported yet. Held back from the first signal to the end of the study.
TUNE_INTERRUPT_LOGGERS = ("ray.tune.tune", "ray.tune.analysis.experiment_analysis")


class StudyInterrupted(RobustMSAError):
    """The study was stopped by a signal; ``signum`` says which (the exit status is
    ``128 + signum``, as a shell reports a process killed by it)."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


def interrupting_signal() -> int | None:
    """The first signal that interrupted the study, or None."""
    return _received[0] if _received else None


def _handle(signum: int, frame) -> None:
    _received.append(signum)
    if len(_received) > 1:
        # The second Ctrl-C: no clean-up (that is what the first one does); runs still
        # RUNNING are ended by the resume.
        print("robustmsa: second interrupt: exiting now", file=sys.stderr, flush=True)
        os._exit(128 + signum)
    INTERRUPTED.set()
    for name in TUNE_INTERRUPT_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    print(
        f"robustmsa: {signal.Signals(signum).name}: stopping the study (running trials keep "
        "their last checkpoint; the runs end KILLED). Press Ctrl-C again to exit at once.",
        file=sys.stderr,
        flush=True,
    )


def raise_if_interrupted(what: str) -> None:
    """`StudyInterrupted` when the study was interrupted (after ``what``, a phase)."""
    if INTERRUPTED.is_set():
        signum = interrupting_signal() or signal.SIGINT
        raise StudyInterrupted(
            f"interrupted by {signal.Signals(signum).name} during {what}", signum
        )


@contextlib.contextmanager
def catch_interrupts():
    """The study's signal handling for the duration of the block (module docstring). Outside
    the main thread (a study run from a worker thread) signals cannot be caught: Tune's own
    handling is left as it is."""
    from ray.tune import tune as tune_module

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    INTERRUPTED.clear()
    _received.clear()
    levels = {name: logging.getLogger(name).level for name in TUNE_INTERRUPT_LOGGERS}
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    tune_setup = tune_module._setup_signal_catching
    for s in before:
        signal.signal(s, _handle)
    tune_module._setup_signal_catching = lambda: INTERRUPTED
    try:
        yield
    finally:
        tune_module._setup_signal_catching = tune_setup
        for s, handler in before.items():
            signal.signal(s, handler)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)

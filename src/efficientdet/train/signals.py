"""Ctrl-C and SIGTERM stop a run at a step boundary, with a checkpoint, instead of mid-step."""

from __future__ import annotations

import signal


class Interrupted(Exception):
    """SIGINT/SIGTERM arrived; a checkpoint was written at the current step."""


class StopSignals:
    """Turn SIGINT/SIGTERM into a flag that the step loop checks, so a step is never cut in half."""

    def __init__(self):
        self.received: int | None = None
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.received = signum
        # A SIGTERM sent to the process group kills the DataLoader workers too (they ignore only
        # SIGINT: see data.loader.ignore_interrupts); torch's SIGCHLD handler would raise that in
        # the middle of whatever runs (a step, a checkpoint write). Without it the loss shows
        # where the next batch is fetched, between two steps.
        # Not restored: the run is ending, and the dead worker must not be reported later.
        if hasattr(signal, "SIGCHLD"):
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)

    def __exit__(self, *exc):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)

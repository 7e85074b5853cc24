"""A stalled chunk is reported and ended, not waited on forever.

On CPU a chunk that computes keeps the process busy; one whose compiled XLA program deadlocked
(jaxlib's LAPACK kernels did, see `jaxbench.compat`) sits at 0% CPU, and Ctrl-C cannot reach a
main thread blocked inside XLA. `Watchdog` is one daemon thread that reads the process's CPU
time every few seconds while a chunk is in flight: when the process has used less than 2% of a
core for ``JAXBENCH_STALL_S`` seconds (default 300; ``off`` disables it), it prints one line
naming the chunk and what to try, and exits with code 3. Finished chunks stay on disk, so
re-running the same command resumes. Not used on GPU/TPU, where the host idles while the
device computes.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time

STALL_ENV = "JAXBENCH_STALL_S"
DEFAULT_STALL_S = 300.0
EXIT_CODE = 3
MIN_CPU_FRACTION = 0.02  # of one core: a deadlocked process uses ~0, a computing one ~1 per core


def stall_seconds(env=os.environ) -> float | None:
    """Seconds without CPU use after which a chunk counts as stalled; None when disabled.
    Raises ValueError (one line) for a value that is neither a positive number nor off."""
    raw = env.get(STALL_ENV, "").strip().lower()
    if raw in ("", "default"):
        return DEFAULT_STALL_S
    if raw in ("off", "0", "none"):
        return None
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise ValueError(f"{STALL_ENV}={env.get(STALL_ENV)!r}: expected seconds > 0 or 'off'")
    return value


class Watchdog:
    """``with dog.watch("bucket 3/7 (...)"):`` around work that must keep the CPU busy.

    ``limit_s``: seconds of (almost) no CPU use that count as a stall; ``poll_s``: sampling
    period (default ``min(5, limit_s / 4)``). On a stall: one line on stderr, ``os._exit(3)``.
    """

    def __init__(self, limit_s: float, poll_s: float | None = None, stream=None):
        self.limit_s = float(limit_s)
        self.poll_s = float(poll_s) if poll_s is not None else min(5.0, self.limit_s / 4)
        self._stream = stream
        self._lock = threading.Lock()
        self._label: str | None = None
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def watch(self, label: str):
        with self._lock:
            self._label = label
            self._last = (time.monotonic(), time.process_time())
            self._progress = self._last[0]
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="jaxbench-watchdog", daemon=True)
            self._thread.start()
        try:
            yield
        finally:
            with self._lock:
                self._label = None

    def _loop(self):
        while True:
            time.sleep(self.poll_s)
            with self._lock:
                if self._label is None:
                    continue
                now, cpu = time.monotonic(), time.process_time()
                wall0, cpu0 = self._last
                if cpu - cpu0 >= MIN_CPU_FRACTION * (now - wall0):
                    self._progress = now
                self._last = (now, cpu)
                if now - self._progress < self.limit_s:
                    continue
                label = self._label
            stream = self._stream or sys.stderr
            stream.write(
                f"\njaxbench: error: {label} has used no CPU for {now - self._progress:.0f} s: its compiled "
                f"XLA program appears deadlocked. Finished chunks are kept; re-run the same command to "
                f"resume. If it stalls again here, try --inner-batch 1 (variants one at a time) and report "
                f"it (README, Known issues). {STALL_ENV} sets this limit.\n")
            stream.flush()
            os._exit(EXIT_CODE)

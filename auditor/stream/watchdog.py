"""Liveness: a watchdog thread for the main loop, and signals handled off the main thread.

The main loop beats when it makes progress (a batch committed, or nothing to do) and runs every
librdkafka call inside :meth:`Watchdog.call` with that call's own timeout. Each thread has its own
current call: with ``batch.pipeline`` the commit worker runs a transaction's
``send_offsets_to_transaction`` and ``commit_transaction`` while the main thread consumes and
processes the next batch. The watchdog thread, started at start-up, fires when

- a call, in any thread, has run longer than its own timeout plus ``call_margin_s`` (librdkafka
  2.16 can block in ``send_offsets_to_transaction`` far past its timeout after a broker restart),
  counted from the call's last report of progress (:meth:`Watchdog.progress`: a chain restore
  reading a long audit partition back window by window; atx), or
- the loop has made no progress for ``stall_timeout_s`` while it had work (every transaction
  aborting, a call retried without end, every owned partition paused); a call in progress is
  judged by its own timeout, so this counts up to the start of the oldest call in progress (a
  thread waiting for another thread's call, :meth:`Watchdog.outside_call`, is in no call), or
- a stop was requested (SIGTERM) and the process has not finished within ``shutdown_timeout_s``.

Firing marks the process unhealthy (``/healthz`` 503), logs the reason and exits with
:data:`ExitCode.WATCHDOG` so the orchestrator restarts it.

SIGTERM and SIGINT are blocked in the main thread (``pthread_sigmask``, inherited by every
thread started after it) and received by :class:`SignalThread` with ``sigwait``: a Python signal
handler would only run once the main thread returns from the C call it is blocked in.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from auditor.logging import get_logger

log = get_logger("auditor.watchdog")

STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})


@dataclass
class _Call:
    name: str
    started: float
    timeout: float
    #: when the call last reported progress (:meth:`Watchdog.progress`; its start until then): its own
    #: timeout counts from there
    progressed: float = 0.0

    def __post_init__(self) -> None:
        self.progressed = max(self.progressed, self.started)


class Watchdog:
    def __init__(self, stall_timeout_s: float, call_margin_s: float, shutdown_timeout_s: float,
                 fire: Callable[[str], None], clock: Callable[[], float] = time.monotonic) -> None:
        self.stall_timeout_s, self.call_margin_s = stall_timeout_s, call_margin_s
        self.shutdown_timeout_s = shutdown_timeout_s
        self.fire, self.clock = fire, clock
        self.last_beat = clock()
        #: the call in progress in each thread (by thread id)
        self._calls: dict[int, _Call] = {}
        self.stop_requested_at: float | None = None
        self.fired: str | None = None
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ called by the main loop
    def beat(self) -> None:
        self.last_beat = self.clock()

    @property
    def current(self) -> _Call | None:
        """The oldest call in progress, of any thread."""
        calls = list(self._calls.values())
        return min(calls, key=lambda c: c.started) if calls else None

    @contextmanager
    def call(self, name: str, timeout: float) -> Iterator[None]:
        """A blocking client call with its own timeout (seconds). A call inside another call of the
        same thread replaces it until it returns; the outer call then counts again from that moment."""
        me = threading.get_ident()
        outer = self._calls.get(me)
        self._calls[me] = _Call(name, self.clock(), timeout)
        try:
            yield
        finally:
            self._restore(me, outer)  # a call that returned is not progress by itself

    def progress(self) -> None:
        """The current thread's call has made progress that its timeout does not foresee (atx: the chain
        restore read one more window of an audit partition that a flood made long; at 7% of a core a
        200,000-record flood kept "restore chain head" past its 40 s + 30 s and every restart exited 4).
        The call's own timeout counts again from now. It is no progress of the loop: the stall rule still
        counts from the call's start. Outside a call it does nothing."""
        call = self._calls.get(threading.get_ident())
        if call is not None:
            call.progressed = self.clock()

    @contextmanager
    def outside_call(self) -> Iterator[None]:
        """The current thread waits for work watched in another thread (the in-flight commit, from a
        rebalance callback inside ``consume``): its own call does not count meanwhile, and counts
        again from the moment the wait ends."""
        me = threading.get_ident()
        outer = self._calls.pop(me, None)
        try:
            yield
        finally:
            self._restore(me, outer)

    def _restore(self, me: int, outer: _Call | None) -> None:
        if outer is None:
            self._calls.pop(me, None)
        else:
            self._calls[me] = _Call(outer.name, self.clock(), outer.timeout)

    def stopping(self) -> None:
        """A stop was requested: the process must be gone within shutdown_timeout_s."""
        if self.stop_requested_at is None:
            self.stop_requested_at = self.clock()

    # ------------------------------------------------------------------ the check (pure)
    def overdue(self, now: float | None = None) -> str | None:
        """Why the watchdog must fire now, or None."""
        now = self.clock() if now is None else now
        if self.stop_requested_at is not None and now - self.stop_requested_at > self.shutdown_timeout_s:
            return (f"shutdown did not finish within shutdown_timeout_s={self.shutdown_timeout_s:g}s "
                    "(the main thread is blocked or the broker is gone)")
        calls = sorted(self._calls.values(), key=lambda c: c.started)
        idle = now - self.last_beat
        for call in calls:
            ran = now - call.progressed
            if ran > call.timeout + self.call_margin_s:
                since = f", {ran:.0f}s since its last progress" if call.progressed > call.started else ""
                return (f"the Kafka client call {call.name} has run {now - call.started:.0f}s{since}, past its own "
                        f"{call.timeout:g}s timeout plus watchdog.call_margin_s={self.call_margin_s:g}s")
        if calls:
            # a call is judged by its own timeout, but a loop that was already without progress when it
            # began the call (one that keeps making short calls and never commits) is stalled all the same
            idle = calls[0].started - self.last_beat
        if idle > self.stall_timeout_s:
            return (f"the main loop made no progress for {idle:.0f}s "
                    f"(watchdog.stall_timeout_s={self.stall_timeout_s:g}s)")
        return None

    # ------------------------------------------------------------------ the thread
    def start(self, interval: float = 0.5) -> Watchdog:
        self.last_beat = self.clock()
        self._thread = threading.Thread(target=self._run, args=(interval,), name="auditor-watchdog", daemon=True)
        self._thread.start()
        return self

    def _run(self, interval: float) -> None:
        while not self._halt.wait(interval):
            reason = self.overdue()
            if reason is not None:
                self.fired = reason
                self.fire(reason)
                return

    def close(self) -> None:
        self._halt.set()


class SignalThread:
    """Receives SIGTERM/SIGINT with sigwait on its own thread; the main thread keeps them blocked."""

    def __init__(self, on_signal: Callable[[int], None]) -> None:
        self.on_signal = on_signal
        self.thread = threading.Thread(target=self._run, name="auditor-signals", daemon=True)

    def install(self) -> SignalThread:
        """Call from the main thread before any other thread starts (they inherit the mask)."""
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        self.thread.start()
        return self

    def _run(self) -> None:
        while True:
            signum = signal.sigwait(STOP_SIGNALS)
            self.on_signal(signum)

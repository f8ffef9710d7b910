"""Progress that stays visible without a terminal: rich bars on a terminal, plain lines elsewhere.

A rich progress bar draws nothing when its console is a pipe or a file (CI logs, ``nohup``,
``| tee``), so a long benchmark looks hung. The helpers here print plain, greppable lines there:

* :func:`phase` — one line before a slow step and one after it::

      preparing dataset builtin-kadid ...
      ... done in 52 s

* :class:`Ticker` — a ``done/total`` line every ``interval`` seconds (from a background thread,
  so a line comes even while one long task runs) and one at the end of the phase::

      clean scores 12/40 (30%), elapsed 0:01:05, ETA 0:02:31

* :func:`counter` — what the runner uses per phase: a rich bar when the console is interactive,
  a :class:`Ticker` when it is not, nothing when progress is off. It yields ``advance(n=1)``.

Lines go through the console given (the CLI's stderr console), never markup-parsed and never
wrapped, so a path or a command in them survives intact.
"""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator, Optional

from rich.console import Console

#: seconds between two progress lines when the console is not a terminal
INTERVAL = 10.0


def say(console: Console, text: str) -> None:
    """Print ``text`` as one plain line: no markup, no highlighting, no wrapping."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def hms(seconds: float) -> str:
    """``65.2`` -> ``"0:01:05"`` (hours are not capped: ``"27:46:40"``)."""
    s = max(0, int(round(seconds)))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def took(seconds: float) -> str:
    """A short duration: ``"0.4 s"``, ``"52 s"``, ``"0:02:31"``."""
    return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s" if seconds < 60 else hms(seconds)


@contextmanager
def phase(console: Console, text: str, after: float = 0.0, enabled: bool = True) -> Iterator[None]:
    """Print ``"<text> ..."`` before the block and ``"... done in 52 s"`` after it.

    Args:
        console: where the lines go.
        text: what the block does (``"sampling subset of koniq10k (kmeans, 50 images)"``).
        after: print the first line only once the block has run this many seconds (from a
            timer thread), and the second only if the first was printed: a step that is usually
            instant (a cached dataset) stays silent, a slow one (its first use) is announced.
        enabled: ``False`` prints nothing (``--quiet``).

    Nothing is printed after the block when it raises: the error is the news.
    """
    if not enabled:
        yield
        return
    over, shown, lock = threading.Event(), threading.Event(), threading.Lock()

    def announce() -> None:
        with lock:  # never after the block's end, never twice
            if not over.is_set():
                say(console, f"{text} ...")
                shown.set()

    timer: Optional[threading.Timer] = None
    if after > 0:
        timer = threading.Timer(after, announce)
        timer.daemon = True
        timer.start()
    else:
        announce()
    t0 = time.perf_counter()
    try:
        yield
    finally:
        with lock:
            over.set()
        if timer is not None:
            timer.cancel()
    if shown.is_set():
        say(console, f"... done in {took(time.perf_counter() - t0)}")


class Ticker:
    """Plain ``done/total`` progress lines with elapsed time and ETA, every ``interval`` seconds.

    Use as a context manager (the thread starts on entry; the final line is printed on a normal
    exit) and call :meth:`advance` after each finished unit.

    Args:
        console: where the lines go.
        label: the phase (``"clean scores"``, ``"attacks"``).
        total: units in the phase.
        interval: seconds between two lines while the phase runs.
        clock: monotonic seconds (injectable for tests).

    Example:
        >>> with Ticker(console, "attacks", total=40) as t:
        ...     for task in tasks:
        ...         run(task)
        ...         t.advance()
    """

    def __init__(self, console: Console, label: str, total: int, interval: float = INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.console, self.label, self.total, self.interval, self.clock = console, label, int(total), interval, clock
        self.done = 0
        self.t0 = clock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def line(self) -> str:
        """``"attacks 12/40 (30%), elapsed 0:01:05, ETA 0:02:31"`` (``ETA unknown`` before the first unit)."""
        elapsed = self.clock() - self.t0
        pct = 100 if self.total <= 0 else int(100 * self.done / self.total)
        if self.done >= self.total:
            eta = hms(0)
        elif self.done == 0:
            eta = "unknown"
        else:
            eta = hms(elapsed / self.done * (self.total - self.done))
        return f"{self.label} {self.done}/{self.total} ({pct}%), elapsed {hms(elapsed)}, ETA {eta}"

    def advance(self, n: int = 1) -> None:
        """Count ``n`` more finished units."""
        self.done += n

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            say(self.console, self.line())

    def __enter__(self) -> "Ticker":
        self.t0 = self.clock()
        self._thread = threading.Thread(target=self._loop, name=f"iqaguard-progress-{self.label}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if exc_type is None:
            say(self.console, self.line())


@contextmanager
def counter(console: Console, label: str, total: int, enabled: bool = True,
            interval: float = INTERVAL) -> Iterator[Callable[..., None]]:
    """Progress of one phase; yields ``advance(n=1)``.

    A rich bar (with elapsed time and ETA) when ``console`` is interactive, :class:`Ticker` lines
    when it is not (a pipe, a file), nothing when ``enabled`` is false.
    """
    if not enabled:
        yield lambda n=1: None
    elif console.is_interactive:
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        cols = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                TextColumn("ETA"), TimeRemainingColumn())
        with Progress(*cols, console=console) as bar:
            task = bar.add_task(label, total=total)
            yield lambda n=1: bar.advance(task, n)
    else:
        with Ticker(console, label, total, interval=interval) as ticker:
            yield ticker.advance


__all__ = ["INTERVAL", "Ticker", "counter", "hms", "phase", "say", "took"]

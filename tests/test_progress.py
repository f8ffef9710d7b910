"""Progress without a terminal: plain lines from the runner when its console is a pipe or a file.

Before ``iqaguard.bench.progress`` the runner drew one rich progress bar, which prints nothing
to a console that is not a terminal: a benchmark run under ``nohup`` or in CI looked hung.
"""
from __future__ import annotations

import io
import re
import time
from pathlib import Path

from rich.console import Console

from iqaguard.bench import progress as pg

LINE = re.compile(r"^(clean scores|attacks) (\d+)/(\d+) \((\d+)%\), elapsed \d+:\d\d:\d\d, "
                  r"ETA (\d+:\d\d:\d\d|unknown)$")


def _pipe() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, width=40), buf  # narrow: lines must not wrap


class _Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_ticker_line_counts_percent_elapsed_and_eta():
    clock = _Clock()
    t = pg.Ticker(_pipe()[0], "clean scores", total=40, clock=clock)
    assert t.line() == "clean scores 0/40 (0%), elapsed 0:00:00, ETA unknown"
    clock.t += 64.0
    t.advance(16)
    assert t.line() == "clean scores 16/40 (40%), elapsed 0:01:04, ETA 0:01:36"  # 4 s per unit x 24 left
    t.advance(24)
    assert t.line() == "clean scores 40/40 (100%), elapsed 0:01:04, ETA 0:00:00"
    assert pg.hms(3 * 3600 + 61.4) == "3:01:01" and pg.took(0.42) == "0.4 s" and pg.took(52.3) == "52 s"


def test_ticker_prints_while_running_and_at_the_end():
    console, buf = _pipe()
    with pg.Ticker(console, "attacks", total=3, interval=0.05) as t:
        t.advance()
        time.sleep(0.4)  # several intervals while one "task" runs: lines keep coming
        t.advance(2)
    lines = buf.getvalue().splitlines()
    assert len(lines) >= 3 and all(LINE.match(ln) for ln in lines), lines
    assert lines[0].startswith("attacks 1/3 (33%)") and lines[-1].startswith("attacks 3/3 (100%)")


def test_counter_is_plain_lines_on_a_pipe_and_a_bar_on_a_terminal():
    console, buf = _pipe()
    with pg.counter(console, "attacks", 2) as advance:
        advance()
        advance()
    assert buf.getvalue().splitlines() == ["attacks 2/2 (100%), elapsed 0:00:00, ETA 0:00:00"]
    quiet, qbuf = _pipe()
    with pg.counter(quiet, "attacks", 2, enabled=False) as advance:
        advance()
    assert qbuf.getvalue() == ""
    term_buf = io.StringIO()
    term = Console(file=term_buf, force_terminal=True, width=100)
    with pg.counter(term, "attacks", 2) as advance:
        advance(2)
    assert "attacks" in term_buf.getvalue() and not LINE.match(term_buf.getvalue().strip())  # a rich bar


def test_phase_announces_slow_steps_only():
    console, buf = _pipe()
    with pg.phase(console, "sampling subset of koniq (kmeans, 50 images)"):
        pass
    lines = buf.getvalue().splitlines()
    assert lines[0] == "sampling subset of koniq (kmeans, 50 images) ..."
    assert re.fullmatch(r"\.\.\. done in [\d.]+ s", lines[1])
    fast, fbuf = _pipe()
    with pg.phase(fast, "preparing dataset x", after=5.0):
        pass
    assert fbuf.getvalue() == ""  # a cached dataset stays silent
    slow, sbuf = _pipe()
    with pg.phase(slow, "preparing dataset y", after=0.05):
        time.sleep(0.3)
    assert sbuf.getvalue().splitlines()[0] == "preparing dataset y ..." and "done in" in sbuf.getvalue()


def test_runner_prints_progress_lines_to_a_pipe(tmp_path, monkeypatch):
    from iqaguard.bench import runner
    from iqaguard.bench.spec import Spec, load_plugins

    (toys,) = load_plugins([str(Path(__file__).with_name("test_runner.py"))])
    monkeypatch.setattr(runner, "PREPARE_NOTICE_AFTER", 0.0)  # announce even the instant toy dataset
    console, buf = _pipe()
    spec = Spec.model_validate(toys.toy_spec(modes=["non-adaptive"], defenses=[]))
    runner.run_spec(spec, tmp_path / "s.duckdb", progress=True, console=console)
    lines = buf.getvalue().splitlines()
    # old behaviour: the header line only (the rich bar drew nothing on a non-terminal console)
    assert "preparing dataset toy ..." in lines and any(re.fullmatch(r"\.\.\. done in .+", ln) for ln in lines)
    ends = [LINE.match(ln).groups()[:3] for ln in lines if LINE.match(ln)]
    assert ("clean scores", "2", "2") in ends and ("attacks", "6", "6") in ends  # 6 images in batches of 4 + 2

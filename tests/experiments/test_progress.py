"""The one progress display: counts, an ETA from the recent rate, lines in a log."""

from __future__ import annotations

import io

from fpe_ref.experiments.progress import Progress, clock


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def make(total, **kw):
    buf, t = io.StringIO(), Clock()
    return Progress(total, label="t", unit="epochs", stream=buf, tty=False, clock_fn=t, **kw), buf, t


def test_clock_format():
    assert clock(0) == "0:00:00" and clock(3725.4) == "1:02:05" and clock(-3) == "0:00:00"


def test_eta_settles_after_a_slow_first_step():
    """A first step that compiles (50 s) does not stretch the estimate of the 1 s steps after it."""
    p, buf, t = make(100, interval=1e9)
    p.start()
    t.t = 50.0
    p.update(1)
    assert p.eta() == "estimating"  # 1 % done: too early
    for _ in range(29):
        t.t += 1.0
        p.update(1)
    assert p.eta() == clock(70)  # 70 left at the recent 1 per second, not at 79 s / 30
    since_start = 70 * t.t / 30
    assert since_start > 150  # what an ETA from the overall rate would have said


def test_log_lines_every_interval_and_one_final_line():
    p, buf, t = make(10, interval=5)
    p.start()
    for _ in range(10):
        t.t += 1.0
        p.update(1)
    p.close()
    lines = buf.getvalue().splitlines()
    assert lines[0] == "[t] 0/10 epochs (0%), elapsed 0:00:00, ETA estimating"
    assert lines[-1] == "[t] 10/10 epochs (100%), elapsed 0:00:10, ETA 0:00:00"
    assert [l.split()[1] for l in lines] == ["0/10", "5/10", "10/10"]  # start, every 5 s, the end once


def test_resumed_work_counts_as_done_but_not_towards_the_rate():
    p, buf, t = make(10, done=6, interval=0)
    p.start()
    t.t = 2.0
    p.update(1)
    t.t = 4.0
    p.update(1)
    assert p.done == 8 and p.eta() == clock(4)  # 2 left at one per 2 s


def test_a_terminal_redraws_one_line():
    buf, t = io.StringIO(), Clock()
    p = Progress(3, label="t", stream=buf, tty=True, clock_fn=t)
    p.start()
    for _ in range(3):
        t.t += 1
        p.update(1)
    p.close()
    out = buf.getvalue()
    assert out.count("\n") == 1 and out.endswith("ETA 0:00:00\n") and "\r\033[K" in out


def test_a_command_that_fails_before_work_shows_no_bar():
    p, buf, t = make(10)
    with p:
        pass
    assert buf.getvalue() == ""


def test_messages_between_lines():
    p, buf, t = make(4, interval=0)
    p.start()
    p.print("trial 0 stored")
    assert buf.getvalue().splitlines()[-1] == "trial 0 stored"

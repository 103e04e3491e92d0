"""One progress display for every long command: work done, elapsed, and an ETA that settles.

On a terminal the line is redrawn in place (at most five times a second); anywhere else (a
``nohup`` log, CI) a full line is printed every ``interval`` seconds and at the end, so a log
shows the run moving.

The ETA is the work left at the rate of the recent past: the work finished in the last
``window`` seconds (or, early on, in the second half of the elapsed time), not the rate since
the start. A first step that compiles kernels or loads data therefore does not stretch the
estimate of the rest, and a run whose speed changes is estimated from its current speed.
Work found finished (a resumed run) counts as done but not towards the rate. Until a few
per cent of the work is done the ETA reads "estimating".
"""

from __future__ import annotations

import collections
import sys
import time


def clock(seconds: float) -> str:
    """``H:MM:SS``."""
    s = max(0, int(round(seconds)))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class Progress:
    """``total`` units of work (``unit``: "runs", "epochs", ...), reported as they finish.

    ``start()`` once, ``update(n)`` as work finishes, ``close()`` at the end (also a context
    manager). ``total`` and ``done`` may be set before ``start()`` (a resumed sweep).
    """

    def __init__(self, total: int = 0, label: str = "run", unit: str = "runs", done: int = 0, stream=None,
                 interval: float = 30.0, window: float = 60.0, tty: bool | None = None, clock_fn=time.monotonic):
        self.total, self.done, self.label, self.unit = int(total), int(done), label, unit
        self.stream = stream
        self.interval, self.window = float(interval), float(window)
        self._tty = tty
        self._now = clock_fn
        self._t0 = None
        self._new = 0
        self._last = -1e18
        self._samples = collections.deque()  # (time, units done here), for the recent rate
        self._drawn = False
        self._shown = None  # ``done`` when the last line was shown

    # ------------------------------------------------------------ public
    def start(self):
        self._t0 = self._now()
        self._samples.append((self._t0, 0))
        self._show(force=True)
        return self

    def update(self, n: int = 1, note: str = ""):
        if self._t0 is None:
            self.start()
        self.done += n
        self._new += n
        now = self._now()
        self._samples.append((now, self._new))
        while len(self._samples) > 2 and self._samples[1][0] < now - self.window:
            self._samples.popleft()
        self._show(force=self.done >= self.total, note=note)

    def close(self):
        if self._t0 is None or (self._shown is None and self._new == 0):
            return  # nothing started: a command that failed before its first step shows no bar
        self._show(force=True, final=True)

    def __enter__(self):
        """Starts the clock; the first line shows with the first finished work (or ``start()``)."""
        self._t0 = self._now()
        self._samples.append((self._t0, 0))
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    # ------------------------------------------------------------ the line
    def eta(self) -> str:
        left = self.total - self.done
        if left <= 0:
            return "0:00:00"
        if self._new == 0 or self._new < 0.02 * (self._new + left):
            return "estimating"
        now = self._now()
        since = max(now - self.window, self._t0 + 0.5 * (now - self._t0))
        ref = next(((t, n) for t, n in self._samples if t >= since), None)
        if ref is None or ref[1] == self._new:  # nothing finished in the recent past: the last step's rate
            ref = self._samples[-2] if len(self._samples) >= 2 else self._samples[0]
        dn, dt = self._new - ref[1], now - ref[0]
        if dn <= 0 or dt <= 0:
            return "estimating"
        return clock(left * dt / dn)

    def line(self) -> str:
        el = self._now() - (self._t0 if self._t0 is not None else self._now())
        pct = 100.0 * self.done / self.total if self.total else 100.0
        return (f"[{self.label}] {self.done}/{self.total} {self.unit} ({pct:.0f}%), elapsed {clock(el)}, "
                f"ETA {self.eta()}")

    def _is_tty(self) -> bool:
        if self._tty is None:
            self._tty = bool(getattr(self._out(), "isatty", lambda: False)())
        return self._tty

    def _out(self):
        return self.stream or sys.stderr

    def _show(self, force=False, note="", final=False):
        now = self._now()
        tty = self._is_tty()
        if not force and now - self._last < (0.2 if tty else self.interval):
            return
        if final and not tty and self._shown == self.done:
            return  # a log already has this line
        self._last, self._shown = now, self.done
        text = self.line() + (f"  {note}" if note else "")
        out = self._out()
        if tty:
            out.write("\r\033[K" + text + ("\n" if final else ""))
            self._drawn = not final
        else:
            out.write(text + "\n")
        out.flush()

    def print(self, text: str):
        """A message between progress lines (on a terminal, the progress line is redrawn after it)."""
        out = self._out()
        if self._is_tty() and self._drawn:
            out.write("\r\033[K")
        out.write(text + "\n")
        out.flush()
        if self._is_tty() and self._t0 is not None:
            self._show(force=True)

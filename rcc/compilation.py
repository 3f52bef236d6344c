"""Say on stderr when numba compiles one of rcc's kernels, and how long it took.

rcc's kernels compile on their first call and are cached on disk
(``cache=True``), so compilation happens once per machine and Python
environment (``python -m rcc.warmup`` does it ahead of time).  A first call
that compiles takes seconds; this module turns that silent wait into one line
on stderr per compiled kernel::

    rcc: compiling kernel encode_one (first run only, cached afterwards)... done in 4.1 s

Loading a kernel from the cache says nothing.  The listener hooks numba's
``"numba:compile"`` event, which numba fires only when it really compiles
(not on a cache hit); kernels compiled from inside another kernel's
compilation are part of the outer line.
"""

from __future__ import annotations

import sys
import time

from numba.core import event

__all__ = ["announce_compilation", "compiled_kernel_count"]

_PACKAGE = __name__.split(".")[0] + "."


class _CompileAnnouncer(event.Listener):
    """Writes one stderr line per outermost compilation of an rcc kernel."""

    def __init__(self, stream=None):
        self.stream = stream
        self.depth = 0
        self.started = 0.0
        self.announced = False
        self.count = 0

    def _write(self, text):
        stream = sys.stderr if self.stream is None else self.stream
        try:
            stream.write(text)
            stream.flush()
        except (OSError, ValueError):  # a closed or unwritable stderr must not break a compile
            pass

    def on_start(self, event_):
        self.depth += 1
        if self.depth != 1:
            return
        dispatcher = (event_.data or {}).get("dispatcher")
        function = getattr(dispatcher, "py_func", None)
        module = getattr(function, "__module__", "") or ""
        self.announced = module.startswith(_PACKAGE)
        if self.announced:
            self.started = time.perf_counter()
            self._write(f"rcc: compiling kernel {function.__name__} (first run only, cached afterwards)...")

    def on_end(self, event_):
        self.depth -= 1
        if self.depth != 0 or not self.announced:
            return
        self.announced = False
        seconds = time.perf_counter() - self.started
        # numba's Event.is_failed reads the wrong way round; look at the exception itself.
        details = getattr(event_, "_exc_details", None)
        if details and details[0] is not None:
            self._write(f" stopped after {seconds:.1f} s\n")
            return
        self.count += 1
        self._write(f" done in {seconds:.1f} s\n")


_ANNOUNCER = None


def announce_compilation():
    """Install the stderr announcer (idempotent; done by ``import rcc``)."""
    global _ANNOUNCER
    if _ANNOUNCER is None:
        _ANNOUNCER = _CompileAnnouncer()
        event.register("numba:compile", _ANNOUNCER)
    return _ANNOUNCER


def compiled_kernel_count():
    """How many rcc kernels this process has compiled (not loaded from the cache) so far."""
    return 0 if _ANNOUNCER is None else _ANNOUNCER.count

"""PaddlePaddle, imported so that SIGTERM stays with Python.

Importing ``paddle`` installs glog's C++ failure handler for SIGTERM (beside SIGSEGV,
SIGABRT, SIGFPE, SIGILL and SIGBUS): on SIGTERM it prints a "FatalError" report and
kills the process, replacing whatever Python had there (``movierec up``'s
:class:`~movierec.signals.Shutdown`, the default action), so no ``finally`` of
ours ever runs. ``paddle.disable_signal_handler()`` resets them all to the default,
which is no better. So after the import, Python's own SIGTERM disposition is put back;
the crash reports for real faults stay. Model code imports paddle from here.
"""

from __future__ import annotations

import contextlib
import signal
import threading

#: Signals whose Python handling matters to us and that paddle takes over on import.
KEPT = (signal.SIGTERM,)

_before = {sig: signal.getsignal(sig) for sig in KEPT}

import paddle  # noqa: E402 - the handlers must be read first

if threading.current_thread() is threading.main_thread():
    for _sig, _handler in _before.items():
        with contextlib.suppress(TypeError, ValueError):  # None: set outside Python
            signal.signal(_sig, _handler if _handler is not None else signal.SIG_DFL)

__all__ = ["paddle"]

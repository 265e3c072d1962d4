"""The local runtime's stop signals (issue 31): recorded without locks, raised at most once."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest

from movierec.signals import Shutdown, held


def test_the_first_signal_is_recorded_and_later_ones_change_nothing() -> None:
    shutdown = Shutdown()
    assert not shutdown.requested
    shutdown.handle(signal.SIGINT)
    shutdown.handle(signal.SIGTERM)
    assert shutdown.requested and shutdown.signum == signal.SIGINT


def test_interrupt_raises_once_and_never_into_the_stop_sequence() -> None:
    shutdown = Shutdown(interrupt=True)
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
        shutdown.handle(signal.SIGTERM)
    shutdown.handle(signal.SIGINT)          # a second signal while stopping: recorded only
    assert shutdown.signum == signal.SIGTERM

    stopping = Shutdown(interrupt=True)
    stopping.stopping()                     # `up` finished on its own and is stopping
    stopping.handle(signal.SIGINT)
    assert stopping.requested


def test_a_signal_inside_the_handler_does_not_raise_twice() -> None:
    shutdown = Shutdown(interrupt=True)
    raised = 0

    def nested(signum: int) -> None:
        nonlocal raised
        try:
            shutdown.handle(signum)
        except KeyboardInterrupt:
            raised += 1

    nested(signal.SIGTERM)
    nested(signal.SIGINT)
    assert raised == 1


#: Signals every 100 us for 1.5 s while the main thread starts, polls and waits for child
#: processes (Popen's own locks) and sleeps, as the Milvus supervisor does. A handler that
#: takes a lock (the supervisor's old ``threading.Event.set``) hangs here within
#: milliseconds (nested handlers pile up on the lock until a RecursionError); this one
#: must finish.
STORM = textwrap.dedent("""
    import signal, subprocess, time
    from movierec.signals import Shutdown
    shutdown = Shutdown().install([signal.SIGALRM])
    signal.setitimer(signal.ITIMER_REAL, 0.001, 0.0001)
    end = time.monotonic() + 1.5
    children = 0
    while time.monotonic() < end:
        proc = subprocess.Popen(["true"])
        while proc.poll() is None:
            time.sleep(0.0005)
        proc.wait(5)
        children += 1
    signal.setitimer(signal.ITIMER_REAL, 0)
    print(children, shutdown.signum == signal.SIGALRM)
""")


def test_a_storm_of_signals_never_blocks_the_main_thread() -> None:
    done = subprocess.run([sys.executable, "-c", STORM], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    children, recorded = done.stdout.split()
    assert int(children) > 10 and recorded == "True"


def test_importing_the_fusion_model_leaves_sigterm_to_python() -> None:
    """paddle's import installs a C++ SIGTERM handler that kills the process; the model
    code imports it through movierec.compat.paddle, which puts Python's handler back."""
    script = textwrap.dedent("""
        import os, signal, time
        from movierec.signals import Shutdown
        shutdown = Shutdown().install()
        import movierec.models.fusion.train
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.1)
        print(shutdown.signum == signal.SIGTERM)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert (done.returncode, done.stdout.strip()) == (0, "True"), done.stderr[-2000:]


def test_a_signal_inside_deferred_is_raised_on_leaving_after_the_step_completes() -> None:
    """A child started and recorded inside ``deferred`` is recorded even when the stop
    signal lands in the middle (in ``Popen``, after the fork): the interrupt comes after."""
    import os

    from movierec import signals
    previous = {sig: signal.getsignal(sig) for sig in signals.STOP_SIGNALS}
    shutdown = Shutdown(interrupt=True).install()
    recorded = []
    try:
        with pytest.raises(KeyboardInterrupt, match="SIGTERM"), signals.deferred():
            with signals.deferred():                 # nested: the outermost raises
                os.kill(os.getpid(), signal.SIGTERM)
                for _ in range(1000):                # the handler has run by now
                    pass
                recorded.append("inner")
            recorded.append("outer")
        assert recorded == ["inner", "outer"] and shutdown.signum == signal.SIGTERM
        with signals.deferred():                         # stopping: nothing pending
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):
                pass
        assert shutdown.signum == signal.SIGTERM
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        signals._active = None


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_child_started_with_its_signals_held_gets_one_sent_before_its_handler(sig) -> None:
    """A signal sent while the child's interpreter still starts (here: sleeps before it
    installs its handler) waits, pending, and reaches the handler: nothing is lost or acted
    on before the child can act on it (issue 31: the Milvus supervisor once ran on after
    a SIGINT in its first 59 ms). The starter's own mask is as it was before."""
    before = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    code = ("import time; time.sleep(0.5); from movierec.signals import Shutdown; "
            "s = Shutdown().install(); time.sleep(0.1); print(s.signum, flush=True)")
    with held():
        child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                                 text=True)
    child.send_signal(sig)
    out, _ = child.communicate(timeout=30)
    assert (child.returncode, out.strip()) == (0, str(int(sig)))
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == before

"""Child processes that do not outlive the process that started them.

A supervisor stops its children in order when it is asked to stop; but SIGKILL, an OOM kill or a
crash of the supervisor runs none of its code. On Linux the child can ask the kernel for a signal
when its parent goes (`prctl(PR_SET_PDEATHSIG)`): `die_with_parent` is the `preexec_fn` that asks,
between fork and exec, so it covers programs we cannot change (nats-server) as well as our own.
The request survives exec. The kernel sends the signal when the *thread* that forked the child
exits, so children must be started from the main thread (the event loop's); from any other thread
`die_with_parent` asks for nothing rather than tie the child to a short-lived thread.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
from collections.abc import Callable

# From <linux/prctl.h>.
PR_SET_PDEATHSIG = 1


def die_with_parent(signum: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A `preexec_fn` for `subprocess.Popen` that has the child sent `signum` when this process
    dies, however it dies; None where the OS has no such request (or off the main thread).

    SIGTERM lets our own processes drain as on a normal stop; nats-server flushes its store on it.
    """
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork, not in the child
    parent = os.getpid()

    def request() -> None:
        prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0)
        if os.getppid() != parent:
            # The parent died before the request was made: nobody will send the signal.
            os._exit(1)

    return request

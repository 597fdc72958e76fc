"""The kernels ``aep figures`` executes notebooks in: over IPC sockets, each execution in a worker thread
that Ctrl-C stops cleanly (``run_interruptibly``)."""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import uuid
from pathlib import Path

# The kernel's warning "Kernel is running over TCP without encryption" (ipykernel's kernelapp, printed
# once per kernel on the stderr it inherits) is there because jupyter_client's default transport is TCP.
# Over IPC (Unix sockets in Jupyter's runtime folder) the kernel has nothing to warn about. A socket path
# longer than the OS allows (about 107 bytes) or Windows keeps TCP.
_MAX_IPC_PATH = 100


def kernel_manager_class():
    """The jupyter_client kernel manager papermill's kernels start with: IPC transport where it can be."""
    from jupyter_client.manager import AsyncKernelManager
    from jupyter_core.paths import jupyter_runtime_dir

    longest = Path(jupyter_runtime_dir()) / f"kernel-{uuid.uuid4()}-ipc-1"  # jupyter_client's socket names
    if os.name == "nt" or len(str(longest)) > _MAX_IPC_PATH:
        return AsyncKernelManager
    return _ipc_kernel_manager()


def ipc_socket_prefix() -> str:
    """A path prefix of one kernel's sockets (``<prefix>-1`` ...): unique, in Jupyter's runtime folder."""
    from jupyter_core.paths import jupyter_runtime_dir

    folder = Path(jupyter_runtime_dir())
    folder.mkdir(parents=True, exist_ok=True)
    return str(folder / f"kernel-{uuid.uuid4()}-ipc")


@functools.cache
def _ipc_kernel_manager():
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import default

    class IPCKernelManager(AsyncKernelManager):
        """``AsyncKernelManager`` whose kernels listen on Unix sockets instead of TCP ports, each kernel's
        sockets under a name of its own in Jupyter's runtime folder. (jupyter_client's default names them
        ``kernel-ipc-1`` ... in the current folder when, as under papermill, the connection file is not
        named yet: two processes that start a kernel at once then took the same sockets, and one kernel got
        the other's messages: "Invalid Signature", "Kernel didn't respond in 60 seconds".)"""

        @default("transport")
        def _default_transport(self):
            return "ipc"

        @default("ip")
        def _default_ip(self):
            return ipc_socket_prefix()

    return IPCKernelManager


def tracked(manager_class, managers: list):
    """``manager_class`` whose every instance is appended to ``managers`` (to interrupt its kernel)."""

    class Tracked(manager_class):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            managers.append(self)

    return Tracked


def _signal_kernels(managers: list, sig: int) -> None:
    for km in managers:
        pid = getattr(getattr(km, "provisioner", None), "pid", None)
        if pid:
            with contextlib.suppress(OSError):
                os.kill(pid, sig)


def run_interruptibly(call, managers: list) -> None:
    """Run ``call`` (one papermill execution) in a worker thread and turn Ctrl-C into a clean stop.

    The main thread keeps the terminal's Ctrl-C: the first interrupts the kernels in ``managers`` (the
    running cell raises ``KeyboardInterrupt``, papermill writes the notebook as far as it ran), a
    second kills them; then ``KeyboardInterrupt`` is raised here once the execution has returned. (In
    the main thread, nbclient's own SIGINT handler would shut the kernel down under a running cell and
    papermill would hang or print the kernel's ZMQ traceback.)
    """
    import signal

    box: dict = {}
    done = threading.Event()  # not Thread.join: a join interrupted by Ctrl-C marks a running thread stopped

    def target():
        try:
            call()
        except BaseException as err:  # handed to the main thread
            box["error"] = err
        finally:
            done.set()

    threading.Thread(target=target, name="aep-figures-execution", daemon=True).start()
    interrupts = 0
    while not done.is_set():
        try:
            done.wait()
        except KeyboardInterrupt:
            interrupts += 1
            _signal_kernels(managers, signal.SIGINT if interrupts == 1 else signal.SIGKILL)
    if "error" in box:
        raise box["error"]
    if interrupts:
        raise KeyboardInterrupt

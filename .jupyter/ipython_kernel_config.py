# The project's kernel configuration, installed by `make install` as .venv/etc/ipython/ipython_kernel_config.py
# (IPython reads config from <sys.prefix>/etc/ipython): every kernel of the project's environment, whoever
# starts it (papermill, JupyterLab, nbval).
#
# jupyter_client starts kernels over TCP on localhost unless told otherwise, and ipykernel then logs
# "Kernel is running over TCP without encryption" on every start. `aep figures` starts its kernels over
# IPC (no warning); for the others the warning says nothing a user of this project can act on, so it is
# dropped here, and only it: every other message of the kernel still shows.
import logging


class _NoTcpWarning(logging.Filter):
    def filter(self, record):
        return "running over TCP without encryption" not in record.getMessage()


logging.getLogger("IPKernelApp").addFilter(_NoTcpWarning())

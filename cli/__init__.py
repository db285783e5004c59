"""The speechkern command line (installed as the ``speechkern_cli`` package)."""

import sys


def _interrupted(kind, value, tb) -> None:
    """Ctrl-C before the command's own handler is in place (while modules load): one line, no traceback."""
    if issubclass(kind, KeyboardInterrupt):
        import os

        print("interrupted", file=sys.stderr, flush=True)
        os._exit(130)  # not by SIGINT, as Python would: status -2 to a parent process, and no exit work to interrupt
    sys.__excepthook__(kind, value, tb)


sys.excepthook = _interrupted

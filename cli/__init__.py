"""The speechkern command line (installed as the ``speechkern_cli`` package)."""

import sys


def _interrupted(kind, value, tb) -> None:
    """Ctrl-C before the command's own handler is in place (while modules load): one line, no traceback."""
    if issubclass(kind, KeyboardInterrupt):
        print("interrupted", file=sys.stderr)  # Python then exits by SIGINT: status 130 in the shell
        return
    sys.__excepthook__(kind, value, tb)


sys.excepthook = _interrupted

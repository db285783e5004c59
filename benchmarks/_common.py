"""What the benchmark scripts share: where the development audio lies."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEV = Path(os.environ.get("SPEECHKERN_DEV_DATA") or ROOT.parent / "shared" / "data" / "dev")


def require_dev_data() -> None:
    """Stop with a clear message where the development audio is missing."""
    if not (DEV / "manifest.csv").is_file():
        raise SystemExit(
            f"development audio not found at {DEV}: this benchmark needs ../shared/data/dev beside the checkout "
            "(or SPEECHKERN_DEV_DATA=DIR)"
        )


def run_main(main: Callable[[], object]) -> None:
    """Run a script's ``main()`` and exit with what it returns; a path the system refuses (a name too long for the
    file system, permission denied, ...) ends in one line naming it, as in the command line, not a traceback."""
    from speechkern_cli.main import PATH_ERRORS, path_error

    try:
        code = main()
    except OSError as err:
        if err.errno not in PATH_ERRORS:
            raise
        raise SystemExit(path_error(err)) from None
    raise SystemExit(code)

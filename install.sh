#!/usr/bin/env bash
# Sets up speechkern in a virtual environment: the one setup command of README.md, also used by the Dockerfile.
#   ./install.sh                 creates .venv in the repository root (Python from $PYTHON, default python3)
#   VENV=/opt/venv ./install.sh  another place;  EXTRAS=dev ./install.sh  without Ray (the distributed extra)
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
EXTRAS=${EXTRAS:-dev,distributed}

"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
# torchaudio declares no torch requirement, so the pair goes in first, pinned together (constraints.txt).
"$VENV/bin/python" -m pip install --quiet -c constraints.txt torch torchaudio
"$VENV/bin/python" -m pip install --quiet -c constraints.txt -e ".[${EXTRAS}]"
"$VENV/bin/speechkern" --version
echo "speechkern is installed in $VENV: activate with 'source $VENV/bin/activate' or call $VENV/bin/speechkern"

"""speechkern: mask-based single-channel speech enhancement with large-scale kernel machines."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("speechkern")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

from speechkern.errors import SpeechkernError  # noqa: E402

__all__ = ["SpeechkernError", "__version__"]

"""speechkern: mask-based single-channel speech enhancement with large-scale kernel machines."""

from speechkern.errors import SpeechkernError

__all__ = ["SpeechkernError", "__version__"]


def __getattr__(name: str) -> str:
    # The version is looked up on first use: importlib.metadata is a tenth of `speechkern --help`'s start-up.
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            value = version("speechkern")
        except PackageNotFoundError:  # running from a source tree that is not installed
            value = "0.0.0+unknown"
        globals()["__version__"] = value
        return value
    raise AttributeError(f"module 'speechkern' has no attribute {name!r}")

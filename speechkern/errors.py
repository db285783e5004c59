"""Errors a user can act on.

Library code raises :class:`SpeechkernError` for bad input (a missing file, an unreadable recipe key, a
value out of range). Its message names the thing, what was expected and what to do; the command line prints
it as one line and exits non-zero instead of showing a traceback.
"""


class SpeechkernError(Exception):
    """A problem with the user's input or environment, explained in the message.

    ``reason``: where the message names a file, what is wrong with it alone (such as ``"is damaged or truncated
    (...)"``), for callers that name the file their own way; the message itself by default."""

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = message if reason is None else reason

"""The one exception type the CLI turns into a single line and a non-zero exit.

Every error a user can cause (missing input, corrupt video, weights that don't fit, ...) raises a
subclass of :class:`GtacityError` whose message names the file, the problem and, where there is one,
what to do. Anything else is a bug and keeps its traceback.
"""


class GtacityError(Exception):
    """A problem with the user's input or environment, stated in one line."""

    exit_code = 1


class BackendError(GtacityError):
    """A backend that cannot run as asked here: not installed, no such device, unsupported precision,
    or a compiled model (int8, a TensorRT plan) that cannot be made or fails its check."""


def first_line(e: BaseException, limit: int = 200) -> str:
    """The first line of ``e``'s message for a one-line error, or its type's name where the message
    is empty (``EOFError()`` from an empty file has none)."""
    lines = str(e).strip().splitlines()
    return lines[0][:limit] if lines else type(e).__name__

"""User-facing errors.

Anything the user can fix (a bad path, an unknown name, a broken file) is raised as :class:`CtsegError`
with one line that names the file or argument and says what to do. The CLI prints that line and exits
with code 2; library users get an ordinary exception (a subclass of ``ValueError``).
"""

from __future__ import annotations


class CtsegError(ValueError):
    """A problem with the user's input, reported as one line (CLI exit code 2)."""

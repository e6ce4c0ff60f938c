"""Exit codes of the ``segpipe`` command (and the ``exit_code`` of batch flows).

Examples
--------
>>> ExitCode.for_failures(0), ExitCode.for_failures(3)
(<ExitCode.OK: 0>, <ExitCode.SOME_FAILED: 1>)
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """0 every scene succeeded; 1 some failed, the rest completed; 2 the command or its
    environment was unusable and no work was started; 3 an unexpected internal error."""

    OK = 0
    SOME_FAILED = 1
    UNUSABLE = 2
    INTERNAL = 3

    @classmethod
    def for_failures(cls, failed: int) -> ExitCode:
        """The exit code of a batch with ``failed`` failed scenes."""
        return cls.SOME_FAILED if failed else cls.OK

"""Exit codes of the ``segpipe`` command (and the ``exit_code`` of batch flows).

Examples
--------
>>> ExitCode.for_failures(0), ExitCode.for_failures(3)
(<ExitCode.OK: 0>, <ExitCode.SOME_FAILED: 1>)
>>> from pipeline.report.batch import BatchRow
>>> ExitCode.for_rows([BatchRow(scene_id="a", input="a.tif", status="ok",
...                             reason="labels unusable: t.tif: not a TIFF")])
<ExitCode.SOME_FAILED: 1>
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import IntEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the command line imports this module first: keep it light
    from pipeline.report.batch import BatchRow


class ExitCode(IntEnum):
    """0 every scene succeeded; 1 some failed (or were published without the metrics
    their unusable label file was meant for), the rest completed; 2 the command or its
    environment was unusable and no work was started; 3 an unexpected internal error."""

    OK = 0
    SOME_FAILED = 1
    UNUSABLE = 2
    INTERNAL = 3

    @classmethod
    def for_failures(cls, failed: int) -> ExitCode:
        """The exit code of a batch with ``failed`` failed scenes."""
        return cls.SOME_FAILED if failed else cls.OK

    @classmethod
    def for_rows(cls, rows: Iterable[BatchRow]) -> ExitCode:
        """The exit code of a batch's rows: 1 when a scene failed or its labels were
        unusable (:attr:`BatchRow.complete`), else 0."""
        return cls.for_failures(sum(not row.complete for row in rows))

"""The class table of a model: ids, names and which classes are things.

Examples
--------
>>> row = ClassRow(2, "building", True)
>>> row.id, row.name, row.isthing, tuple(row)
(2, 'building', True, (2, 'building', True))
"""

from __future__ import annotations

from typing import NamedTuple


class ClassRow(NamedTuple):
    """One class: its id, its name and whether it is a thing (countable instances).

    A ``ClassRow`` is a tuple ``(id, name, isthing)``, so it can be passed wherever
    the panoptic functions take ``(int, str, bool)`` entries.
    """

    id: int
    name: str
    isthing: bool

"""Disjoint-set forest over arbitrary integer ids (label ids up to ``uint64``).

Used by :mod:`segcore.labels.stitch` to merge instance ids that several tiles
found to be one object; chains of pairwise merges (a road crossing many tiles)
end in one set.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable

__all__ = ["UnionFind"]


class UnionFind:
    """Union-find with path halving and union by size.

    Ids are Python ints (numpy integers are converted), so ``uint64`` ids
    never wrap. An id is added on first use; ids never mentioned are
    singletons that the forest does not store.

    Parameters
    ----------
    ids : iterable of int, optional
        Ids to add as singletons.

    Examples
    --------
    >>> uf = UnionFind()
    >>> uf.union(3, 7); uf.union(7, 2**64 - 1)
    True
    True
    >>> uf.find(2**64 - 1) == uf.find(3), uf.connected(3, 5)
    (True, False)
    >>> uf.groups()
    [[3, 7, 18446744073709551615]]
    """

    def __init__(self, ids: Iterable[int] = ()) -> None:
        self._parent: dict[int, int] = {}
        self._size: dict[int, int] = {}
        for i in ids:
            self.add(i)

    def __len__(self) -> int:
        return len(self._parent)

    def __contains__(self, item: object) -> bool:
        try:
            return operator.index(item) in self._parent  # type: ignore[arg-type]
        except TypeError:
            return False

    def add(self, item: int) -> int:
        """Add ``item`` as a singleton if new; return it as an int."""
        key = operator.index(item)
        if key not in self._parent:
            self._parent[key] = key
            self._size[key] = 1
        return key

    def find(self, item: int) -> int:
        """Representative of ``item``'s set (``item`` itself if unseen)."""
        x = operator.index(item)
        parent = self._parent
        if x not in parent:
            return x
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(self, a: int, b: int) -> bool:
        """Merge the sets of ``a`` and ``b``; ``True`` if they were distinct."""
        ra, rb = self.find(self.add(a)), self.find(self.add(b))
        if ra == rb:
            return False
        if self._size[ra] < self._size[rb]:
            ra, rb = rb, ra
        self._parent[rb] = ra
        self._size[ra] += self._size.pop(rb)
        return True

    def connected(self, a: int, b: int) -> bool:
        """Whether ``a`` and ``b`` are in the same set."""
        return self.find(a) == self.find(b)

    def groups(self) -> list[list[int]]:
        """Sets with at least two members, each sorted, ordered by smallest id."""
        by_root: dict[int, list[int]] = {}
        for x in self._parent:
            by_root.setdefault(self.find(x), []).append(x)
        groups = [sorted(g) for g in by_root.values() if len(g) > 1]
        return sorted(groups, key=lambda g: g[0])

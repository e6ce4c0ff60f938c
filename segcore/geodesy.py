"""Pixel areas in square metres for georeferenced grids.

Method
------
*Projected CRS, planar*: every pixel is the parallelogram spanned by the
affine transform's columns, so its *map* area is ``|det A| * unit**2`` with
``unit`` the CRS linear unit in metres (:func:`pixel_areas`). That carries the
projection's scale error (4x at 60 degrees in Web Mercator), so the pipeline
uses it only where a pixel cannot be placed on the ellipsoid.

*Projected CRS, on the ellipsoid* (:func:`node_grid_pixel_areas`): the
caller maps a coarse grid of pixel corners (nodes every few pixels) into an
*equal-area* plane of the CRS's ellipsoid (e.g. a Lambert azimuthal
equal-area projection centred on the block), where planar area is ground
area. Between four nodes the pixel corners are placed by bilinear
interpolation; the Jacobian determinant of a bilinear map is linear in the
cell coordinates, so each pixel's area is that determinant at its centre
(exact for the bilinear patch), and the pixels of one cell sum to the
shoelace area of its four nodes. Straight source edges are curves in the
equal-area plane; cutting them into chords of a few kilometres keeps the
relative error far below 1e-4. :func:`node_grid_cell_areas` keeps the same
areas as linear terms per cell (:class:`CellAreas`), so a sum over the pixels of
a class needs class counts per row and cell, not an area per pixel;
:func:`equal_area_plane` is such a plane (Lambert azimuthal, via the authalic
sphere).

*Geographic CRS, north-up* (transform terms ``b == d == 0``): a pixel row is the
zone between two parallels over a longitude span, and its area on the
ellipsoid has a closed form. With ``e`` the first eccentricity and the area
element ``dA = M(phi) N(phi) cos(phi) dphi dlambda = a**2 (1 - e**2) cos(phi) /
(1 - e**2 sin(phi)**2)**2 dphi dlambda``, substituting ``s = sin(phi)`` gives

    A = dlambda * a**2 / 2 * (q(phi2) - q(phi1)),
    q(phi) = (1 - e**2) * (s / (1 - e**2 s**2) + artanh(e s) / e),

where ``q`` is Snyder's authalic function (Map Projections: A Working Manual,
eq. 3-12). The difference ``q(phi2) - q(phi1)`` is evaluated in an algebraically
rearranged form that stays accurate for rows a fraction of an arc-second tall
and reduces to the sphere, ``A = R**2 dlambda (sin phi2 - sin phi1)``, as
``e -> 0``. Summing every row of a whole-globe grid reproduces the ellipsoid's
surface area ``2 pi a**2 (1 + (1 - e**2) artanh(e) / e)``.

*Geographic CRS with rotation or shear terms*: the area element above times
``|det A| (pi / 180)**2`` evaluated at each pixel centre (midpoint rule); its
relative error is of order ``(pixel size in radians)**2``, negligible for
imaging pixels.

Geographic transforms are assumed to be in degrees (longitude, latitude).
Ellipsoids are given as semi-major axis ``a`` in metres and inverse
flattening ``rf``; ``rf == 0`` (the WKT convention) or ``inf`` means a sphere.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from segcore.errors import ConfigError

__all__ = [
    "WGS84",
    "CellAreas",
    "ellipsoid_from_wkt",
    "ellipsoid_surface_area",
    "equal_area_plane",
    "geographic_row_areas",
    "node_grid_cell_areas",
    "node_grid_pixel_areas",
    "pixel_areas",
    "quad_areas",
]

WGS84: tuple[float, float] = (6378137.0, 298.257223563)
"""WGS 84 semi-major axis (m) and inverse flattening."""

_NUMBER = r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"
_QUOTED = r'"(?:[^"]|"")*"'
_ELLIPSOID_RE = re.compile(
    rf"\b(?:SPHEROID|ELLIPSOID)\s*[\[(]\s*{_QUOTED}\s*,\s*{_NUMBER}\s*,\s*{_NUMBER}"
    rf"(?:\s*,\s*(?:LENGTHUNIT|UNIT)\s*[\[(]\s*{_QUOTED}\s*,\s*{_NUMBER})?",
    re.IGNORECASE,
)
_DEG = math.pi / 180.0


def ellipsoid_from_wkt(wkt: str) -> tuple[float, float]:
    """Return the ellipsoid ``(a, rf)`` named in a WKT1 or WKT2 CRS string.

    Parameters
    ----------
    wkt : str
        CRS as WKT1 (``SPHEROID["name", a, rf, ...]``) or WKT2
        (``ELLIPSOID["name", a, rf, LENGTHUNIT["metre", 1]]``). The first
        ellipsoid found is used (the source CRS of a ``BOUNDCRS``).

    Returns
    -------
    tuple of float
        Semi-major axis in metres and inverse flattening (0 for a sphere).
        WGS 84 when the string names no ellipsoid (e.g. an empty string).

    Raises
    ------
    ConfigError
        If the ellipsoid's numbers are not a valid ellipsoid.

    Examples
    --------
    >>> ellipsoid_from_wkt('GEOGCS["x",DATUM["y",SPHEROID["GRS 1980",6378137,298.257222101]]]')
    (6378137.0, 298.257222101)
    >>> ellipsoid_from_wkt('ELLIPSOID["s",6371,0,LENGTHUNIT["kilometre",1000]]')
    (6371000.0, 0.0)
    >>> ellipsoid_from_wkt("")
    (6378137.0, 298.257223563)
    """
    match = _ELLIPSOID_RE.search(wkt)
    if match is None:
        return WGS84
    a, rf = float(match.group(1)), float(match.group(2))
    if match.group(3) is not None:
        a *= float(match.group(3))
    _check_ellipsoid(a, rf)
    return a, rf


def ellipsoid_surface_area(a: float, rf: float) -> float:
    """Total surface area in m² of the ellipsoid ``(a, rf)``.

    ``2 pi a**2 (1 + (1 - e**2) artanh(e) / e)``, or ``4 pi a**2`` for a sphere.

    Examples
    --------
    >>> round(ellipsoid_surface_area(*WGS84) / 1e6, 3)  # km²
    510065621.724
    """
    _check_ellipsoid(a, rf)
    e2 = _eccentricity_squared(rf)
    if e2 == 0.0:
        return 4.0 * math.pi * a * a
    e = math.sqrt(e2)
    return 2.0 * math.pi * a * a * (1.0 + (1.0 - e2) * math.atanh(e) / e)


def geographic_row_areas(
    lat_top_deg: float,
    dlat_deg: float,
    dlon_deg: float,
    rows: int,
    *,
    a: float,
    rf: float,
) -> np.ndarray:
    """Exact ellipsoidal area of one pixel in each row of a lat/lon grid.

    Row ``i`` spans latitudes ``lat_top_deg + i * dlat_deg`` to
    ``lat_top_deg + (i + 1) * dlat_deg`` and one pixel spans ``|dlon_deg|``
    of longitude. Pass the transform's ``e`` term as ``dlat_deg`` (negative
    for north-up grids); either sign gives positive areas.

    Parameters
    ----------
    lat_top_deg, dlat_deg, dlon_deg : float
        Latitude of the first row's edge, latitude step per row and longitude
        step per column, in degrees.
    rows : int
        Number of rows.
    a, rf : float
        Ellipsoid semi-major axis (m) and inverse flattening (0 = sphere).

    Returns
    -------
    (rows,) ndarray of float64
        Area of one pixel of each row in m².

    Raises
    ------
    ConfigError
        If a step is not finite, ``rows`` is negative, or an edge lies more
        than one row beyond a pole (edges within one row are clamped to the
        pole, as in global grids whose outer rows overshoot it).

    Examples
    --------
    >>> areas = geographic_row_areas(90.0, -90.0, 360.0, 2, a=6371000.0, rf=0.0)
    >>> bool(np.allclose(areas, 2 * np.pi * 6371000.0**2))
    True
    """
    values = {"lat_top_deg": lat_top_deg, "dlat_deg": dlat_deg, "dlon_deg": dlon_deg}
    for name, value in values.items():
        if not math.isfinite(value):
            raise ConfigError(f"{name}: expected a finite number of degrees, got {value!r}")
    if int(rows) != rows or rows < 0:
        raise ConfigError(f"rows: expected a non-negative integer, got {rows!r}")
    _check_ellipsoid(a, rf)
    edges = lat_top_deg + np.arange(int(rows) + 1, dtype=np.float64) * dlat_deg
    return _zone_areas(edges, dlat_deg, dlon_deg, a=a, rf=rf)


def pixel_areas(
    transform: Sequence[float],
    window_rows: tuple[int, int],
    window_cols: tuple[int, int],
    *,
    geographic: bool,
    linear_unit_m: float | None,
    a: float,
    rf: float,
) -> np.ndarray:
    """Per-pixel areas in m² of a window of a georeferenced grid.

    Parameters
    ----------
    transform : sequence of float
        Affine terms ``(a, b, c, d, e, f)`` as in ``rasterio.Affine`` (a
        9-term Affine is accepted; only its first six terms are used).
    window_rows, window_cols : tuple of int
        Half-open pixel ranges ``(r0, r1)`` and ``(c0, c1)`` of the window.
    geographic : bool
        True for a lon/lat CRS in degrees.
    linear_unit_m : float or None
        Metres per CRS linear unit; required for projected CRSs.
    a, rf : float
        Ellipsoid semi-major axis (m) and inverse flattening (0 = sphere);
        used for geographic CRSs only.

    Returns
    -------
    (r1 - r0, 1) or (r1 - r0, c1 - c0) ndarray of float64
        ``(r1 - r0, 1)`` (broadcastable over columns) for projected CRSs (planar
        map area ``|det A| * unit**2``, constant) and north-up geographic grids
        (exact row areas); the full window for rotated or sheared geographic
        grids (area element at each pixel centre, midpoint rule).

    Raises
    ------
    ConfigError
        For a non-invertible transform, a reversed window, or a
        projected CRS without ``linear_unit_m``.

    Examples
    --------
    >>> pixel_areas((10.0, 0.0, 5e5, 0.0, -10.0, 6e6), (0, 2), (0, 3),
    ...             geographic=False, linear_unit_m=1.0, a=6378137.0, rf=0.0)
    array([[100.],
           [100.]])
    """
    ta, tb, _, td, te, tf = (float(v) for v in tuple(transform)[:6])
    r0, r1 = _check_range("window_rows", window_rows)
    c0, c1 = _check_range("window_cols", window_cols)
    det = ta * te - tb * td
    if not math.isfinite(det) or det == 0.0:
        raise ConfigError(
            f"transform: expected an invertible affine transform, got {tuple(transform)[:6]}"
        )
    if not geographic:
        if linear_unit_m is None or not linear_unit_m > 0:
            raise ConfigError(
                f"linear_unit_m: expected metres per CRS unit (> 0) for a projected CRS, "
                f"got {linear_unit_m!r}"
            )
        return np.full((r1 - r0, 1), abs(det) * linear_unit_m**2)
    if tb == 0.0 and td == 0.0:
        _check_ellipsoid(a, rf)
        edges = tf + np.arange(r0, r1 + 1, dtype=np.float64) * te  # same edges for any window
        return _zone_areas(edges, te, ta, a=a, rf=rf)[:, None]
    return _midpoint_areas(ta, tb, td, te, tf, (r0, r1), (c0, c1), a=a, rf=rf)


def quad_areas(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Shoelace areas of the quadrilateral cells of a grid of nodes.

    Parameters
    ----------
    x, y : (n + 1, m + 1) ndarray of float
        Node coordinates in a plane; cell ``(i, j)`` has the corners
        ``(i, j), (i, j + 1), (i + 1, j + 1), (i + 1, j)``.

    Returns
    -------
    (n, m) ndarray of float64
        Unsigned cell areas in the square of the coordinates' unit.

    Examples
    --------
    >>> quad_areas(np.array([[0.0, 2.0], [0.0, 2.0]]), np.array([[0.0, 0.0], [3.0, 3.0]]))
    array([[6.]])
    """
    x, y = _check_nodes(x, y)
    # half the cross product of the diagonals
    d1x, d1y = x[1:, 1:] - x[:-1, :-1], y[1:, 1:] - y[:-1, :-1]
    d2x, d2y = x[:-1, 1:] - x[1:, :-1], y[:-1, 1:] - y[1:, :-1]
    return 0.5 * np.abs(d1x * d2y - d1y * d2x)


def equal_area_plane(lon: np.ndarray, lat: np.ndarray, lon0: float, lat0: float, *,
                     a: float, rf: float) -> tuple[np.ndarray, np.ndarray]:
    """Lambert azimuthal equal-area coordinates (m) of points on an ellipsoid.

    The points go to the authalic sphere (radius ``Rq``, authalic latitude ``beta``:
    Snyder 1987, eqs. 3-11 and 3-12), then to the sphere's Lambert azimuthal plane
    centred on ``(lon0, lat0)`` (eqs. 24-13 to 24-19 without the factor ``D``, which
    changes shapes near the centre, not areas). Areas in the plane are areas on the
    ellipsoid; distortion of shape grows away from the centre.

    Parameters
    ----------
    lon, lat : ndarray of float
        Degrees, any equal shapes.
    lon0, lat0 : float
        The centre, degrees.
    a, rf : float
        Semi-major axis (m) and inverse flattening (0 or inf: a sphere).

    Returns
    -------
    x, y : ndarray of float64, shaped as ``lon``

    Examples
    --------
    >>> x, y = equal_area_plane(np.array([0.0, 1.0]), np.array([0.0, 0.0]), 0.0, 0.0,
    ...                         a=6378137.0, rf=0.0)
    >>> x.round(3).tolist(), y.tolist()  # on a sphere, along the equator: 2 R sin(0.5 deg)
    ([0.0, 111318.078], [0.0, 0.0])
    """
    _check_ellipsoid(a, rf)
    e2 = _eccentricity_squared(rf)
    e = math.sqrt(e2)
    qp = 2.0 if e2 == 0.0 else (1.0 - e2) * (1.0 / (1.0 - e2) + math.atanh(e) / e)

    def sin_beta(lat_deg: np.ndarray) -> np.ndarray:
        s = np.sin(np.radians(lat_deg))
        if e2 == 0.0:
            return s
        q = (1.0 - e2) * (s / (1.0 - e2 * s * s) + np.arctanh(e * s) / e)
        return np.clip(q / qp, -1.0, 1.0)

    radius = a * math.sqrt(0.5 * qp)
    sb, sb0 = sin_beta(np.asarray(lat, np.float64)), float(sin_beta(np.float64(lat0)))
    cb, cb0 = np.sqrt((1.0 - sb) * (1.0 + sb)), math.sqrt((1.0 - sb0) * (1.0 + sb0))
    dl = np.radians(np.asarray(lon, np.float64) - lon0)
    cos_dl = np.cos(dl)
    k = radius * np.sqrt(2.0 / (1.0 + sb0 * sb + cb0 * cb * cos_dl))
    return k * cb * np.sin(dl), k * (cb0 * sb - sb0 * cb * cos_dl)


@dataclass(frozen=True, eq=False)
class CellAreas:
    """Pixel areas that are linear within each cell of a node grid, kept per cell.

    The area of pixel ``(i, j)`` (block-local row and column) in cell ``(I, J)`` is
    ``const[I, J] + per_col[I, J] * j + per_row[I, J] * i``; ``np.asarray`` gives
    every pixel's area. Summed over the pixels of a class, it needs only the class
    counts per pixel row and cell column and per cell row and pixel column
    (:meth:`class_sizes`), not an area per pixel.

    Attributes
    ----------
    row_nodes : (n + 1,) ndarray of intp
        First pixel row of each cell row, then the block's height.
    col_nodes : (m + 1,) ndarray of intp
        Likewise for the columns.
    const, per_col, per_row : (n, m) ndarray of float64
        The linear terms of each cell.

    Examples
    --------
    >>> cells = CellAreas(np.array([0, 2]), np.array([0, 3]), np.array([[1.0]]),
    ...                   np.array([[0.5]]), np.array([[2.0]]))
    >>> np.asarray(cells)
    array([[1. , 1.5, 2. ],
           [3. , 3.5, 4. ]])
    """

    row_nodes: np.ndarray
    col_nodes: np.ndarray
    const: np.ndarray
    per_col: np.ndarray
    per_row: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        """``(h, w)`` of the block."""
        return int(self.row_nodes[-1]), int(self.col_nodes[-1])

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        hs, ws = np.diff(self.row_nodes), np.diff(self.col_nodes)
        h, w = self.shape

        def spread(terms: np.ndarray) -> np.ndarray:
            return np.repeat(np.repeat(terms, hs, axis=0), ws, axis=1)

        out = (spread(self.const) + spread(self.per_col) * np.arange(w, dtype=np.float64)
               + spread(self.per_row) * np.arange(h, dtype=np.float64)[:, None])
        return out if dtype is None else out.astype(dtype)

    def class_sizes(self, by_row: np.ndarray, by_col: np.ndarray) -> np.ndarray:
        """Summed area per class from class counts per pixel row and cell column,
        ``by_row`` ``(K, h, m)``, and per cell row and pixel column, ``by_col``
        ``(K, n, w)``; returns ``(K,)`` float64.

        A pixel's area is ``const + per_row * i`` of its cell, which ``by_row`` weighs
        per pixel row, plus ``per_col * j``, which ``by_col`` weighs per pixel column.

        Examples
        --------
        >>> cells = CellAreas(np.array([0, 1, 2]), np.array([0, 2]), np.array([[1.0], [3.0]]),
        ...                   np.array([[0.5], [0.5]]), np.array([[0.0], [0.0]]))
        >>> labels = np.array([[0, 1], [1, 1]])  # areas [[1, 1.5], [3, 3.5]]
        >>> by_row = np.stack([(labels == c).sum(axis=1, keepdims=True) for c in (0, 1)])
        >>> by_col = np.stack([(labels == c) for c in (0, 1)]).astype(int)  # cells of 1 row
        >>> cells.class_sizes(by_row, by_col)
        array([1., 8.])
        """
        h, w = self.shape
        cell_of_row = np.repeat(np.arange(len(self.row_nodes) - 1), np.diff(self.row_nodes))
        cell_of_col = np.repeat(np.arange(len(self.col_nodes) - 1), np.diff(self.col_nodes))
        row_terms = (self.const[cell_of_row]
                     + self.per_row[cell_of_row] * np.arange(h, dtype=np.float64)[:, None])
        col_terms = self.per_col[:, cell_of_col] * np.arange(w, dtype=np.float64)
        k = len(by_row)
        return (by_row.reshape(k, -1).astype(np.float64) @ row_terms.ravel()
                + by_col.reshape(k, -1).astype(np.float64) @ col_terms.ravel())


def node_grid_cell_areas(
    x: np.ndarray, y: np.ndarray, row_nodes: np.ndarray, col_nodes: np.ndarray
) -> CellAreas | None:
    """:func:`node_grid_pixel_areas` as linear terms per cell (:class:`CellAreas`).

    Returns None where a cell's area changes sign between its pixels (a folded grid:
    take :func:`node_grid_pixel_areas`). Cells next to a non-finite node get
    non-finite terms.

    Examples
    --------
    >>> x, y = np.meshgrid([0.0, 4.0, 6.0], [0.0, 2.0])  # cells of 2 x 4 and 2 x 2 px
    >>> cells = node_grid_cell_areas(x, y, np.array([0, 2]), np.array([0, 4, 6]))
    >>> np.asarray(cells)
    array([[1., 1., 1., 1., 1., 1.],
           [1., 1., 1., 1., 1., 1.]])
    """
    rn, cn, base, per_col, per_row = _cell_terms(x, y, row_nodes, col_nodes)
    h, w = np.diff(rn).astype(np.float64)[:, None], np.diff(cn).astype(np.float64)[None, :]
    # the determinant is linear in the cell: its sign is its sign at the corner pixels
    corners = [base + per_col * du + per_row * dv for du in (0, w - 1) for dv in (0, h - 1)]
    with np.errstate(invalid="ignore"):
        low, high = np.minimum.reduce(corners), np.maximum.reduce(corners)
        if np.any((low < 0) & (high > 0)):
            return None
        sign = np.where(high > 0, 1.0, -1.0)
    base, per_col, per_row = base * sign, per_col * sign, per_row * sign
    const = base - per_col * cn[:-1][None, :] - per_row * rn[:-1][:, None]
    return CellAreas(rn, cn, const, per_col, per_row)


def node_grid_pixel_areas(
    x: np.ndarray, y: np.ndarray, row_nodes: np.ndarray, col_nodes: np.ndarray
) -> np.ndarray:
    """Pixel areas from a coarse grid of pixel-corner nodes (bilinear interpolation).

    Parameters
    ----------
    x, y : (n + 1, m + 1) ndarray of float
        Node coordinates in an equal-area plane (metres give m²).
    row_nodes : (n + 1,) ndarray of int
        Pixel-corner row of each node row, strictly increasing from 0: the
        window has ``row_nodes[-1]`` pixel rows.
    col_nodes : (m + 1,) ndarray of int
        Likewise for the columns.

    Returns
    -------
    (row_nodes[-1], col_nodes[-1]) ndarray of float64
        Area of every pixel; the pixels of one cell sum to its
        :func:`quad_areas` (up to rounding). Non-finite where a node is.

    Examples
    --------
    >>> x, y = np.meshgrid([0.0, 4.0], [0.0, 2.0])  # one 2 x 4 cell of 8 unit pixels
    >>> node_grid_pixel_areas(x, y, np.array([0, 2]), np.array([0, 4]))
    array([[1., 1., 1., 1.],
           [1., 1., 1., 1.]])
    """
    rn, cn, base, per_col, per_row = _cell_terms(x, y, row_nodes, col_nodes)
    hs, ws = np.diff(rn), np.diff(cn)
    # rows first on (rows, cells) arrays, then one column expansion
    cell_r = np.repeat(np.arange(len(hs)), hs)
    dv = (np.arange(rn[-1]) - rn[cell_r]).astype(np.float64)[:, None]
    row_base = base[cell_r] + per_row[cell_r] * dv  # (rows, m)
    slope = per_col[cell_r]  # (rows, m)
    out = np.empty((rn[-1], cn[-1]), dtype=np.float64)
    # cells of one width at a time, as (rows, cells, width) views of ``out``: no expanded
    # copies of the per-cell terms (the same products and sums, so the same bits)
    for first, last in _runs(ws):
        width = int(ws[first])
        block = out[:, cn[first]:cn[last]].reshape(rn[-1], last - first, width,
                                                    copy=False)  # a view, or it raises
        du = np.arange(width, dtype=np.float64)
        np.multiply(slope[:, first:last, None], du, out=block)
        block += row_base[:, first:last, None]
    return np.abs(out, out=out)


def _cell_terms(x: np.ndarray, y: np.ndarray, row_nodes: np.ndarray, col_nodes: np.ndarray
                ) -> tuple[np.ndarray, ...]:
    """``(rn, cn, base, per_col, per_row)`` of a node grid: the checked node positions, and
    per cell ``(n, m)`` the pixel area at the cell's first pixel centre and its change per
    pixel along the columns and the rows.

    Per pixel (i, j) of cell (I, J) the area is (c0 + cu u + cv v) / (h w) with
    u = (j + 0.5 - cn[J]) / w and v = (i + 0.5 - rn[I]) / h (the Jacobian of the bilinear
    patch: det(A + vD, B + uD) = c0 + cu u + cv v), signed.
    """
    x, y = _check_nodes(x, y)
    rn, cn = _check_nodes_at("row_nodes", row_nodes, x.shape[0]), \
        _check_nodes_at("col_nodes", col_nodes, x.shape[1])
    ax, ay = x[:-1, 1:] - x[:-1, :-1], y[:-1, 1:] - y[:-1, :-1]  # along u (columns)
    bx, by = x[1:, :-1] - x[:-1, :-1], y[1:, :-1] - y[:-1, :-1]  # along v (rows)
    dx = x[1:, 1:] - x[1:, :-1] - ax
    dy = y[1:, 1:] - y[1:, :-1] - ay
    c0 = ax * by - ay * bx
    cu = ax * dy - ay * dx
    cv = dx * by - dy * bx
    h, w = np.diff(rn).astype(np.float64)[:, None], np.diff(cn).astype(np.float64)[None, :]
    base = (c0 + 0.5 * cu / w + 0.5 * cv / h) / (h * w)
    return rn, cn, base, cu / (h * w * w), cv / (h * h * w)


def _runs(values: np.ndarray) -> list[tuple[int, int]]:
    """``[(first, last)]``: the maximal runs of equal neighbours (``last`` exclusive).

    >>> _runs(np.array([4, 4, 4, 2]))
    [(0, 3), (3, 4)]
    """
    cuts = np.flatnonzero(np.diff(values)) + 1
    edges = [0, *cuts.tolist(), len(values)]
    return list(itertools.pairwise(edges))


def _check_nodes(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or x.shape != y.shape or min(x.shape) < 2:
        raise ConfigError(
            f"x, y: expected two (n + 1, m + 1) node grids of equal shape with n, m >= 1, "
            f"got {x.shape} and {y.shape}"
        )
    return x, y


def _check_nodes_at(name: str, nodes: np.ndarray, count: int) -> np.ndarray:
    nodes = np.asarray(nodes)
    if (nodes.shape != (count,) or nodes.dtype.kind not in "iu" or nodes[0] != 0
            or np.any(np.diff(nodes) <= 0)):
        raise ConfigError(
            f"{name}: expected {count} strictly increasing integer pixel positions starting "
            f"at 0, got {nodes!r}"
        )
    return nodes.astype(np.intp)


def _midpoint_areas(
    ta: float,
    tb: float,
    td: float,
    te: float,
    tf: float,
    rows: tuple[int, int],
    cols: tuple[int, int],
    *,
    a: float,
    rf: float,
) -> np.ndarray:
    """Area element at pixel centres times the pixel's angular area (m²)."""
    _check_ellipsoid(a, rf)
    row = np.arange(rows[0], rows[1], dtype=np.float64)[:, None] + 0.5
    col = np.arange(cols[0], cols[1], dtype=np.float64)[None, :] + 0.5
    lat = td * col + te * row + tf
    if lat.size and np.abs(lat).max() > 90.0:
        raise ConfigError(
            f"transform: pixel centres reach latitude {np.abs(lat).max():.6g} degrees; "
            "expected |latitude| <= 90 for a geographic CRS"
        )
    e2 = _eccentricity_squared(rf)
    sin_phi = np.sin(np.radians(lat))
    element = a * a * (1.0 - e2) * np.cos(np.radians(lat)) / (1.0 - e2 * sin_phi**2) ** 2
    return element * abs(ta * te - tb * td) * _DEG * _DEG


def _zone_areas(
    edges: np.ndarray, dlat_deg: float, dlon_deg: float, *, a: float, rf: float
) -> np.ndarray:
    """Areas (m²) of the zones between consecutive latitude ``edges`` (degrees)."""
    phi = np.radians(_clamp_latitudes(edges, abs(dlat_deg)))
    dq = _authalic_q_difference(phi[:-1], phi[1:], _eccentricity_squared(rf))
    return np.abs(dq) * (0.5 * a * a * abs(dlon_deg) * _DEG)


def _authalic_q_difference(phi1: np.ndarray, phi2: np.ndarray, e2: float) -> np.ndarray:
    """``q(phi2) - q(phi1)`` without cancellation, for arrays of latitudes (rad)."""
    s1, s2 = np.sin(phi1), np.sin(phi2)
    ds = 2.0 * np.cos(0.5 * (phi1 + phi2)) * np.sin(0.5 * (phi2 - phi1))  # s2 - s1
    if e2 == 0.0:
        return 2.0 * ds
    e = math.sqrt(e2)
    cross = 1.0 - e2 * s1 * s2
    rational = ds * (1.0 + e2 * s1 * s2) / ((1.0 - e2 * s1 * s1) * (1.0 - e2 * s2 * s2))
    logarithmic = np.arctanh(e * ds / cross) / e  # artanh(e s2) - artanh(e s1)
    return (1.0 - e2) * (rational + logarithmic)


def _clamp_latitudes(edges: np.ndarray, tolerance: float) -> np.ndarray:
    """Clamp edges at most ``tolerance`` degrees beyond a pole to the pole."""
    overshoot = np.abs(edges).max(initial=0.0) - 90.0
    if overshoot > tolerance * (1.0 + 1e-12):
        raise ConfigError(
            f"latitude: grid edges reach {np.abs(edges).max():.6g} degrees; expected "
            "|latitude| <= 90 (geographic transforms must be in degrees)"
        )
    return np.clip(edges, -90.0, 90.0)


def _eccentricity_squared(rf: float) -> float:
    if rf == 0.0 or math.isinf(rf):
        return 0.0
    f = 1.0 / rf
    return f * (2.0 - f)


def _check_ellipsoid(a: float, rf: float) -> None:
    if not (math.isfinite(a) and a > 0):
        raise ConfigError(f"a: expected a positive semi-major axis in metres, got {a!r}")
    if not (rf == 0.0 or rf > 1.0):
        raise ConfigError(
            f"rf: expected an inverse flattening > 1 (or 0/inf for a sphere), got {rf!r}"
        )


def _check_range(name: str, bounds: tuple[int, int]) -> tuple[int, int]:
    start, stop = (int(v) for v in bounds)
    if (start, stop) != tuple(bounds) or stop < start:
        raise ConfigError(
            f"{name}: expected integers (start, stop) with start <= stop, got {bounds!r}"
        )
    return start, stop

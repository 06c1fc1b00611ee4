"""A parametric torso (lower chest and abdomen) and its lesions, evaluated at any LPS point.

The anatomy is a set of analytic shapes in *anatomical* millimetres (origin near the mid-abdomen,
axes as LPS: +x patient left, +y posterior, +z superior). A study places the patient at an offset
(table position), so patient coordinates are ``anatomical + offset``. Because shapes are evaluated
at the voxel centres of a :class:`~medcurate.synth.geometry.SeriesGeometry`, any orientation
(axial, coronal, oblique, flipped) samples the same body, and the lesion mask of a series is exact
by construction.

Tissue classes map to Hounsfield units for CT and to T1/T2-like signal for MR; a projection
radiograph integrates attenuation along the anterior-posterior axis.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# tissue classes
AIR, FAT, MUSCLE, LIVER, SPLEEN, KIDNEY, BONE, MARROW, LUNG, BLOOD, CSF, BOWEL, GAS, DISC = range(
    14
)
N_TISSUES = 14

# per tissue class, in the order above: AIR FAT MUSCLE LIVER SPLEEN KIDNEY BONE MARROW LUNG BLOOD
# CSF BOWEL GAS DISC
HU = np.array([-1000.0, -95, 45, 60, 48, 150, 750, 250, -840, 190, 8, 30, -900, 85])
T1 = np.array([0.0, 900, 400, 520, 380, 430, 30, 700, 25, 40, 150, 320, 0, 300])
T2 = np.array([0.0, 650, 180, 200, 450, 520, 20, 480, 15, 60, 1400, 400, 0, 600])

# lesion kinds: (HU, T1, T2)
LESION_SIGNAL = {
    "cyst": (8.0, 140.0, 1300.0),
    "metastasis": (28.0, 300.0, 720.0),
    "nodule": (35.0, 360.0, 600.0),
}
LESION_ORGANS = ("liver", "kidney", "lung")


@dataclass(frozen=True)
class Ellipsoid:
    center: tuple[float, float, float]
    semi: tuple[float, float, float]

    def inside(self, x: np.ndarray, y: np.ndarray, z: np.ndarray, scale: float = 1.0) -> np.ndarray:
        cx, cy, cz = self.center
        a, b, c = (s * scale for s in self.semi)
        return ((x - cx) / a) ** 2 + ((y - cy) / b) ** 2 + ((z - cz) / c) ** 2 <= 1.0


@dataclass(frozen=True)
class Lesion:
    """A finding: a rotated ellipsoid in anatomical mm with its own signal."""

    organ: str
    kind: str  # key of LESION_SIGNAL
    center: tuple[float, float, float]
    semi: tuple[float, float, float]
    rotation: tuple[tuple[float, float, float], ...]  # 3x3, rows are the ellipsoid axes

    def scaled(self, factor: float) -> Lesion:
        a, b, c = self.semi
        return Lesion(self.organ, self.kind, self.center, (a * factor, b * factor, c * factor),
                      self.rotation)  # fmt: skip

    @property
    def volume_mm3(self) -> float:
        a, b, c = self.semi
        return float(4.0 / 3.0 * np.pi * a * b * c)

    def inside(self, p: np.ndarray) -> np.ndarray:
        """``p``: (..., 3) anatomical mm."""
        d = p - np.asarray(self.center, dtype=p.dtype)
        q = d @ np.asarray(self.rotation, dtype=p.dtype).T
        s = np.asarray(self.semi, dtype=p.dtype)
        return ((q / s) ** 2).sum(axis=-1) <= 1.0


@dataclass(frozen=True)
class Anatomy:
    """One patient's body: sizes and organ placement, drawn once per patient."""

    body_a: float  # half-width (x)
    body_b: float  # half-depth (y)
    fat: float  # subcutaneous fat thickness
    liver: Ellipsoid
    spleen: Ellipsoid
    kidneys: tuple[Ellipsoid, Ellipsoid]
    lungs: tuple[Ellipsoid, Ellipsoid]
    heart: Ellipsoid
    bowel: tuple[Ellipsoid, ...]
    gas: tuple[Ellipsoid, ...]
    spine_y: float


def draw_anatomy(rng: np.random.Generator, bmi: float, sex: str) -> Anatomy:
    """Body size follows BMI and sex; organs get a few millimetres of individual variation."""
    size = 1.0 + 0.012 * (bmi - 25.0)
    body_a = float(np.clip((150.0 if sex == "F" else 165.0) * size, 125, 185))
    body_b = float(np.clip(0.7 * body_a + rng.normal(0, 4), 90, 130))
    fat = float(np.clip(8.0 + 1.3 * (bmi - 18.0) + rng.normal(0, 3), 6, 40))

    def j(v: float, s: float = 4.0) -> float:
        return float(v + rng.normal(0, s))

    def e(c: tuple[float, float, float], s: tuple[float, float, float]) -> Ellipsoid:
        return Ellipsoid((j(c[0]), j(c[1]), j(c[2])), (j(s[0], 3), j(s[1], 3), j(s[2], 3)))

    wall = body_b - fat  # y extent inside the fat
    inner_a = body_a - fat
    spine_y = float(min(62.0, wall - 40.0))
    bowel = []
    gas = []
    for _ in range(int(rng.integers(4, 8))):
        c = (
            float(rng.uniform(-0.55, 0.55) * inner_a),
            float(rng.uniform(-0.75, -0.25) * wall),
            float(rng.uniform(-95, -10)),
        )
        s = (float(rng.uniform(12, 22)), float(rng.uniform(10, 18)), float(rng.uniform(15, 30)))
        bowel.append(Ellipsoid(c, s))
        if rng.random() < 0.5:
            gas.append(
                Ellipsoid((c[0], c[1] - s[1] * 0.3, c[2]), (s[0] * 0.45, s[1] * 0.4, s[2] * 0.5))
            )
    return Anatomy(
        body_a=body_a,
        body_b=body_b,
        fat=fat,
        liver=e((-0.35 * inner_a, -5.0, 15.0), (0.45 * inner_a, 0.6 * wall, 70.0)),
        spleen=e((0.55 * inner_a, 30.0, 25.0), (30.0, 38.0, 45.0)),
        kidneys=(
            e((-55.0, spine_y, -45.0), (26.0, 24.0, 48.0)),
            e((58.0, spine_y + 2.0, -40.0), (26.0, 24.0, 48.0)),
        ),
        lungs=(
            e((-0.45 * inner_a, 15.0, 135.0), (0.42 * inner_a, 0.75 * wall, 100.0)),
            e((0.45 * inner_a, 15.0, 140.0), (0.40 * inner_a, 0.75 * wall, 100.0)),
        ),
        heart=e((15.0, -15.0, 125.0), (55.0, 45.0, 50.0)),
        bowel=tuple(bowel),
        gas=tuple(gas),
        spine_y=spine_y,
    )


_FAR = 1.0e5  # "unbounded" along an axis


def _crop(p: np.ndarray, lo: tuple[float, ...], hi: tuple[float, ...]) -> tuple[slice, ...]:
    """The index box of a regular grid ``p`` (A, B, C, 3) that holds every point in [lo, hi].

    Shapes are small next to the field of view, so painting each one only inside its box makes
    rendering several times faster. Point lists that are not 3-D grids get the full range.
    """
    full = (slice(None),) * (p.ndim - 1)
    if p.ndim != 4 or min(p.shape[:3]) < 2:
        return full
    p0 = p[0, 0, 0].astype(np.float64)
    axes = np.stack([p[1, 0, 0], p[0, 1, 0], p[0, 0, 1]]).astype(np.float64) - p0
    corners = np.array([[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1])
                        for c in (lo[2], hi[2])])  # fmt: skip
    idx = np.linalg.solve(axes.T, (corners - p0).T)  # (3, 8)
    first = np.clip(np.floor(idx.min(axis=1)) - 1, 0, None).astype(int)
    last = np.minimum(np.ceil(idx.max(axis=1)) + 2, p.shape[:3]).astype(int)
    return tuple(slice(int(a), int(b)) for a, b in zip(first, last, strict=True))


def _paint(t: np.ndarray, p: np.ndarray, lo: tuple[float, ...], hi: tuple[float, ...],
           inside: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray],
           value: int) -> None:  # fmt: skip
    sl = _crop(p, lo, hi)
    sub = p[sl]
    if sub.size:
        view = t[sl]
        view[inside(sub[..., 0], sub[..., 1], sub[..., 2])] = value


def _ellipsoid(t: np.ndarray, p: np.ndarray, e: Ellipsoid, value: int) -> None:
    lo = tuple(c - s for c, s in zip(e.center, e.semi, strict=True))
    hi = tuple(c + s for c, s in zip(e.center, e.semi, strict=True))
    _paint(t, p, lo, hi, e.inside, value)


def _column(t: np.ndarray, p: np.ndarray, cx: float, cy: float, ax: float, ay: float,
            value: int) -> None:  # fmt: skip
    """An elliptic cylinder along z."""

    def inside(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        return ((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2 <= 1.0

    _paint(t, p, (cx - ax, cy - ay, -_FAR), (cx + ax, cy + ay, _FAR), inside, value)


def tissue_map(an: Anatomy, p: np.ndarray) -> np.ndarray:
    """Tissue class (uint8) at anatomical points ``p`` of shape (..., 3)."""
    x, y, z = p[..., 0], p[..., 1], p[..., 2]
    t = np.full(x.shape, AIR, dtype=np.uint8)
    r_body = (x / an.body_a) ** 2 + (y / an.body_b) ** 2
    t[r_body <= 1.0] = FAT
    ia, ib = an.body_a - an.fat, an.body_b - an.fat
    r_wall = (x / ia) ** 2 + (y / ib) ** 2
    t[r_wall <= 1.0] = MUSCLE
    t[(x / (ia - 12.0)) ** 2 + (y / (ib - 12.0)) ** 2 <= 1.0] = FAT  # visceral fat under organs
    # ribs: beads along the inner wall, above the lower abdomen
    rib = (
        (r_wall > 0.86) & (r_wall <= 0.97) & (z > -30.0) & (np.mod(z, 26.0) < 9.0) & (y > -0.8 * ib)
    )
    t[rib] = BONE
    for b in an.bowel:
        _ellipsoid(t, p, b, BOWEL)
    for g in an.gas:
        _ellipsoid(t, p, g, GAS)
    _ellipsoid(t, p, an.liver, LIVER)
    _ellipsoid(t, p, an.spleen, SPLEEN)
    for k in an.kidneys:
        _ellipsoid(t, p, k, KIDNEY)
    for lung in an.lungs:
        _ellipsoid(t, p, lung, LUNG)
    _ellipsoid(t, p, an.heart, BLOOD)
    sy = an.spine_y
    _column(t, p, 14.0, sy - 26.0, 11.0, 11.0, BLOOD)  # aorta
    _column(t, p, -22.0, sy - 28.0, 10.0, 10.0, BLOOD)  # IVC
    # spine: paraspinal muscles, posterior arch, canal, vertebral body (cortex, marrow, discs)
    for sx in (-38.0, 38.0):
        _column(t, p, sx, sy + 30.0, 24.0, 20.0, MUSCLE)
    _column(t, p, 0.0, sy + 30.0, 22.0, 15.0, BONE)
    _column(t, p, 0.0, sy + 27.0, 8.0, 8.0, CSF)
    _column(t, p, 0.0, sy, 19.0, 19.0, BONE)

    def marrow(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        return (x**2 + (y - sy) ** 2 <= 16.5**2) & (np.mod(z + 7.0, 32.0) >= 7.0)

    def disc(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        return (x**2 + (y - sy) ** 2 <= 19.0**2) & (np.mod(z + 7.0, 32.0) < 7.0)

    box_lo, box_hi = (-19.0, sy - 19.0, -_FAR), (19.0, sy + 19.0, _FAR)
    _paint(t, p, box_lo, box_hi, marrow, MARROW)
    _paint(t, p, box_lo, box_hi, disc, DISC)
    orientation_marker(an, t, p)
    return t


# The orientation marker: two rods along z just outside the skin on the patient's LEFT (+x in
# LPS), the thinner one anterior of the thicker one, of fat signal (bright on MR like a vitamin-E
# capsule, well above air on CT). Left/right and anterior/posterior flips both show in any
# image, so a test can check the orientation of what annotators see from pixels alone.
MARKER_GAP = 9.0  # mm from the skin (at y = 0) to the thick rod's axis
MARKER_RODS = ((0.0, 5.0), (-14.0, 3.0))  # (y in mm, radius in mm): thick, then thin anterior


def marker_x(an: Anatomy) -> float:
    """Anatomical x (LPS mm, patient's left) of both rods' axes."""
    return an.body_a + MARKER_GAP


def orientation_marker(an: Anatomy, t: np.ndarray, p: np.ndarray) -> None:
    for y, r in MARKER_RODS:
        _column(t, p, marker_x(an), y, r, r, FAT)


def lesion_labels(lesions: list[Lesion], p: np.ndarray) -> np.ndarray:
    """Instance label (uint8: 0 background, i + 1 for ``lesions[i]``) at anatomical points."""
    lab = np.zeros(p.shape[:-1], dtype=np.uint8)
    for i, les in enumerate(lesions):
        r = max(les.semi)
        sl = _crop(p, tuple(c - r for c in les.center), tuple(c + r for c in les.center))
        sub = p[sl]
        if sub.size:
            view = lab[sl]
            view[les.inside(sub)] = i + 1
    return lab


def ct_hu(t: np.ndarray, lab: np.ndarray, lesions: list[Lesion], rng: np.random.Generator,
          noise: float) -> np.ndarray:  # fmt: skip
    """Hounsfield units with quantum noise (float32)."""
    hu = HU.astype(np.float32)[t]
    for i, les in enumerate(lesions):
        hu[lab == i + 1] = LESION_SIGNAL[les.kind][0]
    hu += rng.normal(0.0, noise, size=hu.shape).astype(np.float32)
    return hu


def mr_signal(t: np.ndarray, lab: np.ndarray, lesions: list[Lesion], weighting: str,
              p: np.ndarray, rng: np.random.Generator) -> np.ndarray:  # fmt: skip
    """T1- or T2-like magnitude signal with a smooth coil bias field and Rician noise."""
    table, col = (T1, 1) if weighting == "T1" else (T2, 2)
    s = table.astype(np.float32)[t]
    for i, les in enumerate(lesions):
        s[lab == i + 1] = LESION_SIGNAL[les.kind][col]
    # receive coils on the anterior and posterior wall: brighter near the surface
    bias = 0.8 + 0.35 * (np.abs(p[..., 1]) / 140.0) ** 2 + 0.05 * np.cos(p[..., 2] / 90.0)
    s = s * bias.astype(np.float32)
    sigma = 18.0
    n1 = rng.normal(0.0, sigma, size=s.shape).astype(np.float32)
    n2 = rng.normal(0.0, sigma, size=s.shape).astype(np.float32)
    return np.sqrt((s + n1) ** 2 + n2**2)


def projection(t: np.ndarray, lab: np.ndarray, lesions: list[Lesion], dy: float) -> np.ndarray:
    """Line integral of linear attenuation (1/mm) along the last-but-one axis (anterior-posterior).

    ``t`` and ``lab`` are shaped (rows, depth, cols).
    """
    hu = HU.astype(np.float32)[t]
    for i, les in enumerate(lesions):
        hu[lab == i + 1] = LESION_SIGNAL[les.kind][0]
    mu = np.clip(0.02 * (1.0 + hu / 1000.0), 0.0, None)  # water ~0.02/mm at chest-film energies
    return mu.sum(axis=1) * dy

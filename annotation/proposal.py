"""Round-1 lesion proposals from intensity alone (no labels exist yet).

Lesions in these studies are compact blobs whose signal differs from the organ around them:
darker in liver and kidney, brighter in lung. A morphological top-hat (the image minus its grey
opening, or its grey closing minus the image) keeps structures smaller than the structuring
element and drops organ edges, which a smoothed-background difference would light up as shells.
Candidates are thresholded in units of the image's own noise, split into connected components
and kept when their size and compactness look like a lesion. Dark candidates darker than the body
threshold (bowel gas, air) are dropped. Pure numpy/scipy: it runs anywhere, deterministically.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage as ndi

PROPOSAL_VERSION = "proposal-v1"
#: how far the proposal's score may move P(abnormal) away from 0.5: it was never checked
#: against labels (none exist in round 1), so it is kept within 0.25..0.75
PROPOSAL_TRUST = 0.5


@dataclass(frozen=True)
class ProposalConfig:
    """Sizes are in mm so the same settings work at any voxel spacing."""

    smooth_sigma_mm: float = 1.5
    element_mm: float = 36.0  # structuring element: about the largest lesion diameter
    seed_z: float = 5.0  # a component needs a voxel this many noise units off its background
    extent_z: float = 3.0  # voxels this far off join the component (hysteresis)
    half_max: float = 0.5  # ...and only those at least this share of the component's peak
    min_volume_mm3: float = 150.0
    max_volume_mm3: float = 40000.0
    min_fill: float = 0.25  # voxels / bounding box: an ellipsoid fills ~0.52, a rib far less
    max_aspect: float = 3.0  # longest / shortest bounding-box side (mm): fat strips, vessels
    # CT only: a lesion is soft tissue or fluid, so a candidate's mean HU lies in this range
    # (fat, gas, bone and contrast-filled vessels fall outside)
    ct_hu_range: tuple[float, float] = (-50.0, 150.0)
    body_erode_mm: float = 3.0
    max_components: int = 3  # the strongest few: a proposal for a person to correct, not a census
    score_z: float = 10.0  # z at which the score reaches 1 - 1/e above the seed threshold

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class Proposal:
    """A uint8 mask in the volume's grid, a score in [0, 1] and per-component z values."""

    mask: NDArray[np.uint8]
    score: float
    components: list[float] = field(default_factory=list)


def spacing_from_affine(affine: NDArray[np.floating]) -> tuple[float, ...]:
    """Voxel sizes (mm) from a NIfTI affine."""
    a = np.asarray(affine, dtype=float)
    return tuple(float(x) for x in np.linalg.norm(a[:3, :3], axis=0))


def otsu_threshold(values: NDArray[np.floating], bins: int = 256) -> float:
    """Otsu's threshold of a sample of intensities."""
    v = np.asarray(values, dtype=np.float64).ravel()
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        return lo
    hist, edges = np.histogram(v, bins=bins, range=(lo, hi))
    centers = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centers)
    mu0 = m0 / np.maximum(w0, 1)
    mu1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mu0 - mu1) ** 2
    between = between[:-1]
    # empty bins between two modes give a plateau of equal splits: take its middle
    best = np.flatnonzero(between >= between.max() * (1 - 1e-9))
    return float((centers[best[0]] + centers[best[-1]]) / 2)


def body_mask(volume: NDArray[np.floating]) -> tuple[NDArray[np.bool_], float]:
    """The body: above Otsu's threshold, holes (lungs, gas) filled slice by slice and in 3D,
    largest connected component. Returns the mask and the threshold."""
    thr = otsu_threshold(volume[:: max(1, volume.shape[0] // 64)])
    m = volume > thr
    if not m.any():
        return m, thr
    for k in range(m.shape[2]):
        m[:, :, k] = ndi.binary_fill_holes(m[:, :, k])
    m = ndi.binary_fill_holes(m)
    lab, n = ndi.label(m)
    if n > 1:
        sizes = np.bincount(lab.ravel())
        sizes[0] = 0
        m = lab == int(np.argmax(sizes))
    return m, thr


def _footprint(spacing: tuple[float, ...], mm: float, shape: tuple[int, ...]) -> tuple[int, ...]:
    """A box of about ``mm`` per axis, odd sized, 1 along singleton axes."""
    out = []
    for s, n in zip(spacing, shape, strict=True):
        if n == 1:
            out.append(1)
        else:
            # at most half the axis: a box spanning the whole axis makes the opening of a
            # short volume see every blob from every slice
            out.append(max(3, min(round(mm / s), n // 2) // 2 * 2 + 1))
    return tuple(out)


def _sigmas(spacing: tuple[float, ...], mm: float, shape: tuple[int, ...]) -> tuple[float, ...]:
    return tuple(0.0 if n == 1 else mm / s for s, n in zip(spacing, shape, strict=True))


def smoothed_noise(
    s: NDArray[np.float32], region: NDArray[np.bool_], spacing: tuple[float, ...], sigma_mm: float
) -> float:
    """Noise standard deviation of the smoothed image: differences between voxels farther apart
    than the smoothing kernel are independent, and inside organs (most pairs) the signal is
    flat, so a robust spread of those differences over sqrt(2) measures the noise."""
    axis = int(np.argmax(s.shape))
    k = max(1, int(np.ceil(3 * sigma_mm / spacing[axis])))
    n = s.shape[axis]
    if n <= k:
        return 1e-6
    a = np.take(s, range(k, n), axis=axis)
    b = np.take(s, range(0, n - k), axis=axis)
    r = np.take(region, range(k, n), axis=axis) & np.take(region, range(0, n - k), axis=axis)
    d = (a - b)[r]
    if d.size == 0:
        return 1e-6
    return max(1.4826 * float(np.median(np.abs(d - np.median(d)))) / np.sqrt(2.0), 1e-6)


def propose(
    volume: NDArray[np.floating],
    spacing: tuple[float, ...] = (1.0, 1.0, 1.0),
    config: ProposalConfig | None = None,
    modality: str | None = None,
) -> Proposal:
    """Lesion proposal for one volume (2D images may come as (x, y) or (x, y, 1)). For CT
    (intensities on the 0..1 scale of -1000..1000 HU) candidates must look like soft tissue."""
    cfg = config or ProposalConfig()
    v = np.asarray(volume, dtype=np.float32)
    squeeze = v.ndim == 2
    if squeeze:
        v = v[:, :, None]
        spacing = (*tuple(spacing)[:2], 1.0)
    spacing = tuple(float(s) for s in spacing)[:3]
    empty = np.zeros(v.shape, dtype=np.uint8)
    body, thr = body_mask(v)
    if body.sum() < 10:
        return Proposal(empty[:, :, 0] if squeeze else empty, 0.0)
    erode = _footprint(spacing, 2 * cfg.body_erode_mm, v.shape)
    inner = ndi.binary_erosion(body, structure=np.ones(erode, dtype=bool))
    # outside the body the image is replaced by the body's median, so air does not make the
    # body's rim look like a blob
    fill = float(np.median(v[body]))
    s = ndi.gaussian_filter(np.where(body, v, fill), _sigmas(spacing, cfg.smooth_sigma_mm, v.shape))
    noise = smoothed_noise(s, inner if inner.any() else body, spacing, cfg.smooth_sigma_mm)
    size = _footprint(spacing, cfg.element_mm, v.shape)
    white = s - ndi.grey_opening(s, size=size)
    black = ndi.grey_closing(s, size=size) - s
    mask = np.zeros(v.shape, dtype=np.uint8)
    comps: list[float] = []
    cand: list[tuple[float, int, int]] = []
    labels: dict[int, NDArray[np.int32]] = {}
    zs: dict[int, NDArray[np.float32]] = {}
    voxel_mm3 = float(np.prod([sp for sp, n in zip(spacing, v.shape, strict=True) if n > 1]))
    is_ct = (modality or "").upper() == "CT"
    lo_ct, hi_ct = ((np.asarray(cfg.ct_hu_range) + 1000.0) / 2000.0).tolist()
    for th, dark in ((white, False), (black, True)):
        # the top-hat of pure noise sits a few noise units above zero (the opening takes the
        # minimum over a large box): measure from its median inside the body
        base = float(np.median(th[inner] if inner.any() else th[body]))
        z = (th - base) / noise
        extent = (z > cfg.extent_z) & inner
        lab, n = ndi.label(extent)
        if n == 0:
            continue
        idx = np.arange(1, n + 1)
        zmax = ndi.maximum(z, lab, idx)
        counts = ndi.sum(np.ones_like(z), lab, idx)
        # intensity of each component's core (its half-maximum region), not of its blurred rim
        peak = np.concatenate([[np.inf], zmax])[lab]
        core = np.where(z >= cfg.half_max * peak, lab, 0)
        means = ndi.mean(v, core, idx)
        slices = ndi.find_objects(lab)
        for i, sl in enumerate(slices):
            if sl is None or zmax[i] < cfg.seed_z:
                continue
            vol_mm3 = counts[i] * voxel_mm3
            if not (cfg.min_volume_mm3 <= vol_mm3 <= cfg.max_volume_mm3):
                continue
            box = int(np.prod([x.stop - x.start for x in sl]))
            if counts[i] / box < cfg.min_fill:
                continue
            if dark and means[i] <= thr:  # gas or air, not tissue
                continue
            sides = [
                (x.stop - x.start) * sp
                for x, sp, n in zip(sl, spacing, v.shape, strict=True)
                if n > 1
            ]
            if max(sides) > cfg.max_aspect * min(sides):
                continue
            if is_ct and not (lo_ct <= means[i] <= hi_ct):
                continue
            cand.append((-round(float(zmax[i]), 3), int(dark), i + 1))
        labels[int(dark)] = lab
        zs[int(dark)] = z
    cand.sort()
    for negz, dark_i, lid in cand[: cfg.max_components]:
        # the blurred rim of a high-contrast blob clears a fixed threshold far outside its edge;
        # its half-maximum contour is where the edge is
        zmap = zs[dark_i]
        mask[(labels[dark_i] == lid) & (zmap >= cfg.half_max * -negz)] = 1
        comps.append(-negz)
    score = 0.0
    if comps:
        score = float(1.0 - np.exp(-(comps[0] - cfg.seed_z + 1.0) / cfg.score_z))
    return Proposal(mask[:, :, 0] if squeeze else mask, round(score, 6), comps)


def proposal_probability(score: float, trust: float = PROPOSAL_TRUST) -> float:
    """P(abnormal) shown with a proposal: its score shrunk toward 0.5 by ``trust``.

    The score (``1 - exp(-(z - seed_z + 1) / score_z)`` of the strongest component, 0 without
    one) ranks volumes by how lesion-like their strongest blob is; it is not a probability and
    was never fitted to labels. Used raw, a volume without a candidate scored 0, so each of its
    slices showed "normal, 100%". Shrunk, it stays an ordering and says how little is known.
    """
    s = float(np.clip(score, 0.0, 1.0))
    return round(0.5 + trust * (s - 0.5), 6)

"""Memorization check: is a synthetic image a (possibly flipped) copy of a training record?

Generative models copy training images, most of all from small sets and from 2D slices of 3D
volumes (Carlini et al. 2023, Akbar et al. 2025), and FID-like scores cannot see it. So each
synthetic image is matched to its nearest training record by normalised cross-correlation (NCC)
and, when features are given, by embedding distance; "too close" is calibrated on how close real
images of different patients come to each other, since one patient's neighbouring slices are
near-copies of one another and would make any threshold meaningless.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

_CHUNK = 512
_FLIPS = (("", None), ("horizontally", -1), ("vertically", -2))


def _normalise(images: np.ndarray) -> np.ndarray:
    """Flatten, zero-mean, unit-norm; a constant image becomes all zeros (NCC 0 with anything)."""
    x = np.asarray(images, dtype=np.float64).reshape(len(images), -1)
    x = x - x.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norm, out=np.zeros_like(x), where=norm > 1e-12)


def ncc_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) normalised cross-correlation in [-1, 1], computed in row chunks."""
    na, nb = _normalise(a), _normalise(b)
    out = np.empty((len(na), len(nb)), dtype=np.float64)
    for start in range(0, len(na), _CHUNK):
        out[start : start + _CHUNK] = na[start : start + _CHUNK] @ nb.T
    return np.clip(out, -1.0, 1.0)


def _variants(train: np.ndarray, flips: bool) -> Iterator[tuple[str, np.ndarray]]:
    x = np.asarray(train)
    for name, axis in _FLIPS if flips else _FLIPS[:1]:
        yield name, _normalise(x if axis is None else np.flip(x, axis=axis))


def _nearest_ncc(
    query: np.ndarray, train: np.ndarray, flips: bool, same: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Best NCC per query over train (and its flips); with `same` (patient per image, query being
    train itself) a record's own patient's images are left out."""
    q = _normalise(query)
    best = np.full(len(q), -np.inf)
    arg = np.zeros(len(q), dtype=np.int64)
    flip = np.full(len(q), "", dtype=object)
    for name, t in _variants(train, flips):
        for start in range(0, len(q), _CHUNK):
            sl = slice(start, start + _CHUNK)
            sim = q[sl] @ t.T
            if same is not None:
                sim[same[sl, None] == same[None, :]] = -np.inf
            j = sim.argmax(axis=1)
            v = sim[np.arange(len(j)), j]
            better = v > best[sl]  # strict: on ties the unflipped match wins
            best[sl] = np.where(better, v, best[sl])
            arg[sl] = np.where(better, j, arg[sl])
            flip[sl] = np.where(better, name, flip[sl])
    return np.clip(best, -1.0, 1.0), arg, flip


def _nearest_emb(
    query: np.ndarray, train: np.ndarray, same: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    q, t = np.asarray(query, dtype=np.float64), np.asarray(train, dtype=np.float64)
    dist = np.empty(len(q))
    arg = np.empty(len(q), dtype=np.int64)
    t2 = (t**2).sum(axis=1)
    for start in range(0, len(q), _CHUNK):
        sl = slice(start, start + _CHUNK)
        d2 = (q[sl] ** 2).sum(axis=1)[:, None] + t2[None, :] - 2 * q[sl] @ t.T
        if same is not None:
            d2[same[sl, None] == same[None, :]] = np.inf
        arg[sl] = d2.argmin(axis=1)
        dist[sl] = np.sqrt(np.maximum(d2[np.arange(len(arg[sl])), arg[sl]], 0.0))
    return dist, arg


def nearest_records(
    synth: np.ndarray,
    train: np.ndarray,
    train_patients: np.ndarray,
    synth_features: np.ndarray | None = None,
    train_features: np.ndarray | None = None,
    flips: bool = True,
) -> pd.DataFrame:
    """Each synthetic image's nearest training record, by NCC and (if given) embedding distance.

    With flips, horizontally and vertically flipped training images are candidates too, so a
    mirrored copy is caught. Columns: synth_index, ncc_max, ncc_patient, ncc_train_index, flipped,
    flip ("", "horizontally", "vertically"), emb_dist, emb_patient, emb_train_index.
    """
    patients = np.asarray(train_patients).astype(str)
    if len(patients) != len(train):
        raise ValueError(f"got {len(train)} training images but {len(patients)} patient ids")
    ncc, j, flip = _nearest_ncc(synth, train, flips)
    table = pd.DataFrame(
        {
            "synth_index": np.arange(len(synth)),
            "ncc_max": ncc,
            "ncc_patient": patients[j],
            "ncc_train_index": j,
            "flipped": flip != "",
            "flip": flip.astype(str),
        }
    )
    if (synth_features is None) != (train_features is None):
        raise ValueError("give features for both synthetic and training images, or for neither")
    if synth_features is not None and train_features is not None:
        dist, k = _nearest_emb(synth_features, train_features)
        table["emb_dist"], table["emb_patient"], table["emb_train_index"] = dist, patients[k], k
    else:
        table["emb_dist"], table["emb_patient"], table["emb_train_index"] = np.nan, None, -1
    return table


def real_reference(
    train: np.ndarray,
    train_patients: np.ndarray,
    features: np.ndarray | None = None,
    flips: bool = True,
) -> pd.DataFrame:
    """How close each training image comes to any OTHER patient's images: the real-to-real baseline.

    Use the same `flips` as in `nearest_records`, or the two distributions are not comparable.
    Columns: train_index, patient, ncc_max, ncc_patient, emb_dist, emb_patient.
    """
    patients = np.asarray(train_patients).astype(str)
    if len(patients) != len(train):
        raise ValueError(f"got {len(train)} training images but {len(patients)} patient ids")
    if len(np.unique(patients)) < 2:
        raise ValueError(
            "the real-to-real reference needs training images from at least 2 patients"
        )
    ncc, j, _ = _nearest_ncc(train, train, flips, same=patients)
    table = pd.DataFrame(
        {
            "train_index": np.arange(len(train)),
            "patient": patients,
            "ncc_max": ncc,
            "ncc_patient": patients[j],
        }
    )
    if features is not None:
        dist, k = _nearest_emb(features, features, same=patients)
        table["emb_dist"], table["emb_patient"] = dist, patients[k]
    else:
        table["emb_dist"], table["emb_patient"] = np.nan, None
    return table


@dataclass
class PrivacyResult:
    """Which synthetic samples survive, and why each dropped one was dropped."""

    keep: np.ndarray
    dropped: np.ndarray
    reasons: list[str]
    dropped_share: float
    thresholds: dict[str, float | None]


def privacy_filter(
    nearest: pd.DataFrame, reference: pd.DataFrame, quantile: float = 0.05
) -> PrivacyResult:
    """Drop synthetic samples closer to a training record than real patients come to each other.

    `quantile` q is the share of genuinely new images (drawn like the real ones) one accepts to
    lose. It is split evenly over the criteria in use, so the union stays near q: with NCC alone a
    sample is dropped when ncc_max >= the (1 - q) quantile of real-to-real NCC; with embeddings
    too, when ncc_max >= the (1 - q/2) quantile or emb_dist <= the q/2 quantile of real-to-real
    embedding distances. A copy of a training image scores NCC near 1, far above any real pair.
    """
    if not 0.0 < quantile < 0.5:
        raise ValueError(f"quantile must lie in (0, 0.5); got {quantile}")
    use_emb = bool(nearest["emb_dist"].notna().any() and reference["emb_dist"].notna().any())
    q = quantile / 2 if use_emb else quantile
    ncc_t = float(np.quantile(reference["ncc_max"].to_numpy(dtype=float), 1 - q))
    emb_t = (
        float(np.quantile(reference["emb_dist"].dropna().to_numpy(float), q)) if use_emb else None
    )

    ncc = nearest["ncc_max"].to_numpy(dtype=float)
    too_close = ncc >= ncc_t
    by_emb = np.zeros(len(nearest), dtype=bool)
    if emb_t is not None:
        by_emb[:] = nearest["emb_dist"].to_numpy(dtype=float) <= emb_t
    drop = too_close | by_emb

    reasons = []
    for i in np.flatnonzero(drop):
        row = nearest.iloc[i]
        parts = []
        if too_close[i]:
            how = f", flipped {row['flip']}" if row["flipped"] else ""
            parts.append(f"ncc {ncc[i]:.3f} >= {ncc_t:.3f} (patient {row['ncc_patient']}{how})")
        if by_emb[i]:
            parts.append(
                f"embedding distance {row['emb_dist']:.3f} <= {emb_t:.3f} "
                f"(patient {row['emb_patient']})"
            )
        reasons.append("; ".join(parts))
    return PrivacyResult(
        keep=~drop,
        dropped=nearest["synth_index"].to_numpy()[drop],
        reasons=reasons,
        dropped_share=float(drop.mean()) if len(drop) else 0.0,
        thresholds={"quantile": quantile, "ncc": ncc_t, "emb_dist": emb_t},
    )

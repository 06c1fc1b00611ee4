"""What the slice classifier looked at: Grad-CAM maps, two numbers that say whether they fall on
the lesion, and an overlay picture for the dataset card.

A map that lights up the lesion is evidence the classifier learned the lesion; one that lights
up a corner, a stripe or the table is evidence of a shortcut (a site's scanner, a burned-in
marker) that the release should be checked for. Pictures are shown the radiological way.

Orientation: the volumes are RAS+ (nibabel's and NIfTI's convention): the array's first axis
increases towards the patient's Right, the second towards Anterior, the third towards Superior.
Radiological display puts the patient's right on the viewer's left and anterior at the top, so
display row = reversed y and display column = reversed x (:func:`radiological`).
"""

from __future__ import annotations

import copy
import textwrap
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from medcurate.evaluate.classifier import TARGET_LAYER
from medcurate.io import atomic_write_bytes
from medcurate.torchrun import deterministic


def gradcam(
    model: Any, images: np.ndarray, batch_size: int = 64, layer: str = TARGET_LAYER
) -> np.ndarray:
    """Grad-CAM of the lesion logit, (N, S, S), each map scaled to 0..1 by its maximum (an
    all-zero map stays zero: nothing in the slice pushed the logit up).

    MONAI's GradCAM hooks the module it is given for good and its default post-processing maps
    max to 0 and min to 1, so it runs on a copy of the model and without post-processing here.
    ``class_idx=0`` picks the single logit (its default, the argmax, indexes a (B, B) matrix).
    """
    import torch
    from monai.visualize import GradCAM

    x = np.asarray(images, dtype=np.float32)
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"images must be (N, 1, S, S), got {x.shape}")
    net = copy.deepcopy(model)
    net.eval()
    cam = GradCAM(nn_module=net, target_layers=layer, postprocessing=lambda t: t)
    out = np.zeros((len(x), *x.shape[2:]), np.float32)
    with deterministic(0, torch.get_num_threads()), torch.enable_grad():
        for start in range(0, len(x), batch_size):
            xb = torch.from_numpy(np.ascontiguousarray(x[start : start + batch_size]))
            maps = cam(x=xb, class_idx=0).detach().numpy()[:, 0]
            out[start : start + len(xb)] = maps
    peak = out.reshape(len(out), -1).max(axis=1) if len(out) else np.zeros(0)
    scale = np.where(peak > 0, peak, 1.0)[:, None, None]
    return np.clip(out / scale, 0.0, 1.0).astype(np.float32)


def saliency_share(cam: np.ndarray, mask: np.ndarray) -> float:
    """Share of the map's mass inside the mask (NaN when the mask is empty or the map is zero).
    Compare it with the mask's area fraction: a map blind to the lesion scores about that."""
    c = np.asarray(cam, dtype=np.float64)
    m = np.asarray(mask).reshape(c.shape) > 0
    total = c.sum()
    if not m.any() or total <= 0:
        return float("nan")
    return float((c * m).sum() / total)


def pointing_hit(cam: np.ndarray, mask: np.ndarray) -> bool:
    """Whether the map's peak lies in the mask grown by one pixel (the pointing game)."""
    c = np.asarray(cam)
    m = np.asarray(mask).reshape(c.shape) > 0
    if not m.any():
        return False
    grown = ndi.binary_dilation(m, structure=np.ones((3, 3), bool))
    return bool(grown.flat[int(np.argmax(c))])


def radiological(slice_xy: np.ndarray) -> np.ndarray:
    """An axial RAS slice indexed [x, y] as a picture: rows top to bottom run anterior to
    posterior, columns left to right run from the patient's right to left."""
    a = np.asarray(slice_xy)
    if a.ndim != 2:
        raise ValueError(f"expected one 2D slice, got {a.ndim} dimensions")
    return np.ascontiguousarray(a[::-1, ::-1].T)


def overlay_png(
    image: np.ndarray,
    cam: np.ndarray,
    mask: np.ndarray | None,
    path: str | Path,
    title: str = "",
    dpi: int = 100,
) -> Path:
    """The slice in grey, the Grad-CAM as a translucent heat map and the lesion outline in
    cyan, shown radiologically; the same inputs give the same PNG bytes."""
    import io

    from matplotlib.figure import Figure

    img = radiological(np.asarray(image, dtype=np.float32).squeeze())
    heat = radiological(np.asarray(cam, dtype=np.float32).squeeze())
    fig = Figure(figsize=(3, 3.4), dpi=dpi)
    try:
        ax = fig.add_subplot(1, 1, 1)
        ax.imshow(img, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.imshow(heat, cmap="jet", vmin=0.0, vmax=1.0, alpha=0.4, interpolation="bilinear")
        if mask is not None and np.asarray(mask).any():
            m = radiological((np.asarray(mask).squeeze() > 0).astype(np.float32))
            ax.contour(m, levels=[0.5], colors="cyan", linewidths=1.0)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel("R                L", fontsize=7)
        if title:
            ax.set_title(textwrap.fill(title, 36), fontsize=8)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", metadata={"Software": None})
    finally:
        fig.clear()
    return atomic_write_bytes(path, buf.getvalue())


def occlusion(
    model: Any, images: np.ndarray, mask_size: int | None = None, overlap: float = 0.6
) -> np.ndarray:
    """Occlusion sensitivity, (N, S, S) in 0..1: how much the lesion probability falls when each
    region is covered by the image's mean (MONAI ``OcclusionSensitivity``), scaled by its maximum.

    Unlike Grad-CAM it asks the model itself, so it does not depend on which layer is hooked: a
    region the decision rests on shows, wherever it is. ``mask_size`` defaults to S / 6.
    """
    import torch
    from monai.visualize import OcclusionSensitivity

    x = np.asarray(images, dtype=np.float32)
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"images must be (N, 1, S, S), got {x.shape}")
    size = mask_size or max(3, x.shape[-1] // 6)
    net = copy.deepcopy(model)
    net.eval()
    occ = OcclusionSensitivity(
        nn_module=net,
        mask_size=size,
        n_batch=64,
        verbose=False,
        mode="mean_img",
        overlap=overlap,
        activate=torch.sigmoid,
    )
    out = np.zeros((len(x), *x.shape[2:]), np.float32)
    with deterministic(0, torch.get_num_threads()), torch.no_grad():
        for i in range(len(x)):
            xb = torch.from_numpy(np.ascontiguousarray(x[i : i + 1]))
            base = float(torch.sigmoid(net(xb)).reshape(-1)[0])
            with warnings.catch_warnings():  # MONAI 1.6 indexes with lists (a torch warning)
                warnings.simplefilter("ignore", UserWarning)
                occ_map, _ = occ(x=xb)
            drop = base - occ_map.detach().numpy().reshape(x.shape[2:])
            out[i] = np.clip(drop, 0.0, None)
    peak = out.reshape(len(out), -1).max(axis=1) if len(out) else np.zeros(0)
    scale = np.where(peak > 0, peak, 1.0)[:, None, None]
    return np.clip(out / scale, 0.0, 1.0).astype(np.float32)

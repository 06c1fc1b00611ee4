"""Series geometry: positions, affines and index round trips."""

from __future__ import annotations

import numpy as np

from medcurate.synth.geometry import centered


def test_centered_axial_block_is_centred_and_steps_along_the_normal() -> None:
    g = centered(np.array([10.0, -5.0, 100.0]), (1, 0, 0), (0, 1, 0), 4, 6, 5, 2.0, 3.0, 5.0)
    pts = g.voxel_centers()
    assert pts.shape == (5, 4, 6, 3)
    assert np.allclose(pts.reshape(-1, 3).mean(axis=0), [10.0, -5.0, 100.0], atol=1e-4)
    assert np.allclose(pts[1, 0, 0] - pts[0, 0, 0], [0, 0, 5.0])
    assert np.allclose(pts[0, 1, 0] - pts[0, 0, 0], [0, 2.0, 0])  # rows move along col_dir
    assert np.allclose(pts[0, 0, 1] - pts[0, 0, 0], [3.0, 0, 0])  # columns along row_dir
    assert np.allclose(g.position(4), pts[4, 0, 0])


def test_reversed_order_and_negative_cosines() -> None:
    g = centered(np.zeros(3), (-1, 0, 0), (0, 1, 0), 2, 2, 3, 1.0, 1.0, 2.0, reversed_order=True)
    assert np.allclose(g.normal, [0, 0, -1])
    assert np.allclose(g.step, [0, 0, 2.0])  # reversed against a -z normal: z increases
    assert g.position(2)[2] > g.position(0)[2]


def test_affine_maps_indices_to_voxel_centres_in_ras() -> None:
    c = np.deg2rad(12.0)
    g = centered(np.array([3.0, 4.0, 5.0]), (1, 0, 0), (0, np.cos(c), np.sin(c)), 5, 7, 4,
                 1.5, 2.5, 3.0)  # fmt: skip
    pts = g.voxel_centers()
    ras = g.affine_ras()
    for k, r, col in [(0, 0, 0), (3, 4, 6), (1, 2, 5)]:
        lps = pts[k, r, col]
        assert np.allclose(ras @ [col, r, k, 1], [-lps[0], -lps[1], lps[2], 1], atol=1e-4)
        assert np.allclose(g.lps_to_index(lps), [col, r, k], atol=1e-4)

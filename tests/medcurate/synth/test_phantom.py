"""The parametric body: tissues where anatomy puts them, lesions, MR and projection signal."""

from __future__ import annotations

import numpy as np

from medcurate.synth import phantom as ph


def _anatomy() -> ph.Anatomy:
    return ph.draw_anatomy(np.random.default_rng(0), bmi=26.0, sex="M")


def test_tissues_at_known_places() -> None:
    an = _anatomy()
    pts = np.array(
        [
            [0.0, 0.0, 500.0],  # far above the torso, still inside the body cylinder
            [an.body_a + 20, 0.0, 0.0],  # beside the body: air
            [an.body_a - an.fat / 2, 0.0, -100.0],  # subcutaneous fat at the flank
            [0.0, an.spine_y, -1.0],  # vertebral body (or disc)
            list(an.liver.center),
            list(an.kidneys[0].center),
        ],
        dtype=np.float32,
    )
    t = ph.tissue_map(an, pts)
    assert t[1] == ph.AIR and t[2] == ph.FAT
    assert t[3] in (ph.MARROW, ph.DISC)
    assert t[4] == ph.LIVER and t[5] == ph.KIDNEY
    assert ph.HU[ph.LIVER] > ph.HU[ph.FAT] and ph.HU[ph.LUNG] < -500


def test_orientation_marker_on_the_patients_left_only() -> None:
    """Two rods just outside the skin on the patient's left (+x in LPS), the thin one anterior
    (-y); their mirror images on the right and behind are air."""
    an = _anatomy()
    x = ph.marker_x(an)
    (y_thick, r_thick), (y_thin, r_thin) = ph.MARKER_RODS
    assert r_thin < r_thick and y_thin < y_thick  # thinner, and anterior (LPS: -y)
    pts = np.array(
        [[x, y_thick, 0.0], [x, y_thin, -80.0], [-x, y_thick, 0.0], [-x, y_thin, 0.0],
         [x, -y_thin, 0.0], [x - r_thick - 1.0, 0.0, 0.0]],
        dtype=np.float32,
    )  # fmt: skip
    t = ph.tissue_map(an, pts)
    assert t.tolist()[:2] == [ph.FAT, ph.FAT]
    assert t.tolist()[2:] == [ph.AIR] * 4  # not mirrored; a gap of air to the skin


def test_lesion_inside_and_labels() -> None:
    les = ph.Lesion(
        "liver", "cyst", (0.0, 0.0, 0.0), (10.0, 5.0, 5.0), ((1, 0, 0), (0, 1, 0), (0, 0, 1))
    )
    p = np.array([[0, 0, 0], [9, 0, 0], [0, 6, 0], [11, 0, 0]], dtype=np.float32)
    assert les.inside(p).tolist() == [True, True, False, False]
    assert ph.lesion_labels([les, les.scaled(0.1)], p).tolist() == [2, 1, 0, 0]
    assert np.isclose(les.scaled(2.0).volume_mm3, 8 * les.volume_mm3)


def test_ct_lesion_contrast_and_mr_weighting() -> None:
    an = _anatomy()
    c = np.asarray(an.liver.center, dtype=np.float32)
    les = ph.Lesion(
        "liver", "cyst", tuple(c.tolist()), (8.0, 8.0, 8.0), ((1, 0, 0), (0, 1, 0), (0, 0, 1))
    )  # type: ignore[arg-type]
    grid = c + np.stack(np.meshgrid(*[np.arange(-20, 21, 2.0)] * 3, indexing="ij"), -1).astype(
        np.float32
    )
    t, lab = ph.tissue_map(an, grid), ph.lesion_labels([les], grid)
    rng = np.random.default_rng(1)
    hu = ph.ct_hu(t, lab, [les], rng, noise=5.0)
    assert hu[lab == 1].mean() < hu[(lab == 0) & (t == ph.LIVER)].mean() - 30
    t2 = ph.mr_signal(t, lab, [les], "T2", grid, rng)
    t1 = ph.mr_signal(t, lab, [les], "T1", grid, rng)
    assert t2[lab == 1].mean() > 2 * t2[(lab == 0) & (t == ph.LIVER)].mean()  # cysts bright on T2
    assert t1[lab == 1].mean() < t1[(lab == 0) & (t == ph.LIVER)].mean()  # and dark on T1


def test_projection_is_higher_through_bone_than_lung() -> None:
    t = np.full((1, 10, 2), ph.MUSCLE, dtype=np.uint8)
    t[0, :, 0] = ph.LUNG
    t[0, 3:5, 1] = ph.BONE
    line = ph.projection(t, np.zeros_like(t), [], dy=4.0)
    assert line.shape == (1, 2) and line[0, 1] > line[0, 0] > 0

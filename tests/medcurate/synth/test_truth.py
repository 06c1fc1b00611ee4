"""Ground truth files: phi.json categories, masks in NIfTI, the labels schema."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np

from medcurate.synth.geometry import centered
from medcurate.synth.plan import plan_cohort
from medcurate.synth.truth import (
    patient_phi,
    planted_phi,
    planted_uids,
    write_mask,
    write_phi,
)


def test_phi_json_lists_every_form_and_keeps_uids_and_study_dates_apart(tmp_path: Path) -> None:
    c = plan_cohort(3, seed=1)
    write_phi(tmp_path, c.patients)
    doc = json.loads((tmp_path / "phi.json").read_text(encoding="utf-8"))
    phi, uids = planted_phi(tmp_path), planted_uids(tmp_path)
    p = c.patients[0]
    person = p.identity.person
    assert {person.pn, person.plain, person.folder, p.identity.mrn, p.identity.address} <= phi
    assert p.birth_date.strftime("%Y%m%d") in phi and p.identity.phone in phi
    assert p.studies[0].accession in phi and p.site.institution in phi
    assert p.studies[0].referring.pn_staff in phi
    assert p.studies[0].uid in uids and p.studies[0].uid not in phi
    assert set(doc["patients"]) == {q.key for q in c.patients}
    study_dates = {d for q in doc["patients"].values() for d in q["study_dates"]}
    assert study_dates and study_dates.isdisjoint(phi)


def test_patient_phi_is_per_patient(tmp_path: Path) -> None:
    c = plan_cohort(2, seed=3)
    a, b = (patient_phi(p) for p in c.patients)
    assert set(a["names"]).isdisjoint(b["names"])
    assert set(a["ids"]).isdisjoint(b["ids"])


def test_mask_is_written_c_r_k_with_the_ras_affine(tmp_path: Path) -> None:
    g = centered(np.array([1.0, 2.0, 3.0]), (1, 0, 0), (0, 0, -1), 3, 4, 2, 1.5, 2.0, 5.0)
    labels = np.zeros((2, 3, 4), dtype=np.uint8)  # (slices, rows, cols)
    labels[1, 2, 3] = 7
    write_mask(tmp_path / "m.nii.gz", labels, g)
    img = nib.load(tmp_path / "m.nii.gz")
    data = np.asarray(img.dataobj)
    assert data.shape == (4, 3, 2) and data[3, 2, 1] == 7 and data.sum() == 7
    assert np.allclose(img.affine, g.affine_ras())
    assert img.header.get_sform(coded=True)[1] == 1


def test_mask_bytes_are_deterministic_and_values_uint8(tmp_path: Path) -> None:
    g = centered(np.array([0.0, 0.0, 0.0]), (1, 0, 0), (0, 1, 0), 5, 6, 3, 1.0, 1.0, 2.0)
    labels = np.zeros((3, 5, 6), dtype=np.uint8)
    labels[1, 2:4, 1:3] = 2
    write_mask(tmp_path / "a.nii.gz", labels, g)
    write_mask(tmp_path / "b.nii.gz", labels, g)
    assert (tmp_path / "a.nii.gz").read_bytes() == (tmp_path / "b.nii.gz").read_bytes()
    img = nib.load(tmp_path / "a.nii.gz")
    assert img.get_data_dtype() == np.uint8
    assert np.array_equal(np.asarray(img.dataobj), np.transpose(labels, (2, 1, 0)))
    assert img.header.get_qform(coded=True)[1] == 1

"""The cohort plan: prevalence by site, repeat studies, pinned cases, prefix stability, UIDs."""

from __future__ import annotations

import re

import numpy as np
import pytest

from medcurate.synth.plan import SCAN_CENTER, make_uid, plan_cohort


def test_about_a_third_of_patients_have_lesions() -> None:
    c = plan_cohort(60, seed=3)
    frac = np.mean([bool(p.lesions) for p in c.patients])
    assert 0.2 <= frac <= 0.5


def test_prevalence_differs_by_site() -> None:
    c = plan_cohort(400, seed=11)
    by_site: dict[str, list[bool]] = {}
    for p in c.patients:
        by_site.setdefault(p.site.key, []).append(bool(p.lesions))
    rates = {k: float(np.mean(v)) for k, v in by_site.items()}
    assert len(rates) == 4
    assert max(rates.values()) - min(rates.values()) > 0.2
    assert rates["site-4"] > rates["site-1"]


def test_small_cohort_has_every_case_and_is_a_prefix_of_a_larger_one() -> None:
    small, large = plan_cohort(3, seed=2), plan_cohort(12, seed=2)
    assert [p.identity for p in small.patients] == [p.identity for p in large.patients[:3]]
    assert [s.uid for s in small.studies] == [s.uid for s in large.studies[: len(small.studies)]]
    kinds = {s.kind for s in small.studies}
    assert kinds == {"CT", "MR", "XR"}
    assert small.patients[0].lesions and not small.patients[1].lesions
    assert any(len(p.studies) == 2 for p in small.patients)


def test_first_patient_gives_the_next_patients_of_the_same_cohort() -> None:
    whole = plan_cohort(14, seed=2)
    first, second = plan_cohort(12, seed=2), plan_cohort(2, seed=2, first_patient=12)
    assert [p.key for p in second.patients] == ["P0013", "P0014"]
    assert [p.identity for p in second.patients] == [p.identity for p in whole.patients[12:]]
    assert [s.uid for s in second.studies] == [s.uid for s in whole.studies[len(first.studies) :]]
    # new people: no patient, study or series is shared with the first batch
    assert not {p.identity.mrn for p in first.patients} & {p.identity.mrn for p in second.patients}
    series = {se.uid for s in first.studies for se in s.series}
    assert not series & {se.uid for s in second.studies for se in s.series}
    assert [p.identity for p in plan_cohort(3, seed=2, first_patient=0).patients] == [
        p.identity for p in whole.patients[:3]
    ]
    with pytest.raises(ValueError, match="first_patient"):
        plan_cohort(1, seed=2, first_patient=-1)


def test_repeat_studies_are_months_apart_and_follow_up_references_the_prior() -> None:
    c = plan_cohort(30, seed=4)
    repeats = [p for p in c.patients if len(p.studies) == 2]
    assert repeats
    for p in repeats:
        first, second = p.studies
        assert 60 <= (second.date - first.date).days <= 420
        assert second.prior_uid == first.uid and first.prior_uid is None
        assert second.uid != first.uid and second.frame_uid != first.frame_uid


def test_names_are_unique_and_ids_contain_letters() -> None:
    c = plan_cohort(80, seed=5)
    names = [p.identity.person.pn for p in c.patients]
    assert len(set(names)) == len(names)
    for p in c.patients:
        # all-digit IDs would turn up by chance inside other UIDs and fool PHI scans
        for s in [p.identity.mrn, p.identity.other_id, *(st.accession for st in p.studies)]:
            assert re.search("[A-Z]", s), s


def test_lesions_lie_inside_the_region_every_series_covers() -> None:
    c = plan_cohort(100, seed=6)
    lesions = [les for p in c.patients for les in p.lesions]
    assert len(lesions) > 20
    assert {les.organ for les in lesions} == {"liver", "kidney", "lung"}
    for les in lesions:
        d = np.asarray(les.center) - SCAN_CENTER
        assert abs(d[2]) <= 75.0 + 1e-6 and abs(d[1]) <= 80.0 + 1e-6
        assert min(les.semi) >= 5.0
    for p in c.patients:
        for a in range(len(p.lesions)):
            for b in range(a + 1, len(p.lesions)):
                gap = np.linalg.norm(np.subtract(p.lesions[a].center, p.lesions[b].center))
                assert gap > max(p.lesions[a].semi) + max(p.lesions[b].semi)


def test_uids_are_valid_deterministic_and_distinct() -> None:
    u = make_uid(1, "P0001", 0, "study")
    assert u == make_uid(1, "P0001", 0, "study") != make_uid(2, "P0001", 0, "study")
    assert len(u) <= 64 and re.fullmatch(r"[0-9]+(\.[0-9]+)*", u)
    c = plan_cohort(10, seed=1)
    uids = [x for s in c.studies for se in s.series for x in (se.uid, *se.instance_uids)]
    uids += [s.uid for s in c.studies] + [s.frame_uid for s in c.studies]
    assert len(set(uids)) == len(uids)

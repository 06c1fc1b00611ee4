"""The cohort plan: who the patients are, what was scanned where and when, and what they have.

Planning draws every random choice and every UID but renders no pixels, so a 60-patient cohort
plans in milliseconds (tests check prevalence on the plan). Each patient's draws come from its
own seed stream ``(seed, patient index)``, so a cohort of 6 is the first 6 patients of a cohort
of 12 with the same seed.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np
from pydicom.uid import generate_uid

from medcurate.synth.geometry import SeriesGeometry, centered
from medcurate.synth.identities import Identity, Person, Site, make_identity, make_sites
from medcurate.synth.phantom import (
    Anatomy,
    Ellipsoid,
    Lesion,
    draw_anatomy,
)

# the region every series covers, in anatomical mm (lesions are placed inside it)
SCAN_CENTER = np.array([0.0, 10.0, 20.0])
LESION_Z = (-55.0, 95.0)
LESION_Y = (-70.0, 80.0)
REPEAT_FRACTION = 0.35
STUDY_KINDS = ("CT", "MR", "XR")
STUDY_KIND_P = (0.62, 0.22, 0.16)


def make_uid(seed: int, *parts: object) -> str:
    """A valid DICOM UID that depends only on the seed and the role it plays."""
    return str(generate_uid(entropy_srcs=["medcurate-synth", str(seed), *map(str, parts)]))


@dataclass
class SeriesPlan:
    number: int
    kind: str  # ct_axial, ct_coronal, mr_t1_axial, mr_t2_coronal, mr_t2_oblique, xr_chest
    modality: str
    description: str
    geometry: SeriesGeometry
    uid: str
    time: str
    image_type: list[str]
    weighting: str = ""
    instance_uids: list[str] = field(default_factory=list)
    folder: str = ""


@dataclass
class StudyPlan:
    index: int  # 0 for the first study of the patient
    kind: str  # CT, MR, XR
    date: dt.date
    time: str
    uid: str
    frame_uid: str
    accession: str
    study_id: str
    requested_procedure_id: str
    sps_id: str
    pps_id: str
    description: str
    body_part: str
    offset: np.ndarray  # anatomical -> patient (LPS mm)
    lesion_scale: float
    referring: Person
    performing: Person
    reading: Person
    operator: Person
    age: str
    prior_uid: str | None
    series: list[SeriesPlan] = field(default_factory=list)
    folder: str = ""
    comment_with_name: bool = False


@dataclass
class PatientPlan:
    index: int
    key: str  # neutral key ("P0003") used in the truth tables
    site: Site
    identity: Identity
    birth_date: dt.date
    height_m: float
    weight_kg: float
    anatomy: Anatomy
    lesions: list[Lesion]
    studies: list[StudyPlan] = field(default_factory=list)

    @property
    def folder(self) -> str:
        return f"{self.identity.person.folder}_{self.identity.mrn}"


@dataclass
class Cohort:
    seed: int
    sites: tuple[Site, ...]
    patients: list[PatientPlan]

    @property
    def studies(self) -> list[StudyPlan]:
        return [s for p in self.patients for s in p.studies]


def _rng(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([abs(seed), 7919, *stream]))


def _age_string(birth: dt.date, on: dt.date) -> str:
    years = on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))
    return f"{years:03d}Y"


def _rotation(rng: np.random.Generator) -> tuple[tuple[float, float, float], ...]:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    r3 = [(round(float(a), 6), round(float(b), 6), round(float(c), 6)) for a, b, c in q]
    return (r3[0], r3[1], r3[2])


def _inside(e: Ellipsoid, p: np.ndarray, scale: float) -> bool:
    return bool(e.inside(np.array(p[0]), np.array(p[1]), np.array(p[2]), scale))


def draw_lesions(rng: np.random.Generator, an: Anatomy, n: int) -> list[Lesion]:
    """``n`` non-overlapping lesions inside liver, kidneys or lungs, inside every series' cover."""
    out: list[Lesion] = []
    for _ in range(n):
        for _attempt in range(300):
            organ = str(rng.choice(["liver", "kidney", "lung"], p=[0.5, 0.25, 0.25]))
            if organ == "liver":
                host, reach, kind = an.liver, 0.6, ("metastasis" if rng.random() < 0.6 else "cyst")
                r = rng.uniform(7.0, 18.0)
            elif organ == "kidney":
                host = an.kidneys[int(rng.integers(2))]
                reach, kind = 0.5, ("cyst" if rng.random() < 0.7 else "metastasis")
                r = rng.uniform(6.0, 13.0)
            else:
                host = an.lungs[int(rng.integers(2))]
                reach, kind = 0.8, "nodule"
                r = rng.uniform(5.0, 11.0)
            u = rng.normal(size=3)
            u = u / np.linalg.norm(u) * reach * rng.random() ** (1 / 3)
            c = np.asarray(host.center) + u * np.asarray(host.semi)
            if not (LESION_Z[0] <= c[2] <= LESION_Z[1] and LESION_Y[0] <= c[1] <= LESION_Y[1]):
                continue
            if organ == "liver" and any(_inside(lu, c, 1.2) for lu in an.lungs):
                continue
            if organ == "lung" and _inside(an.heart, c, 1.25):
                continue
            if organ != "kidney" and any(_inside(k, c, 1.3) for k in an.kidneys):
                continue
            semi = tuple(round(max(5.0, r * f), 2) for f in rng.uniform(0.8, 1.2, 3))
            if any(
                np.linalg.norm(c - np.asarray(o.center)) < max(semi) + max(o.semi) + 6.0
                for o in out
            ):
                continue
            center = (round(float(c[0]), 2), round(float(c[1]), 2), round(float(c[2]), 2))
            out.append(Lesion(organ, kind, center, semi, _rotation(rng)))  # type: ignore[arg-type]
            break
    return out


def _staff(rng: np.random.Generator, site: Site) -> tuple[Person, Person, Person, Person]:
    doctors = [p for p in site.staff if p.prefix]
    techs = [p for p in site.staff if not p.prefix]
    d = rng.permutation(len(doctors))
    return doctors[d[0]], doctors[d[1]], doctors[d[2]], techs[int(rng.integers(len(techs)))]


def _digits(rng: np.random.Generator, n: int) -> str:
    return str(int(rng.integers(1, 10))) + "".join(str(int(v)) for v in rng.integers(0, 10, n - 1))


def _series_for(
    seed: int, pkey: str, study: StudyPlan, patient: PatientPlan, rng: np.random.Generator
) -> list[SeriesPlan]:
    site, an = patient.site, patient.anatomy
    v = site.vendor
    center = SCAN_CENTER + study.offset + rng.normal(0, 2.0, 3).round(1)
    fov = float(np.ceil((2 * an.body_a + 40.0) / 10.0) * 10.0)
    sp = round(fov / 128.0, 6)
    t0 = dt.datetime.combine(study.date, dt.time.fromisoformat(study.time))

    def t(minutes: float) -> str:
        return (t0 + dt.timedelta(minutes=minutes)).strftime("%H%M%S")

    def uid(n: int) -> str:
        return make_uid(seed, pkey, study.index, "series", n)

    out: list[SeriesPlan] = []
    if study.kind == "CT":
        ffs = v.patient_position == "FFS"
        row_dir = (-1.0, 0.0, 0.0) if ffs else (1.0, 0.0, 0.0)
        ax = centered(center, row_dir, (0.0, 1.0, 0.0), 128, 128, 40, sp, sp, 5.0,
                      reversed_order=(row_dir[0] > 0) != v.ct_ascending)  # fmt: skip
        out.append(SeriesPlan(2, "ct_axial", "CT", "AX ABD 5.0 SOFT TISSUE", ax, uid(2), t(4),
                              ["ORIGINAL", "PRIMARY", "AXIAL"]))  # fmt: skip
        cor = centered(center, (1.0, 0.0, 0.0), (0.0, 0.0, -1.0), 128, 128, 40, 1.5625, sp, 5.0)
        out.append(SeriesPlan(3, "ct_coronal", "CT", "COR MPR 5.0", cor, uid(3), t(9),
                              ["DERIVED", "SECONDARY", "REFORMATTED"]))  # fmt: skip
    elif study.kind == "MR":
        msp = 3.125
        ax = centered(center, (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), 128, 128, 32, msp, msp, 6.0)
        out.append(SeriesPlan(1, "mr_t1_axial", "MR", "AX T1 SE", ax, uid(1), t(3),
                              ["ORIGINAL", "PRIMARY", "M", "ND"], weighting="T1"))  # fmt: skip
        if rng.random() < 0.5:
            th = np.deg2rad(12.0)
            cd = (0.0, round(float(np.cos(th)), 6), round(float(np.sin(th)), 6))
            g = centered(center, (1.0, 0.0, 0.0), cd, 128, 128, 32, msp, msp, 6.0,
                         reversed_order=True)  # fmt: skip
            out.append(SeriesPlan(2, "mr_t2_oblique", "MR", "OBL AX T2 TSE", g, uid(2), t(11),
                                  ["ORIGINAL", "PRIMARY", "M", "ND"], weighting="T2"))  # fmt: skip
        else:
            g = centered(center, (1.0, 0.0, 0.0), (0.0, 0.0, -1.0), 128, 128, 32, msp, msp, 6.0)
            out.append(SeriesPlan(2, "mr_t2_coronal", "MR", "COR T2 TSE", g, uid(2), t(11),
                                  ["ORIGINAL", "PRIMARY", "M", "ND"], weighting="T2"))  # fmt: skip
    else:
        # a PA chest film: columns run to the patient's left, rows downwards
        g = centered(SCAN_CENTER + np.array([0.0, 0.0, 40.0]) + study.offset, (1.0, 0.0, 0.0),
                     (0.0, 0.0, -1.0), 256, 256, 1, 1.6, 1.6, 1.0)  # fmt: skip
        out.append(SeriesPlan(1, "xr_chest", v.xr_modality, "CHEST PA", g, uid(1), t(2),
                              ["ORIGINAL", "PRIMARY"]))  # fmt: skip
    for s in out:
        if rng.random() < 0.25:
            s.description = f"{s.description} {patient.identity.person.plain}"
        s.instance_uids = [
            make_uid(seed, pkey, study.index, "sop", s.number, k) for k in range(s.geometry.slices)
        ]
        slug = "".join(ch if ch.isalnum() else "_" for ch in s.description.upper())
        s.folder = f"SE{s.number:03d}_{slug[:24].strip('_')}"
    return out


_DESCRIPTIONS = {
    "CT": ("CT ABDOMEN PELVIS W CONTRAST", "ABDOMEN"),
    "MR": ("MR ABDOMEN WO CONTRAST", "ABDOMEN"),
    "XR": ("XR CHEST PA", "CHEST"),
}


def plan_patient(
    seed: int, i: int, sites: tuple[Site, ...], used: set[tuple[str, str]]
) -> PatientPlan:
    """Draw patient ``i``; patients 0-2 are pinned so that every small cohort has each case."""
    rng = _rng(seed, i)
    key = f"P{i + 1:04d}"
    site = sites[(i + seed) % len(sites)]
    other = sites[(i + seed + 1) % len(sites)]
    sex = "F" if rng.random() < 0.5 else "M"
    ident = make_identity(rng, site, other, sex, used)
    height = float(np.clip(rng.normal(1.64 if sex == "F" else 1.77, 0.07), 1.45, 2.0))
    bmi = float(np.clip(rng.normal(26.5, 4.5), 17.5, 40.0))
    weight = round(bmi * height**2)
    anatomy = draw_anatomy(rng, bmi, sex)
    if i == 0:
        positive = True
    elif i == 1:
        positive = False
    else:
        positive = bool(rng.random() < site.prevalence)
    n_lesions = int(rng.choice([1, 2, 3], p=[0.6, 0.3, 0.1])) if positive else 0
    lesions = draw_lesions(rng, anatomy, n_lesions)
    # studies: kinds and dates
    first_kind = str(rng.choice(STUDY_KINDS, p=STUDY_KIND_P))
    repeat = bool(rng.random() < REPEAT_FRACTION)
    if i == 0:
        first_kind, repeat = "CT", True
    elif i == 1:
        first_kind = "MR"
    elif i == 2:
        first_kind, repeat = "XR", True
    kinds = [first_kind]
    if repeat:
        kinds.append("CT" if first_kind == "XR" else first_kind)
    first_date = dt.date(2021, 1, 4) + dt.timedelta(days=int(rng.integers(0, 1300)))
    dates = [first_date]
    if repeat:
        dates.append(first_date + dt.timedelta(days=int(rng.integers(60, 420))))
    age_years = int(rng.integers(24, 89))
    birth = dt.date(first_date.year - age_years, 1, 1) + dt.timedelta(
        days=int(rng.integers(0, 365))
    )
    p = PatientPlan(i, key, site, ident, birth, round(height, 2), weight, anatomy, lesions)
    prior: str | None = None
    for j, (kind, date) in enumerate(zip(kinds, dates, strict=True)):
        ref, perf, read, op = _staff(rng, site)
        desc, body = _DESCRIPTIONS[kind]
        if rng.random() < 0.3:
            desc = f"{desc} - req Dr {ref.plain}"
        st_uid = make_uid(seed, key, j, "study")
        offset = np.array(
            [rng.normal(0, 5), rng.normal(0, 8), rng.uniform(-450, 150)], dtype=float
        ).round(1)
        yy = date.strftime("%y")
        study = StudyPlan(
            index=j,
            kind=kind,
            date=date,
            time="".join(f"{int(v):02d}" for v in rng.integers((7, 0, 0), (19, 60, 60))),
            uid=st_uid,
            frame_uid=make_uid(seed, key, j, "frame"),
            accession=f"{site.accession_prefix}{yy}{_digits(rng, 6)}",
            study_id=f"S{_digits(rng, 6)}",
            requested_procedure_id=f"RP{_digits(rng, 7)}",
            sps_id=f"SPS{_digits(rng, 6)}",
            pps_id=f"PPS{_digits(rng, 6)}",
            description=desc,
            body_part=body,
            offset=offset,
            lesion_scale=1.0 if j == 0 else round(float(rng.uniform(0.8, 1.35)), 3),
            referring=ref,
            performing=perf,
            reading=read,
            operator=op,
            age=_age_string(birth, date),
            prior_uid=prior,
            comment_with_name=bool(rng.random() < 0.5),
        )
        study.series = _series_for(seed, key, study, p, rng)
        study.folder = f"{date.strftime('%Y%m%d')}_{kind}_{body}"
        p.studies.append(study)
        prior = st_uid
    return p


def plan_cohort(patients: int, seed: int, first_patient: int = 0) -> Cohort:
    """Plan ``patients`` patients over four sites; no pixels, no files.

    ``first_patient`` > 0 gives the patients that follow: patients ``first_patient`` to
    ``first_patient + patients - 1`` of the same seed's cohort, exactly as a larger cohort has
    them (its earlier patients are planned too, so names stay unique across both batches, and
    dropped). A second batch of new patients for the same hospitals, as the incremental
    benchmark needs.
    """
    if first_patient < 0:
        raise ValueError(f"first_patient must be >= 0, got {first_patient}")
    sites = make_sites(_rng(seed, 10**6))
    used: set[tuple[str, str]] = {(p.first, p.last) for s in sites for p in s.staff}
    planned = [plan_patient(seed, i, sites, used) for i in range(first_patient + patients)]
    return Cohort(seed, sites, planned[first_patient:])

"""The study generator: realistic, PHI-laden CT/MR/CR-DX studies with known findings.

``generate_studies(out, patients, seed, truth)`` plans a cohort (:mod:`.plan`), renders each
series from a parametric body (:mod:`.phantom`) in its own geometry (:mod:`.geometry`), writes
DICOM with identifying data where real exports carry it (:mod:`.dicom_writer`) and the ground
truth to TRUTH (:mod:`.truth`). Same seed, same bytes.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from medcurate.synth.dicom_writer import write_series
from medcurate.synth.plan import plan_cohort
from medcurate.synth.render import render_series
from medcurate.synth.truth import (
    mask_name,
    planted_phi,
    planted_uids,
    series_rows,
    write_mask,
    write_phi,
    write_tables,
)

__all__ = ["SynthSummary", "generate_studies", "planted_phi", "planted_uids"]


@dataclass(frozen=True)
class SynthSummary:
    """Counts of what was generated (no identifying data)."""

    patients: int
    patients_with_lesions: int
    studies: int
    series: int
    files: int
    lesions: int
    sites: int
    modalities: dict[str, int] = field(default_factory=dict)

    def __str__(self) -> str:
        mods = ", ".join(f"{k} {v}" for k, v in sorted(self.modalities.items()))
        return (
            f"synth: {self.patients} patients ({self.patients_with_lesions} with lesions) at "
            f"{self.sites} sites, {self.studies} studies, {self.series} series ({mods}), "
            f"{self.files} files, {self.lesions} lesions"
        )


def _is_within(child: Path, parent: Path) -> bool:
    try:
        child.resolve().relative_to(parent.resolve())
    except ValueError:
        return False
    return True


def generate_studies(
    out: Path, patients: int, seed: int, truth: Path | None = None, first_patient: int = 0
) -> SynthSummary:
    """Write ``patients`` patients' studies under ``out`` and, if given, ground truth to ``truth``.

    ``first_patient``: start at that patient of the seed's cohort (new patients for a second
    batch; see :func:`~medcurate.synth.plan.plan_cohort`). 0 is the cohort from its start.

    Layout: ``out/<LAST_FIRST_MRN>/<YYYYMMDD>_<KIND>_<BODYPART>/SE<nnn>_<DESC>/IM<nnnn>.dcm``.
    """
    out = Path(out)
    if patients < 1:
        raise ValueError(f"patients must be >= 1, got {patients}")
    if truth is not None and (_is_within(Path(truth), out) or _is_within(out, Path(truth))):
        raise ValueError(
            f"{truth}: the truth folder must not be inside the studies folder or hold it"
        )
    cohort = plan_cohort(patients, seed, first_patient)
    rows, lesion_rows = [], []
    files = 0
    mods: Counter[str] = Counter()
    for p in cohort.patients:
        for st in p.studies:
            for se in st.series:
                stored, labels = render_series(seed, p, st, se)
                rel = Path(p.folder) / st.folder / se.folder
                files += len(write_series(out / rel, p, st, se, stored))
                mods[se.modality] += 1
                if truth is not None:
                    write_mask(Path(truth) / mask_name(p, st, se), labels, se.geometry)
                    row, les = series_rows(p, st, se, labels, rel.as_posix())
                    rows.append(row)
                    lesion_rows += les
    if truth is not None:
        write_tables(Path(truth), rows, lesion_rows)
        write_phi(Path(truth), cohort.patients)
    return SynthSummary(
        patients=len(cohort.patients),
        patients_with_lesions=sum(1 for p in cohort.patients if p.lesions),
        studies=len(cohort.studies),
        series=sum(mods.values()),
        files=files,
        lesions=sum(len(p.lesions) for p in cohort.patients),
        sites=len({p.site.key for p in cohort.patients}),
        modalities=dict(mods),
    )

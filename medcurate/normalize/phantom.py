"""Small DICOM series with known geometry, for geometry tests, edge cases and the benchmark.

The real-world generator (``medcurate.synth``) makes realistic studies; this one makes series whose
every position is chosen by the caller, so a test can put a bright blob at a known patient
coordinate, tilt or flip the slice plane, drop or duplicate a slice, and check where the blob ends
up after normalization. Values are a smooth blob, so its centroid survives resampling.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.uid import (
    UID,
    ComputedRadiographyImageStorage,
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)

_SOP_CLASS = {"CT": CTImageStorage, "MR": MRImageStorage}


def _uid(*parts: object) -> UID:
    return generate_uid(entropy_srcs=[str(p) for p in parts])


@dataclass
class PhantomSeries:
    """Geometry of one generated series (LPS patient coordinates, millimetres)."""

    name: str = "s0"
    modality: str = "CT"
    rows: int = 24
    cols: int = 20
    slices: int = 12
    pixel_spacing: tuple[float, float] = (2.0, 2.0)  # (between rows, between columns)
    slice_step: float = 3.0  # distance between consecutive slices along the normal
    row_dir: tuple[float, float, float] = (1.0, 0.0, 0.0)  # IOP[0:3]: along a row
    col_dir: tuple[float, float, float] = (0.0, 1.0, 0.0)  # IOP[3:6]: down a column
    origin: tuple[float, float, float] = (-20.0, -24.0, -18.0)  # IPP of slice 0
    tilt_offset: tuple[float, float, float] = (0.0, 0.0, 0.0)  # extra in-plane shift per slice
    marker_lps: tuple[float, float, float] | None = (2.0, 3.0, 4.0)
    marker_sigma_mm: float = 3.0
    background: float = 40.0  # HU (CT) or signal (MR) inside the body
    marker_value: float = 600.0
    patient: str = "P-phantom"
    study_uid: str = ""
    series_uid: str = ""
    drop_slices: Sequence[int] = ()
    extra_positions: Sequence[float] = ()  # extra slices at these distances (uneven spacing)
    acquisitions: int = 1  # repeat the stack as acquisitions 1..n (same positions)
    reverse_instance_numbers: bool = False
    image_type: Sequence[str] = ("ORIGINAL", "PRIMARY", "AXIAL")
    overrides: dict[int, dict[str, object]] = field(default_factory=dict)  # slice -> tags

    def normal(self) -> np.ndarray:
        return np.cross(np.asarray(self.row_dir), np.asarray(self.col_dir))

    def positions(self) -> list[tuple[int, float]]:
        """(slice label, distance along the normal from slice 0) for every written slice."""
        out = [(k, k * self.slice_step) for k in range(self.slices) if k not in self.drop_slices]
        out += [(self.slices + i, d) for i, d in enumerate(self.extra_positions)]
        return out


def _pixels(s: PhantomSeries, ipp: np.ndarray) -> np.ndarray:
    """World-space values of one slice: a body box with a Gaussian blob at the marker."""
    r = np.asarray(s.row_dir, dtype=float)
    c = np.asarray(s.col_dir, dtype=float)
    ii, jj = np.meshgrid(np.arange(s.rows), np.arange(s.cols), indexing="ij")
    world = (
        ipp[None, None, :]
        + jj[..., None] * s.pixel_spacing[1] * r[None, None, :]
        + ii[..., None] * s.pixel_spacing[0] * c[None, None, :]
    )
    img = np.full((s.rows, s.cols), s.background, dtype=float)
    if s.modality == "MR":  # a zero background around the body, as MR has
        border = 2
        mask = np.zeros_like(img, dtype=bool)
        mask[border:-border, border:-border] = True
        img[~mask] = 0.0
    if s.marker_lps is not None:
        d2 = np.sum((world - np.asarray(s.marker_lps)[None, None, :]) ** 2, axis=-1)
        img += s.marker_value * np.exp(-d2 / (2 * s.marker_sigma_mm**2))
    return img


def write_series(out: Path, s: PhantomSeries) -> list[Path]:
    """Write the series as one file per slice under ``out``; returns the files, in write order."""
    out.mkdir(parents=True, exist_ok=True)
    study_uid = s.study_uid or _uid("study", s.patient, s.name)
    series_uid = s.series_uid or _uid("series", s.patient, s.name)
    frame_uid = _uid("for", s.patient, s.name)
    normal = s.normal()
    origin = np.asarray(s.origin, dtype=float)
    tilt = np.asarray(s.tilt_offset, dtype=float)
    paths: list[Path] = []
    positions = s.positions()
    n_total = len(positions) * s.acquisitions
    for acq in range(1, s.acquisitions + 1):
        for order, (label, dist) in enumerate(positions):
            ipp = origin + dist * normal + (dist / s.slice_step) * tilt
            values = _pixels(s, ipp)
            index = (acq - 1) * len(positions) + order
            inst = n_total - index if s.reverse_instance_numbers else index + 1
            sop_uid = _uid("sop", series_uid, s.name, acq, label)
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = _SOP_CLASS[s.modality]
            meta.MediaStorageSOPInstanceUID = sop_uid
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds = pydicom.Dataset()
            ds.file_meta = meta
            ds.SOPClassUID = _SOP_CLASS[s.modality]
            ds.SOPInstanceUID = sop_uid
            ds.StudyInstanceUID = study_uid
            ds.SeriesInstanceUID = series_uid
            ds.FrameOfReferenceUID = frame_uid
            ds.PatientID = s.patient
            ds.PatientSex = "O"
            ds.Modality = s.modality
            ds.Manufacturer = "Phantom"
            ds.ImageType = list(s.image_type)
            ds.SeriesNumber = 1
            ds.AcquisitionNumber = acq
            ds.InstanceNumber = inst
            ds.ImagePositionPatient = [f"{v:.6f}" for v in ipp]
            ds.ImageOrientationPatient = [f"{v:.8f}" for v in (*s.row_dir, *s.col_dir)]
            ds.PixelSpacing = [f"{v:.6f}" for v in s.pixel_spacing]
            ds.SliceThickness = f"{s.slice_step:.6f}"
            ds.Rows, ds.Columns = s.rows, s.cols
            ds.SamplesPerPixel = 1
            ds.PhotometricInterpretation = "MONOCHROME2"
            ds.BitsAllocated = ds.BitsStored = 16
            ds.HighBit = 15
            if s.modality == "CT":
                ds.PixelRepresentation = 1
                ds.RescaleIntercept = "-1024"
                ds.RescaleSlope = "1"
                stored = np.round(values + 1024.0).astype(np.int16)
            else:
                ds.PixelRepresentation = 0
                stored = np.round(values).astype(np.uint16)
            for key, value in s.overrides.get(label, {}).items():
                setattr(ds, key, value)
            ds.PixelData = stored.tobytes()
            path = out / f"{s.name}_{acq:02d}_{label:04d}.dcm"
            ds.save_as(path, enforce_file_format=True)
            paths.append(path)
    return paths


def write_projection(out: Path, name: str = "cr0", rows: int = 32, cols: int = 28) -> Path:
    """A CR image: no patient geometry, ImagerPixelSpacing only."""
    out.mkdir(parents=True, exist_ok=True)
    sop_uid = _uid("cr", name)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ComputedRadiographyImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = ComputedRadiographyImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = _uid("crstudy", name)
    ds.SeriesInstanceUID = _uid("crseries", name)
    ds.PatientID = "P-phantom"
    ds.Modality = "CR"
    ds.Manufacturer = "Phantom"
    ds.ImagerPixelSpacing = ["0.5", "0.5"]
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ii, jj = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    ds.PixelData = ((ii * 10 + jj) % 4096).astype(np.uint16).tobytes()
    path = out / f"{name}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def marker_ras(s: PhantomSeries) -> np.ndarray:
    """The marker's expected position in RAS world coordinates (NIfTI's convention)."""
    assert s.marker_lps is not None
    x, y, z = s.marker_lps
    return np.array([-x, -y, z])

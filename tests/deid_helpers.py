"""Small DICOM builders for the de-identification tests (no real patient data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian


def ct_instance(
    patient_id: str = "ZQXPID0001",
    name: str = "ZQXSURNAME^ZQXGIVEN",
    study_uid: str = "1.2.826.0.1.3680043.9.7777.1.1",
    series_uid: str = "1.2.826.0.1.3680043.9.7777.1.1.1",
    sop_uid: str = "1.2.826.0.1.3680043.9.7777.1.1.1.1",
    study_date: str = "20210305",
    study_time: str = "101500",
    institution: str = "ZQX GENERAL HOSPITAL",
) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = study_uid + ".9"
    ds.PatientID = patient_id
    ds.PatientName = name
    ds.PatientBirthDate = "19600101"
    ds.PatientSex = "F"
    ds.PatientAge = "061Y"
    ds.PatientWeight = "70"
    ds.PatientSize = "1.65"
    ds.StudyDate = study_date
    ds.StudyTime = study_time
    ds.SeriesDate = study_date
    ds.SeriesTime = study_time
    ds.Modality = "CT"
    ds.Manufacturer = "ACME"
    ds.InstitutionName = institution
    ds.StudyDescription = "CT CHEST WITH CONTRAST"
    ds.SeriesDescription = "AXIAL 5MM"
    ds.AccessionNumber = "ZQXACC0001"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.Rows = 8
    ds.Columns = 8
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.PixelData = (np.arange(64, dtype=np.uint16) * 7).tobytes()
    return ds


def save(ds: Dataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def item(**kw: object) -> Dataset:
    d = Dataset()
    for k, v in kw.items():
        setattr(d, k, v)
    return d


def seq(*items: Dataset) -> Sequence:
    return Sequence(list(items))

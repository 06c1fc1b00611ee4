"""Turn a planned series and its pixels into DICOM Part 10 files, PHI and all.

A dataset is built once per series and then mutated slice by slice (position, UIDs, pixels)
before each write: that keeps hundreds of files per second on one core. Every value is derived
from the plan, so the bytes depend only on the seed.

Where the PHI goes (as in real exports): patient module (name, ID, birth date, address, phone,
other IDs and names, mother's birth name), study and equipment (accession, study ID, physicians,
operator, institution name/address/department, station, serial), free text (study/series
descriptions, image and study comments, additional history), a vendor private block holding the
patient name and MRN, RequestAttributesSequence with request and step IDs and a referring
physician's name three sequences deep, ReferencedStudySequence, OriginalAttributesSequence with a
former name, and the folder and file names.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    ComputedRadiographyImageStorage,
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    MRImageStorage,
)

from medcurate.synth.plan import PatientPlan, SeriesPlan, StudyPlan

IMPLEMENTATION_UID = UID("1.2.826.0.1.3680043.8.498.1")
STUDY_COMPONENT_SOP = "1.2.840.10008.3.1.2.3.1"  # Detached Study Management (as PACS reference it)

SOP_CLASS = {
    "CT": CTImageStorage,
    "MR": MRImageStorage,
    "CR": ComputedRadiographyImageStorage,
    "DX": DigitalXRayImageStorageForPresentation,
}


def ds_number(v: float, places: int = 4) -> str:
    """A DS string that fits in 16 characters and round-trips the geometry closely enough."""
    r = round(float(v), places)
    if r == 0:
        r = 0.0  # no "-0"
    s = f"{r:.{places}f}".rstrip("0").rstrip(".")
    return s if s not in ("", "-") else "0"


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    c = Dataset()
    c.CodeValue = value
    c.CodingSchemeDesignator = scheme
    c.CodeMeaning = meaning
    return c


def _request_attributes(patient: PatientPlan, study: StudyPlan) -> Sequence:
    """Request and step IDs, and the referrer's name three sequences deep (a real hiding place)."""
    person = Dataset()
    person.ValueType = "PNAME"
    person.ConceptNameCodeSequence = Sequence([_code("121008", "DCM", "Person Observer Name")])
    person.PersonName = study.referring.pn_staff
    protocol = _code(f"{study.kind}ABD01", "99MEDCURATE", study.description.split(" - ")[0])
    protocol.ProtocolContextSequence = Sequence([person])
    item = Dataset()
    item.RequestedProcedureID = study.requested_procedure_id
    item.ScheduledProcedureStepID = study.sps_id
    item.RequestedProcedureDescription = study.description
    item.AccessionNumber = study.accession
    item.ScheduledProtocolCodeSequence = Sequence([protocol])
    return Sequence([item])


def base_dataset(patient: PatientPlan, study: StudyPlan, series: SeriesPlan) -> Dataset:
    """Everything that is the same for all instances of a series."""
    site, ident, v = patient.site, patient.identity, patient.site.vendor
    mod = series.modality
    g = series.geometry
    date = study.date.strftime("%Y%m%d")

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = SOP_CLASS[mod]
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = IMPLEMENTATION_UID
    ds.file_meta.ImplementationVersionName = "MEDCURATE_SYN"

    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.ImageType = series.image_type
    ds.SOPClassUID = SOP_CLASS[mod]
    ds.StudyDate = date
    ds.SeriesDate = date
    ds.AcquisitionDate = date
    ds.ContentDate = date
    ds.StudyTime = study.time
    ds.SeriesTime = series.time
    ds.AcquisitionTime = series.time
    ds.ContentTime = series.time
    ds.AcquisitionDateTime = f"{date}{series.time}.000000"
    ds.AccessionNumber = study.accession
    ds.Modality = mod
    ds.Manufacturer = v.manufacturer
    ds.InstitutionName = site.institution
    ds.InstitutionAddress = site.address
    ds.ReferringPhysicianName = study.referring.pn_staff
    ds.StationName = site.station
    ds.StudyDescription = study.description
    ds.SeriesDescription = series.description
    ds.InstitutionalDepartmentName = site.department
    ds.PhysiciansOfRecord = study.referring.pn_staff
    ds.PerformingPhysicianName = study.performing.pn_staff
    ds.NameOfPhysiciansReadingStudy = study.reading.pn_staff
    ds.OperatorsName = study.operator.pn
    ds.ManufacturerModelName = {"CT": v.ct_model, "MR": v.mr_model}.get(mod, v.xr_model)
    ref = Dataset()
    ref.ReferencedSOPClassUID = STUDY_COMPONENT_SOP
    ref.ReferencedSOPInstanceUID = study.prior_uid or study.uid
    ds.ReferencedStudySequence = Sequence([ref])
    ds.ProcedureCodeSequence = Sequence(
        [_code(f"{study.kind}ABD01", "99MEDCURATE", study.description.split(" - ")[0])]
    )

    ds.PatientName = ident.person.pn
    ds.PatientID = ident.mrn
    ds.IssuerOfPatientID = site.institution
    ds.PatientBirthDate = patient.birth_date.strftime("%Y%m%d")
    ds.PatientSex = ident.sex
    other = Dataset()
    other.PatientID = ident.other_id
    other.IssuerOfPatientID = ident.other_issuer
    other.TypeOfPatientID = "TEXT"
    ds.OtherPatientIDsSequence = Sequence([other])
    if ident.birth_name:
        ds.OtherPatientNames = ident.birth_name
    ds.PatientBirthName = ident.birth_name or ident.person.pn
    ds.PatientAge = study.age
    ds.PatientSize = ds_number(patient.height_m, 2)
    ds.PatientWeight = ds_number(patient.weight_kg, 1)
    ds.PatientAddress = ident.address
    ds.PatientMotherBirthName = ident.mother_birth_name
    ds.PatientTelephoneNumbers = ident.phone
    ds.AdditionalPatientHistory = (
        f"Referred by Dr {study.referring.plain} for abdominal pain. MRN {ident.mrn}."
    )
    ds.PatientComments = f"Contact {ident.person.plain} at {ident.phone}"

    ds.BodyPartExamined = study.body_part
    ds.DeviceSerialNumber = site.device_serial
    ds.SoftwareVersions = "VA20B"
    ds.ProtocolName = series.description.split("  ")[0][:64]
    if mod in ("CT", "MR"):
        ds.PatientPosition = v.patient_position if mod == "CT" else "HFS"

    ds.StudyInstanceUID = study.uid
    ds.SeriesInstanceUID = series.uid
    ds.StudyID = study.study_id
    ds.SeriesNumber = series.number
    ds.AcquisitionNumber = 1
    ds.StudyComments = f"Prior imaging at {ident.other_issuer} for {ident.person.pn}"
    ds.RequestingPhysician = study.referring.pn_staff
    ds.RequestAttributesSequence = _request_attributes(patient, study)
    ds.PerformedProcedureStepID = study.pps_id
    ds.PerformedProcedureStepStartDate = date
    ds.PerformedProcedureStepStartTime = study.time
    ds.PerformedProcedureStepDescription = study.description
    if ident.birth_name:
        changed = Dataset()
        changed.PatientName = ident.birth_name
        orig = Dataset()
        orig.ModifiedAttributesSequence = Sequence([changed])
        orig.AttributeModificationDateTime = f"{date}{study.time}"
        orig.ModifyingSystem = site.station
        orig.SourceOfPreviousValues = site.institution
        orig.ReasonForTheAttributeModification = "CORRECT"
        ds.OriginalAttributesSequence = Sequence([orig])
    if study.comment_with_name:
        ds.ImageComments = (
            f"Tech note: {ident.person.plain} tolerated the exam well. {study.operator.plain}"
        )
    else:
        ds.ImageComments = "Tech note: exam tolerated well."

    # vendor private block: the scanner's own copy of who was scanned
    block = ds.private_block(v.private_group, v.private_creator, create=True)
    block.add_new(0x01, "LO", ident.person.pn)
    block.add_new(0x02, "LO", ident.mrn)
    block.add_new(0x03, "DS", "1.25")
    block.add_new(0x04, "SH", "B30f" if mod == "CT" else "STD")

    # image pixel module
    ds.SamplesPerPixel = 1
    ds.Rows = g.rows
    ds.Columns = g.cols
    ds.BitsAllocated = 16
    if mod in ("CT", "MR"):
        ds.FrameOfReferenceUID = study.frame_uid
        ds.PositionReferenceIndicator = ""
        ds.ImageOrientationPatient = [ds_number(x, 6) for x in g.orientation]
        ds.PixelSpacing = [ds_number(g.row_spacing, 6), ds_number(g.col_spacing, 6)]
        ds.SliceThickness = ds_number(g.slice_spacing)
        ds.SpacingBetweenSlices = ds_number(g.slice_spacing)
        ds.PhotometricInterpretation = "MONOCHROME2"
    if mod == "CT":
        ds.KVP = "120"
        ds.XRayTubeCurrent = 210
        ds.ExposureTime = 500
        ds.ConvolutionKernel = "B30f"
        ds.ReconstructionDiameter = ds_number(g.col_spacing * g.cols, 2)
        ds.BitsStored = v.ct_bits_stored
        ds.HighBit = v.ct_bits_stored - 1
        ds.PixelRepresentation = v.ct_pixel_representation
        ds.RescaleIntercept = ds_number(v.ct_intercept)
        ds.RescaleSlope = ds_number(v.ct_slope)
        ds.RescaleType = "HU"
        ds.WindowCenter = "40"
        ds.WindowWidth = "400"
    elif mod == "MR":
        t1 = series.weighting == "T1"
        ds.ScanningSequence = "SE"
        ds.SequenceVariant = "SK" if t1 else "SK\\SP"
        ds.ScanOptions = "" if t1 else "FS"
        ds.MRAcquisitionType = "2D"
        ds.RepetitionTime = "520" if t1 else "4200"
        ds.EchoTime = "12" if t1 else "95"
        ds.EchoTrainLength = 1 if t1 else 16
        ds.FlipAngle = "90"
        ds.MagneticFieldStrength = ds_number(v.field_strength, 1)
        ds.ImagingFrequency = ds_number(42.577 * v.field_strength, 4)
        ds.ImagedNucleus = "1H"
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.WindowCenter = "600"
        ds.WindowWidth = "1200"
    else:  # CR / DX projection
        ds.ViewPosition = "PA"
        ds.PatientOrientation = ["L", "F"]
        ds.ImagerPixelSpacing = [ds_number(g.row_spacing), ds_number(g.col_spacing)]
        ds.PixelSpacing = [ds_number(g.row_spacing), ds_number(g.col_spacing)]
        ds.KVP = "125"
        ds.DistanceSourceToDetector = "1800"
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.PhotometricInterpretation = v.xr_photometric
        ds.WindowCenter = "2048"
        ds.WindowWidth = "4096"
        if mod == "DX":
            ds.PresentationIntentType = "FOR PRESENTATION"
            ds.DetectorType = "SCINTILLATOR"
            ds.BurnedInAnnotation = "NO"
            ds.PixelIntensityRelationship = "LOG"
            ds.PixelIntensityRelationshipSign = 1
            ds.RescaleIntercept = "0"
            ds.RescaleSlope = "1"
            ds.RescaleType = "US"
            ds.Laterality = ""
    return ds


# attributes that change from one instance of a series to the next
_PER_INSTANCE = ("SOPInstanceUID", "InstanceNumber", "ImagePositionPatient", "SliceLocation",
                 "PixelData")  # fmt: skip


def _encode(ds: Dataset, charset: str) -> bytes:
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_dataset(fp, ds, parent_encoding=charset)
    return fp.getvalue()


class _SeriesEncoder:
    """Encodes the unchanging elements of a series once; each instance adds only its own.

    The bytes are those ``Dataset.save_as(enforce_file_format=True)`` writes (a test holds
    them equal); the cache makes writing several times faster.
    """

    def __init__(self, ds: Dataset) -> None:
        self.ds = ds
        self.charset = str(ds.SpecificCharacterSet)
        varying = {ds.data_element(k).tag for k in _PER_INSTANCE if k in ds}  # type: ignore[union-attr]
        self.plan: list[bytes | int] = []  # static bytes, or the tag of a varying element
        run = Dataset()
        for elem in ds:
            if elem.tag in varying:
                if len(run):
                    self.plan.append(_encode(run, self.charset))
                    run = Dataset()
                self.plan.append(int(elem.tag))
            else:
                run.add(elem)
        if len(run):
            self.plan.append(_encode(run, self.charset))

    def encode(self) -> bytes:
        meta = DicomBytesIO()
        meta.is_little_endian, meta.is_implicit_VR = True, False
        write_file_meta_info(meta, self.ds.file_meta, enforce_standard=True)
        parts = [b"\x00" * 128, b"DICM", meta.getvalue()]
        for item in self.plan:
            if isinstance(item, bytes):
                parts.append(item)
            else:
                one = Dataset()
                one.add(self.ds[item])
                parts.append(_encode(one, self.charset))
        return b"".join(parts)


def write_series(
    directory: Path, patient: PatientPlan, study: StudyPlan, series: SeriesPlan, stored: np.ndarray
) -> list[Path]:
    """Write ``stored`` (slices, rows, cols; already in the stored integer type) as instances."""
    directory.mkdir(parents=True, exist_ok=True)
    ds = base_dataset(patient, study, series)
    g = series.geometry
    if stored.shape != (g.slices, g.rows, g.cols):
        raise ValueError(f"{directory}: pixels {stored.shape} do not fit the series geometry")
    normal = g.normal
    stored = np.ascontiguousarray(stored.astype(stored.dtype.newbyteorder("<"), copy=False))
    paths = []
    encoder: _SeriesEncoder | None = None
    for k in range(g.slices):
        set_instance(ds, series, k, stored[k], normal)
        if encoder is None:
            encoder = _SeriesEncoder(ds)
        path = directory / f"IM{k + 1:04d}.dcm"
        path.write_bytes(encoder.encode())
        paths.append(path)
    return paths


def set_instance(
    ds: Dataset, series: SeriesPlan, k: int, pixels: np.ndarray, normal: np.ndarray
) -> None:
    """Set the attributes of instance ``k`` (0-based) on the series dataset."""
    uid = UID(series.instance_uids[k])
    ds.file_meta.MediaStorageSOPInstanceUID = uid
    ds.SOPInstanceUID = uid
    ds.InstanceNumber = k + 1
    if series.modality in ("CT", "MR"):
        pos = series.geometry.position(k)
        ds.ImagePositionPatient = [ds_number(x) for x in pos]
        ds.SliceLocation = ds_number(float(np.dot(pos, normal)))
    ds.PixelData = pixels.tobytes()
    ds["PixelData"].VR = "OW"

"""De-identification to DICOM PS3.15 Annex E (Basic Profile with Retain Patient Characteristics,
Retain Longitudinal Modified Dates, Clean Descriptors and Retain Safe Private), verified
independently. See ``run`` for the file-level contract and ``engine`` for the per-dataset one."""

from medcurate.deid.run import DeidResult, deidentify_files, deidentify_tree, read_deid_manifest

__all__ = ["DeidResult", "deidentify_files", "deidentify_tree", "read_deid_manifest"]

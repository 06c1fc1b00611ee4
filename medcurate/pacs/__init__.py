"""PACS: the DICOMweb client, retrieval into restricted/raw, labels back as DICOM SEG."""

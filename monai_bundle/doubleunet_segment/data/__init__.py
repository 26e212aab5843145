"""Data in and out: DICOM series, DICOM SEG, NIfTI/NRRD and image readers and writers, case discovery,
datalists, atomic writes and overlays."""

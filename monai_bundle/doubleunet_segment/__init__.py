"""DoubleU-Net Segment: the one implementation behind the MONAI bundle, the CLI and the Slicer module."""

__version__ = "0.2.0"

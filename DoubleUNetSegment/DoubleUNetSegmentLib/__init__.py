"""Slicer-free logic of the DoubleU-Net Segment extension.

Nothing here imports ``slicer``, ``qt``, ``vtk`` or ``ctk``: the module panel and the Segment Editor effect only
translate between Slicer nodes and the files, commands and plans built here, so this package is tested with
plain pytest and the real engine on machines where 3D Slicer cannot run.
"""

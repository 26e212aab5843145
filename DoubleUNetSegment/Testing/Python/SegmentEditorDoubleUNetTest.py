"""Slicer-side test of the "DoubleU-Net" Segment Editor effect, registered with slicer_add_python_unittest.

It runs the module's self-test for the effect (preview of the slice in view, re-threshold without the
network, apply, undo, whole-volume apply) on a slab of the MRHead sample volume with the real engine.
"""

import unittest

import slicer


class SegmentEditorDoubleUNetTest(unittest.TestCase):
    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def test_effect_on_sample_volume(self) -> None:
        from DoubleUNetSegment import DoubleUNetSegmentTest

        test = DoubleUNetSegmentTest()
        test.setUp()
        test.test_EffectPreviewThresholdApplyUndo()

    def test_panel_logic_on_sample_volume(self) -> None:
        from DoubleUNetSegment import DoubleUNetSegmentTest

        test = DoubleUNetSegmentTest()
        test.setUp()
        test.test_PanelLogicAddsNamedSegments()

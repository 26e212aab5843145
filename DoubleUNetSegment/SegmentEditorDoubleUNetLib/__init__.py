"""Segment Editor effect "DoubleU-Net" (registered by the DoubleUNetSegment module at startup)."""

from SegmentEditorEffects import AbstractScriptedSegmentEditorEffect

from .SegmentEditorEffect import SegmentEditorEffect

__all__ = ["AbstractScriptedSegmentEditorEffect", "SegmentEditorEffect"]

"""Segment Editor effect "DoubleU-Net": preview a slice in about a second, re-threshold instantly, apply.

A persistent engine process (``doubleunet_segment.inference.worker``) keeps the model loaded, so Preview costs one
slice of inference, not a model load. The effect keeps the probability map of the last result: moving the
threshold slider recomputes the labels from it in Slicer without running the network again. Applying saves
the segmentation state first, so the Segment Editor's Undo takes the result back.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np
import qt
import slicer
from DoubleUNetSegmentLib.commands import EngineOptions
from DoubleUNetSegmentLib.events import RunState
from DoubleUNetSegmentLib.segment_import import (
    ijk_box,
    labels_from_probabilities,
    mask_outside,
    read_result,
    slice_index,
    to_kji,
    view_is_along_axis,
)
from DoubleUNetSegmentLib.workspace import remove_workspace
from SegmentEditorEffects import AbstractScriptedSegmentEditorEffect

from DoubleUNetSegment import CHOOSE_MODEL, DEVICE_CHOICES, DoubleUNetSegmentLogic

SCOPES = [("Whole volume", "volume"), ("Slice in view", "slice"), ("Inside ROI", "roi")]
OUTPUTS = [("New segments", "new"), ("Add to selected segment", "selected")]
PREVIEW_OPACITY = 0.6


class SegmentEditorEffect(AbstractScriptedSegmentEditorEffect):
    """DoubleU-Net inference as a Segment Editor effect, with preview and undo."""

    def __init__(self, scriptedEffect) -> None:
        scriptedEffect.name = "DoubleU-Net"
        scriptedEffect.perSegment = False  # creates its own segments (or fills the selected one)
        scriptedEffect.requireSegments = False
        AbstractScriptedSegmentEditorEffect.__init__(self, scriptedEffect)
        self.logic = DoubleUNetSegmentLogic()
        self.worker = None
        self.workerKey = None
        self.workerInfo: dict = {}
        self.workerState = RunState()
        self.timer = None
        self.workspace: Path | None = None
        self.sourceKey = None
        self.requestCount = 0
        self.pending: dict | None = None  # the request in flight and what to do with its result
        self.queued = []  # actions waiting for the worker to be ready
        self.previewProbabilities: np.ndarray | None = None
        self.previewGeometryNode = None
        self.previewResult = None
        self.previewRequest: dict | None = None
        self.previewBox = None
        self.previewSegmentationNode = None
        self.lastSliceWidget = None
        self.errorText: str | None = None

    def clone(self):
        import qSlicerSegmentationsEditorEffectsPythonQt as effects

        clonedEffect = effects.qSlicerSegmentEditorScriptedEffect(None)
        clonedEffect.setPythonSource(__file__.replace("\\", "/"))
        return clonedEffect

    def icon(self):
        iconPath = os.path.join(os.path.dirname(__file__), "SegmentEditorEffect.png")
        return qt.QIcon(iconPath) if os.path.exists(iconPath) else qt.QIcon()

    def helpText(self) -> str:
        return """<html>Segment the source volume with DoubleU-Net (polyps, hippocampus or your own bundle).<br>
<b>Preview</b> segments the slice shown in the last slice view you used (about a second on a CPU once the
model is loaded) and overlays the result; the <b>threshold</b> slider re-thresholds the kept probabilities
instantly. <b>Apply</b> segments the whole volume, only the previewed slice, or only the inside of an ROI, and
adds the result as new segments (existing ones are never changed) or into the selected segment.
Undo takes it back. The first use may offer to install PyTorch and MONAI into Slicer's Python.</html>"""

    # --- options panel -------------------------------------------------------------------------------------
    def setupOptionsFrame(self) -> None:
        self.modelComboBox = qt.QComboBox()
        try:
            default, entries = self.logic.models()
        except (FileNotFoundError, ValueError, KeyError):
            default, entries = "", []
        for entry in entries:
            self.modelComboBox.addItem(entry.label, entry.name)
        self.modelComboBox.addItem(CHOOSE_MODEL, "")
        self.defaultModel = default
        self.modelComboBox.setToolTip("Shipped model, or a DoubleU-Net bundle folder / weights file")
        self.scriptedEffect.addLabeledOptionsWidget("Model:", self.modelComboBox)

        self.deviceComboBox = qt.QComboBox()
        for label, device in DEVICE_CHOICES:
            self.deviceComboBox.addItem(label, device)
        self.scriptedEffect.addLabeledOptionsWidget("Device:", self.deviceComboBox)

        self.scopeComboBox = qt.QComboBox()
        for label, scope in SCOPES:
            self.scopeComboBox.addItem(label, scope)
        self.scopeComboBox.setToolTip("What Apply segments")
        self.scriptedEffect.addLabeledOptionsWidget("Apply to:", self.scopeComboBox)

        self.roiSelector = slicer.qMRMLNodeComboBox()
        self.roiSelector.nodeTypes = ["vtkMRMLMarkupsROINode"]
        self.roiSelector.noneEnabled = True
        self.roiSelector.addEnabled = True
        self.roiSelector.removeEnabled = False
        self.roiSelector.setMRMLScene(slicer.mrmlScene)
        self.roiSelector.setToolTip("Only voxels inside this ROI are segmented (Apply to: Inside ROI)")
        self.scriptedEffect.addLabeledOptionsWidget("ROI:", self.roiSelector)

        self.outputComboBox = qt.QComboBox()
        for label, output in OUTPUTS:
            self.outputComboBox.addItem(label, output)
        self.scriptedEffect.addLabeledOptionsWidget("Result:", self.outputComboBox)

        self.thresholdSlider = slicer.qMRMLSliderWidget()
        self.thresholdSlider.minimum = 0.05
        self.thresholdSlider.maximum = 0.95
        self.thresholdSlider.singleStep = 0.01
        self.thresholdSlider.value = 0.5
        self.thresholdSlider.setToolTip("Foreground probability cut; changes the preview at once, without the network")
        self.scriptedEffect.addLabeledOptionsWidget("Threshold:", self.thresholdSlider)

        self.ttaCheckBox = qt.QCheckBox("Test-time augmentation (3x slower)")
        self.scriptedEffect.addOptionsWidget(self.ttaCheckBox)

        buttons = qt.QHBoxLayout()
        self.previewButton = qt.QPushButton("Preview")
        self.previewButton.setToolTip("Segment the slice in view and show it as an overlay")
        self.applyButton = qt.QPushButton("Apply")
        self.applyButton.objectName = self.__class__.__name__ + "Apply"
        self.cancelButton = qt.QPushButton("Cancel")
        self.cancelButton.setToolTip("Stop the engine and discard the preview")
        for button in (self.previewButton, self.applyButton, self.cancelButton):
            buttons.addWidget(button)
        self.scriptedEffect.addOptionsWidget(buttons)

        self.progressBar = qt.QProgressBar()
        self.progressBar.setRange(0, 100)
        self.scriptedEffect.addOptionsWidget(self.progressBar)
        self.statusLabel = qt.QLabel("")
        self.statusLabel.wordWrap = True
        self.scriptedEffect.addOptionsWidget(self.statusLabel)

        self.modelComboBox.connect("activated(int)", self.onModelActivated)
        self.deviceComboBox.connect("currentIndexChanged(int)", self.updateMRMLFromGUI)
        self.scopeComboBox.connect("currentIndexChanged(int)", self.updateMRMLFromGUI)
        self.outputComboBox.connect("currentIndexChanged(int)", self.updateMRMLFromGUI)
        self.ttaCheckBox.connect("toggled(bool)", self.updateMRMLFromGUI)
        self.thresholdSlider.connect("valueChanged(double)", self.onThresholdChanged)
        self.previewButton.connect("clicked()", self.onPreview)
        self.applyButton.connect("clicked()", self.onApply)
        self.cancelButton.connect("clicked()", self.onCancel)

    def createCursor(self, widget):
        return slicer.util.mainWindow().cursor

    def setMRMLDefaults(self) -> None:
        self.scriptedEffect.setParameterDefault("Model", getattr(self, "defaultModel", "") or "polyp")
        self.scriptedEffect.setParameterDefault("Device", "auto")
        self.scriptedEffect.setParameterDefault("Scope", "volume")
        self.scriptedEffect.setParameterDefault("Output", "new")
        self.scriptedEffect.setParameterDefault("Threshold", 0.5)
        self.scriptedEffect.setParameterDefault("TTA", 0)

    @staticmethod
    def _select(combo, value: str) -> None:
        index = combo.findData(value)
        if index < 0 and value:
            combo.insertItem(0, os.path.basename(value.rstrip("/\\")) or value, value)
            index = 0
        combo.setCurrentIndex(max(index, 0))

    def updateGUIFromMRML(self) -> None:
        widgets = [self.modelComboBox, self.deviceComboBox, self.scopeComboBox, self.outputComboBox]
        widgets += [self.thresholdSlider, self.ttaCheckBox]
        blocked = [w.blockSignals(True) for w in widgets]
        self._select(self.modelComboBox, self.scriptedEffect.parameter("Model"))
        self._select(self.deviceComboBox, self.scriptedEffect.parameter("Device"))
        self._select(self.scopeComboBox, self.scriptedEffect.parameter("Scope"))
        self._select(self.outputComboBox, self.scriptedEffect.parameter("Output"))
        self.thresholdSlider.value = self.scriptedEffect.doubleParameter("Threshold")
        self.ttaCheckBox.checked = bool(self.scriptedEffect.integerParameter("TTA"))
        for widget, was in zip(widgets, blocked):
            widget.blockSignals(was)
        self.updateButtons()

    def updateMRMLFromGUI(self, *_args) -> None:
        self.scriptedEffect.setParameter("Model", self.modelComboBox.currentData or "")
        self.scriptedEffect.setParameter("Device", self.deviceComboBox.currentData)
        self.scriptedEffect.setParameter("Scope", self.scopeComboBox.currentData)
        self.scriptedEffect.setParameter("Output", self.outputComboBox.currentData)
        self.scriptedEffect.setParameter("Threshold", float(self.thresholdSlider.value))
        self.scriptedEffect.setParameter("TTA", 1 if self.ttaCheckBox.checked else 0)

    def onModelActivated(self, index: int) -> None:
        if self.modelComboBox.itemData(index) == "":
            path = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), "DoubleU-Net bundle folder")
            if not path:
                path = qt.QFileDialog.getOpenFileName(
                    slicer.util.mainWindow(), "DoubleU-Net weights file", "", "PyTorch weights (*.pt *.pth)"
                )
            if path:
                entry = self.logic.customModel(path)
                self.modelComboBox.insertItem(0, entry.label, entry.name)
            self.modelComboBox.setCurrentIndex(0)
        self.updateMRMLFromGUI()

    def updateButtons(self) -> None:
        busy = self.pending is not None or bool(self.queued)
        self.previewButton.enabled = not busy
        self.applyButton.enabled = not busy
        self.cancelButton.enabled = busy or self.previewProbabilities is not None

    # --- activation and views ------------------------------------------------------------------------------
    def deactivate(self) -> None:
        self.removePreview()

    def cleanup(self) -> None:
        """Called when the effect is destroyed: nothing may be left running or on disk."""
        self.closeWorker()

    def processInteractionEvents(self, callerInteractor, eventId, viewWidget) -> bool:
        if viewWidget is not None and viewWidget.className() == "qMRMLSliceWidget":
            self.lastSliceWidget = viewWidget  # Preview segments the slice of the view the user works in
        return False

    def sliceWidget(self):
        return self.lastSliceWidget or slicer.app.layoutManager().sliceWidget("Red")

    # --- engine --------------------------------------------------------------------------------------------
    def options(self) -> EngineOptions:
        return EngineOptions(
            model=self.scriptedEffect.parameter("Model") or "polyp",
            device=self.scriptedEffect.parameter("Device") or "auto",
            tta=bool(self.scriptedEffect.integerParameter("TTA")),
            save_probabilities=True,
        )

    def ensureWorker(self) -> None:
        """Start (or restart, when model/device/TTA changed) the persistent engine."""
        options = self.options()
        key = (options.model, options.device, options.tta)
        if self.worker is not None and self.worker.running() and key == self.workerKey:
            return
        self.closeWorker()
        self.logic.ensureDependencies()
        self.workspace = self.logic.newWorkspace()
        self.worker = self.logic.startWorker(options)
        self.workerKey = key
        self.workerInfo = {}
        self.workerState = RunState()
        self.timer = qt.QTimer()
        self.timer.setInterval(100)
        self.timer.connect("timeout()", self.pollWorker)
        self.timer.start()
        self.statusLabel.text = "Loading the model (first time only)..."

    def closeWorker(self) -> None:
        if self.timer is not None:
            self.timer.stop()
            self.timer = None
        if self.worker is not None:
            self.worker.close()
            self.worker = None
        self.pending = None
        self.queued = []
        self.sourceKey = None
        if self.workspace is not None:
            remove_workspace(self.workspace)
            self.workspace = None

    def sourceVolume(self):
        volume = self.scriptedEffect.parameterSetNode().GetSourceVolumeNode()
        if volume is None:
            raise RuntimeError("Select a source volume in the Segment Editor first.")
        return volume

    def sourceFile(self, volume) -> Path:
        """The source volume on disk for the worker, rewritten only when the volume changed."""
        key = (volume.GetID(), volume.GetImageData().GetMTime())
        path = self.workspace / "source.nii"
        if key != self.sourceKey:
            self.logic.writeVolume(volume, path)
            self.sourceKey = key
        return path

    def whenReady(self, action) -> None:
        """Run ``action`` once the worker has loaded the model (its slice axis is needed to plan requests)."""
        self.queued.append(action)
        self.updateButtons()
        self.pollWorker()

    def send(self, purpose: str, slices, extra: dict | None = None) -> None:
        volume = self.sourceVolume()
        self.requestCount += 1
        request = {
            "id": str(self.requestCount),
            "input": str(self.sourceFile(volume)),
            "output": str(self.workspace / "results"),
            "name": f"r{self.requestCount}",
            "slices": list(slices) if slices else None,
            "save_probabilities": True,
        }
        self.pending = {"purpose": purpose, "request": request, "volume": volume, **(extra or {})}
        self.workerState = RunState(device=self.workerState.device, device_reason=self.workerState.device_reason)
        self.worker.send(request)
        self.updateButtons()

    def pollWorker(self) -> None:
        if self.worker is None:
            return
        for event in self.worker.poll():
            if event.kind == "ready":
                self.workerInfo = event.data
            if event.kind == "log":
                logging.info("DoubleU-Net worker: %s", event.line)
            self.workerState.apply(event)
            if event.kind == "idle" and self.pending and event.data.get("id") == self.pending["request"]["id"]:
                self.onRequestFinished()
        self.progressBar.value = self.workerState.percent
        if self.workerState.status:
            self.statusLabel.text = self.workerState.status
        if self.workerInfo and self.pending is None and self.queued:
            action = self.queued.pop(0)
            try:
                action()
            except Exception as err:
                self.fail(str(err))
        if (
            not self.worker.running()
            and self.worker.finished()
            and (self.pending or self.queued or not self.workerInfo)
        ):
            message = self.workerState.errors[-1] if self.workerState.errors else self.worker.stderr_text().strip()
            self.closeWorker()
            self.fail(message or "The DoubleU-Net engine stopped unexpectedly.")
        self.updateButtons()

    def fail(self, message: str) -> None:
        self.errorText = message
        self.pending = None
        self.queued = []
        self.statusLabel.text = f"Failed: {message.splitlines()[-1] if message else ''}"
        self.updateButtons()
        if not slicer.app.testingEnabled():
            slicer.util.errorDisplay(f"DoubleU-Net segmentation failed:\n{message}")

    def waitForWorker(self, timeoutSeconds: float = 600.0) -> None:
        """Block until the current request is answered (scripts and self-tests only)."""
        deadline = time.monotonic() + timeoutSeconds
        while self.pending is not None or self.queued:
            slicer.app.processEvents()
            self.pollWorker()
            time.sleep(0.05)
            if time.monotonic() > deadline:
                self.onCancel()
                raise RuntimeError("DoubleU-Net request timed out")

    # --- user actions --------------------------------------------------------------------------------------
    def onPreview(self) -> None:
        self.errorText = None
        try:
            self.ensureWorker()
        except Exception as err:
            self.fail(str(err))
            return
        self.whenReady(lambda: self.send("preview", self.sliceInView()))

    def onApply(self) -> None:
        self.errorText = None
        scope = self.scriptedEffect.parameter("Scope")
        if scope == "slice" and self.previewProbabilities is not None and self.previewMatchesView():
            self.commit()  # keep what the user already sees
            return
        try:
            self.ensureWorker()
        except Exception as err:
            self.fail(str(err))
            return
        if scope == "slice":
            self.whenReady(lambda: self.send("apply", self.sliceInView()))
        elif scope == "roi":
            self.whenReady(self.sendRoi)
        else:
            self.whenReady(lambda: self.send("apply", None))

    def onCancel(self) -> None:
        if self.pending is not None or self.queued:
            self.closeWorker()  # kills the whole engine process tree
            self.statusLabel.text = "Cancelled."
            self.progressBar.value = 0
        self.removePreview()
        self.updateButtons()

    def onThresholdChanged(self, value: float) -> None:
        self.updateMRMLFromGUI()
        if self.previewProbabilities is not None:
            self.showPreview()

    # --- geometry ------------------------------------------------------------------------------------------
    def sliceAxis(self) -> int:
        return int(self.workerInfo.get("slice_axis", 2))

    def sliceInView(self) -> tuple[int, int]:
        volume = self.sourceVolume()
        sliceToRas = slicer.util.arrayFromVTKMatrix(self.sliceWidget().mrmlSliceNode().GetSliceToRAS())
        rasToIjk = slicer.util.arrayFromVTKMatrix(self.rasToIjk(volume))
        ijkToRas = np.linalg.inv(rasToIjk)
        axis = self.sliceAxis()
        if not view_is_along_axis(ijkToRas, sliceToRas[:3, 2], axis):
            self.statusLabel.text = "The view is oblique to the model's slices; the nearest voxel slice is segmented."
        size = volume.GetImageData().GetDimensions()[axis]
        k = slice_index(rasToIjk, sliceToRas[:3, 3], axis, size)
        return (k, k + 1)

    @staticmethod
    def rasToIjk(volume):
        import vtk

        matrix = vtk.vtkMatrix4x4()
        volume.GetRASToIJKMatrix(matrix)
        return matrix

    def roiBox(self, volume):
        roi = self.roiSelector.currentNode()
        if roi is None:
            raise RuntimeError("Select or place an ROI for 'Inside ROI'.")
        bounds = [0.0] * 6
        roi.GetRASBounds(bounds)
        rasToIjk = slicer.util.arrayFromVTKMatrix(self.rasToIjk(volume))
        return ijk_box(rasToIjk, bounds, volume.GetImageData().GetDimensions())

    def sendRoi(self) -> None:
        volume = self.sourceVolume()
        box = self.roiBox(volume)
        axis = self.sliceAxis()
        self.send("apply", (box[axis].start, box[axis].stop), {"box": box})

    def previewMatchesView(self) -> bool:
        return self.previewRequest is not None and tuple(self.previewRequest["slices"] or ()) == self.sliceInView()

    # --- results -------------------------------------------------------------------------------------------
    def onRequestFinished(self) -> None:
        pending, self.pending = self.pending, None
        state = self.workerState
        if state.errors or "segments" not in state.outputs:
            self.fail("\n".join(state.errors) or "The engine gave no result.")
            return
        import nibabel

        result = read_result(Path(state.outputs["segments"]).parent)
        self.removePreview()
        self.previewResult = result
        self.previewProbabilities = np.asarray(nibabel.load(str(result.probabilities)).get_fdata(dtype=np.float32))
        self.previewGeometryNode = self.logic.loadLabelmap(result.labelmap)
        self.previewRequest = pending["request"]
        self.previewBox = pending.get("box")
        if pending["purpose"] == "preview":
            self.showPreview()
            self.statusLabel.text = f"{state.status}. Move the threshold, then Apply to keep it."
        else:
            self.commit()
        self.updateButtons()

    def previewLabels(self) -> np.ndarray:
        """Labels (I, J, K) of the kept probabilities at the slider's threshold, ROI applied."""
        threshold = float(self.thresholdSlider.value)
        labels = labels_from_probabilities(self.previewProbabilities, threshold, self.previewResult.largest_component)
        if self.previewBox is not None:
            offset = [0, 0, 0]
            slices = self.previewRequest["slices"]
            if slices:
                offset[self.sliceAxis()] = slices[0]
            mask_outside(labels, self.previewBox, offset)
        return labels

    def showPreview(self) -> None:
        """Overlay the thresholded probabilities in a separate, semi-transparent segmentation."""
        labels = to_kji(self.previewLabels())
        if self.previewSegmentationNode is None:
            self.previewSegmentationNode = slicer.mrmlScene.AddNewNodeByClass(
                "vtkMRMLSegmentationNode", "DoubleU-Net preview"
            )
            self.previewSegmentationNode.CreateDefaultDisplayNodes()
            self.previewSegmentationNode.GetDisplayNode().SetOpacity(PREVIEW_OPACITY)
            self.previewSegmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(self.sourceVolume())
        segmentation = self.previewSegmentationNode.GetSegmentation()
        for spec in self.previewResult.segments:
            segmentId = segmentation.GetSegmentIdBySegmentName(spec.name)
            if not segmentId:
                segmentId = segmentation.AddEmptySegment("", spec.name, list(spec.color))
            mask = (labels == spec.value).astype(np.uint8)
            slicer.util.updateSegmentBinaryLabelmapFromArray(
                mask, self.previewSegmentationNode, segmentId, self.previewGeometryNode
            )

    def removePreview(self) -> None:
        if self.previewSegmentationNode is not None:
            slicer.mrmlScene.RemoveNode(self.previewSegmentationNode)
            self.previewSegmentationNode = None
        if self.previewGeometryNode is not None:
            slicer.mrmlScene.RemoveNode(self.previewGeometryNode)
            self.previewGeometryNode = None
        self.previewProbabilities = None
        self.previewRequest = None
        self.previewBox = None

    def commit(self) -> None:
        """The kept result into the edited segmentation, undoable."""
        labels = self.previewLabels()
        segmentationNode = self.scriptedEffect.parameterSetNode().GetSegmentationNode()
        volume = self.sourceVolume()
        self.scriptedEffect.saveStateForUndo()
        segmentationNode = self.logic.prepareSegmentation(segmentationNode, volume)
        selected = self.scriptedEffect.parameterSetNode().GetSelectedSegmentID()
        if self.scriptedEffect.parameter("Output") == "selected" and selected:
            modifier = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
            try:
                modifier.CopyOrientation(self.previewGeometryNode)
                slicer.util.updateVolumeFromArray(modifier, to_kji((labels > 0).astype(np.uint8)))
                oriented = slicer.vtkSlicerSegmentationsModuleLogic.CreateOrientedImageDataFromVolumeNode(modifier)
                self.scriptedEffect.modifySelectedSegmentByLabelmap(
                    oriented, slicer.qSlicerSegmentEditorAbstractEffect.ModificationModeAdd
                )
            finally:
                slicer.mrmlScene.RemoveNode(modifier)
            added = 1
        else:
            voxels = {s.name: int((labels == s.value).sum()) for s in self.previewResult.segments}
            added = len(
                self.logic.importLabels(
                    to_kji(labels), self.previewGeometryNode, self.previewResult, segmentationNode, voxels
                )
            )
        self.statusLabel.text = f"Added {added} segment(s). Device: {self.workerState.device_reason}"
        self.removePreview()

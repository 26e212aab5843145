"""Segment Editor effect "DoubleU-Net": preview a slice in about a second, re-threshold instantly, apply.

A persistent engine process (``doubleunet_segment.inference.worker``) keeps the model loaded, so Preview costs one
slice of inference, not a model load; ``DoubleUNetSegmentLib.worker_session.WorkerSession`` runs it (start,
queue, send, poll, wait, close), and this file only turns nodes into its requests and its results into
segments. The effect keeps the probability map of the last result: moving the threshold slider recomputes the
labels from it in Slicer without running the network again. Applying saves the segmentation state first, so
the Segment Editor's Undo takes the result back.
"""

from __future__ import annotations

import os

import numpy as np
import qt
import slicer
from DoubleUNetSegmentLib.commands import EngineOptions
from DoubleUNetSegmentLib.events import RunState
from DoubleUNetSegmentLib.process import EngineProcess
from DoubleUNetSegmentLib.segment_import import (
    Prediction,
    ijk_box,
    labels_from_probabilities,
    mask_outside,
    slice_index,
    to_kji,
    view_is_along_axis,
)
from DoubleUNetSegmentLib.worker_session import PendingRequest, WorkerSession
from SegmentEditorEffects import AbstractScriptedSegmentEditorEffect

from DoubleUNetSegment import DEVICE_CHOICES, DoubleUNetSegmentLogic, addModelItems, chooseCustomModel

SCOPES = [("Whole volume", "volume"), ("Slice in view", "slice"), ("Inside ROI", "roi")]
OUTPUTS = [("New segments", "new"), ("Add to selected segment", "selected")]
PREVIEW_OPACITY = 0.6
POLL_MS = 100  # Preview answers in about a second: poll the worker more often than the panel polls a batch run


class SegmentEditorEffect(AbstractScriptedSegmentEditorEffect):
    """DoubleU-Net inference as a Segment Editor effect, with preview and undo."""

    def __init__(self, scriptedEffect) -> None:
        scriptedEffect.name = "DoubleU-Net"
        scriptedEffect.perSegment = False  # creates its own segments (or fills the selected one)
        scriptedEffect.requireSegments = False
        AbstractScriptedSegmentEditorEffect.__init__(self, scriptedEffect)
        self.logic = DoubleUNetSegmentLogic()
        self.session = WorkerSession(
            self.startWorkerProcess,
            self.logic.newWorkspace,
            on_result=self.onResult,
            on_failure=self.showFailure,
            on_update=self.onWorkerUpdate,
        )
        self.timer = None
        self.previewProbabilities: np.ndarray | None = None
        self.previewGeometryNode = None
        self.previewResult: Prediction | None = None
        self.previewRequest: PendingRequest | None = None
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
            default, models = self.logic.models()
        except (FileNotFoundError, ValueError, KeyError):
            default, models = "", []
        addModelItems(self.modelComboBox, models)  # which one is selected comes from the parameter node
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
        chooseCustomModel(self.modelComboBox, index)
        self.updateMRMLFromGUI()

    def updateButtons(self) -> None:
        busy = self.session.busy
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

    def startWorkerProcess(self, options: EngineOptions) -> EngineProcess:
        """The session's way to start the worker: Python packages first (may ask to install), then the process."""
        self.logic.ensureDependencies()
        return self.logic.startWorker(options)

    def ensureWorker(self) -> None:
        """Start (or restart, when model/device/TTA changed) the persistent engine, polled by a Qt timer."""
        if not self.session.ensure(self.options()):
            return
        if self.timer is None:
            self.timer = qt.QTimer()
            self.timer.setInterval(POLL_MS)
            self.timer.connect("timeout()", self.pollWorker)
        self.timer.start()
        self.statusLabel.text = "Loading the model (first time only)..."

    def closeWorker(self) -> None:
        """Stop the engine and delete its temporary files."""
        if self.timer is not None:
            self.timer.stop()
        self.session.close()

    def sourceVolume(self):
        volume = self.scriptedEffect.parameterSetNode().GetSourceVolumeNode()
        if volume is None:
            raise RuntimeError("Select a source volume in the Segment Editor first.")
        return volume

    def whenReady(self, action) -> None:
        """Run ``action`` once the worker has loaded the model (its slice axis is needed to plan requests)."""
        self.session.when_ready(action)
        self.updateButtons()

    def send(self, purpose: str, slices, context: dict | None = None) -> None:
        """The source volume (written only when it changed) to the worker, all of it or ``slices`` [k0, k1)."""
        volume = self.sourceVolume()
        key = (volume.GetID(), volume.GetImageData().GetMTime())
        source = self.session.source_file(key, lambda path: self.logic.writeVolume(volume, path))
        self.session.send(purpose, source, slices, context)
        self.updateButtons()

    def pollWorker(self) -> None:
        """The timer's tick: the session reads the worker; the timer stops once the session was closed."""
        self.session.poll()
        if not self.session.active and self.timer is not None:
            self.timer.stop()
        self.updateButtons()

    def onWorkerUpdate(self, state: RunState) -> None:
        self.progressBar.value = state.percent
        if state.status:
            self.statusLabel.text = state.status

    def showFailure(self, message: str) -> None:
        """What the session reports as failed: in the status line, and in a message box outside self-tests."""
        self.errorText = message
        self.statusLabel.text = f"Failed: {message.splitlines()[-1] if message else ''}"
        self.updateButtons()
        if not slicer.app.testingEnabled():
            slicer.util.errorDisplay(f"DoubleU-Net segmentation failed:\n{message}")

    def waitForWorker(self, timeoutSeconds: float = 600.0) -> None:
        """Block until the current request is answered (scripts and self-tests only)."""
        try:
            self.session.wait(timeoutSeconds, pump=slicer.app.processEvents)
        except TimeoutError:
            self.onCancel()
            raise RuntimeError("DoubleU-Net request timed out") from None
        finally:
            self.updateButtons()

    def licenceAccepted(self) -> bool:
        """The selected model's research-only licence, shown once before its first run; False: declined."""
        try:
            if self.logic.confirmModelLicence(self.options().model):
                return True
        except Exception as err:
            self.session.fail(str(err))
            return False
        self.statusLabel.text = "Not started: the model's licence terms were not accepted."
        return False

    # --- user actions --------------------------------------------------------------------------------------
    def onPreview(self) -> None:
        self.errorText = None
        if not self.licenceAccepted():
            return
        try:
            self.ensureWorker()
        except Exception as err:
            self.session.fail(str(err))
            return
        self.whenReady(lambda: self.send("preview", self.sliceInView()))

    def onApply(self) -> None:
        self.errorText = None
        scope = self.scriptedEffect.parameter("Scope")
        if scope == "slice" and self.previewProbabilities is not None and self.previewMatchesView():
            self.commit()  # keep what the user already sees
            return
        if not self.licenceAccepted():
            return
        try:
            self.ensureWorker()
        except Exception as err:
            self.session.fail(str(err))
            return
        if scope == "slice":
            self.whenReady(lambda: self.send("apply", self.sliceInView()))
        elif scope == "roi":
            self.whenReady(self.sendRoi)
        else:
            self.whenReady(lambda: self.send("apply", None))

    def onCancel(self) -> None:
        if self.session.busy:
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
        return self.session.slice_axis

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
        return self.previewRequest is not None and self.previewRequest.slices == self.sliceInView()

    # --- results -------------------------------------------------------------------------------------------
    def onResult(self, request: PendingRequest, result: Prediction) -> None:
        """The worker answered: keep its probabilities, then show them (Preview) or add them (Apply)."""
        import nibabel

        self.removePreview()
        self.previewResult = result
        self.previewProbabilities = np.asarray(nibabel.load(str(result.probabilities)).get_fdata(dtype=np.float32))
        self.previewGeometryNode = self.logic.loadLabelmap(result.labelmap)
        self.previewRequest = request
        self.previewBox = request.context.get("box")
        if request.purpose == "preview":
            self.showPreview()
            self.statusLabel.text = f"{self.session.state.status}. Move the threshold, then Apply to keep it."
        else:
            self.commit()
        self.updateButtons()

    def previewLabels(self) -> np.ndarray:
        """Labels (I, J, K) of the kept probabilities at the slider's threshold, ROI applied."""
        threshold = float(self.thresholdSlider.value)
        labels = labels_from_probabilities(self.previewProbabilities, threshold, self.previewResult.largest_component)
        if self.previewBox is not None:
            offset = [0, 0, 0]
            slices = self.previewRequest.slices
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
        for segment in self.previewResult.segments:
            segmentId = segmentation.GetSegmentIdBySegmentName(segment.name)
            if not segmentId:
                segmentId = segmentation.AddEmptySegment("", segment.name, list(segment.slicer_color))
            mask = (labels == segment.value).astype(np.uint8)
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
        self.statusLabel.text = f"Added {added} segment(s). Device: {self.session.state.device_reason}"
        self.removePreview()

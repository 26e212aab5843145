"""3D Slicer module "DoubleU-Net Segment": a panel that segments a volume with the DoubleU-Net engine.

This file only translates between Slicer nodes and the files, commands and plans of ``DoubleUNetSegmentLib``
(pure Python, tested outside Slicer). The network runs in a separate process of Slicer's own Python, so the
UI stays responsive, Cancel really stops the computation, and an engine crash cannot take Slicer down.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import qt
import slicer
import vtk
from DoubleUNetSegmentLib.bundle import ModelSpec, choose_custom_model, find_bundle_root, read_catalog
from DoubleUNetSegmentLib.commands import EngineOptions, cli_command, engine_environment, worker_command
from DoubleUNetSegmentLib.events import RunState, failure_message
from DoubleUNetSegmentLib.licence import confirm_licence
from DoubleUNetSegmentLib.poller import EventPoller
from DoubleUNetSegmentLib.requirements import (
    constraints,
    install_failure_message,
    load_requirements,
    load_slicer_releases,
    slicer_too_old,
    split_torch,
    torch_version_requirement,
    unmet,
)
from DoubleUNetSegmentLib.segment_import import Prediction, plan_import, read_result, volumetry_summary
from DoubleUNetSegmentLib.workspace import make_workspace, remove_workspace, sweep_stale
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

EXTENSION_NAME = "DoubleUNetSegment"
EFFECT_SOURCE = Path(__file__).resolve().parent / "SegmentEditorDoubleUNetLib" / "SegmentEditorEffect.py"
DEVICE_CHOICES = [("Automatic (GPU if available)", "auto"), ("CPU", "cpu"), ("GPU (CUDA)", "cuda")]
CHOOSE_MODEL = "Choose bundle folder or weights file..."
POLL_MS = 200


class DoubleUNetSegment(ScriptedLoadableModule):
    """Module description shown in Slicer; registers the Segment Editor effect once Slicer has started."""

    def __init__(self, parent) -> None:
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "DoubleU-Net Segment"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = ["Segmentations"]
        self.parent.contributors = ["DoubleU-Net Segment developers"]
        self.parent.helpText = """
Segments a volume with DoubleU-Net (Jha et al., CBMS 2020): polyps on endoscopy frames, hippocampus on T1 MR,
or any DoubleU-Net bundle on disk. The network runs in the background; results are added as new, named segments
with DICOM terminology so that DICOM SEG export keeps them. The Segment Editor gets a "DoubleU-Net" effect with
an interactive slice preview. See the project's README, section "Use in 3D Slicer".
"""
        self.parent.acknowledgementText = """
DoubleU-Net: Debesh Jha et al. Built on MONAI and PyTorch; extension layout after SlicerMONAIAuto3DSeg and
SlicerTotalSegmentator (Andras Lasso et al.).
"""
        slicer.app.connect("startupCompleted()", registerEditorEffect)


def registerEditorEffect() -> None:
    """Make "DoubleU-Net" appear in every Segment Editor (same mechanism as Slicer's effect template)."""
    import qSlicerSegmentationsEditorEffectsPythonQt as effects

    instance = effects.qSlicerSegmentEditorScriptedEffect(None)
    instance.setPythonSource(str(EFFECT_SOURCE).replace("\\", "/"))
    instance.self().register()


def addModelItems(combo, models: list[ModelSpec], default: str | None = None) -> None:
    """The shipped models (description as tooltip), then the entry that asks for the user's own model.

    Shared by the panel and the effect, so both offer the same list; ``default`` is selected when given.
    """
    for model in models:
        combo.addItem(model.label, model.name)
        combo.setItemData(combo.count - 1, model.description, qt.Qt.ToolTipRole)
        if model.name == default:
            combo.setCurrentIndex(combo.count - 1)
    combo.insertSeparator(combo.count)
    combo.addItem(CHOOSE_MODEL, "")


def chooseCustomModel(combo, index: int) -> None:
    """When ``index`` is the "Choose..." entry: ask for a bundle folder, else a weights file, and select it.

    The choice logic is ``choose_custom_model`` (tested without Slicer); this adds Qt's dialogs. The chosen
    model goes first in ``combo``; cancelling both dialogs selects the first entry again.
    """
    if combo.itemData(index) != "":
        return
    window = slicer.util.mainWindow()
    model = choose_custom_model(
        lambda: qt.QFileDialog.getExistingDirectory(window, "DoubleU-Net bundle folder"),
        lambda: qt.QFileDialog.getOpenFileName(window, "DoubleU-Net weights file", "", "PyTorch weights (*.pt *.pth)"),
    )
    if model is not None:
        combo.insertItem(0, model.label, model.name)
        combo.setItemData(0, model.description, qt.Qt.ToolTipRole)
    combo.setCurrentIndex(0)


# ---------------------------------------------------------------------------------------------------------------
# Logic: everything that touches nodes, files and the engine process; no widgets.
# ---------------------------------------------------------------------------------------------------------------


class EngineRun:
    """A running engine process polled from Qt's event loop; calls back after new events and once at the end.

    The reading is ``EventPoller``'s (shared with the effect's worker session); this class adds the Qt timer.
    """

    def __init__(
        self,
        process,
        onUpdate: Callable[[RunState], None] | None,
        onFinished: Callable[[EngineRun], None],
        state: RunState | None = None,
    ) -> None:
        self.process = process
        self.poller = EventPoller(process, state, source="engine")
        self.onUpdate = onUpdate
        self.onFinished = onFinished
        self.timer = qt.QTimer()
        self.timer.setInterval(POLL_MS)
        self.timer.connect("timeout()", self.poll)
        self.timer.start()

    @property
    def state(self) -> RunState:
        return self.poller.state

    def poll(self) -> None:
        events = self.poller.poll()
        if events and self.onUpdate:
            self.onUpdate(self.state)
        if self.poller.finished:
            self.timer.stop()
            self.onFinished(self)

    @property
    def succeeded(self) -> bool:
        return not self.process.cancelled and self.process.returncode == 0 and bool(self.state.outputs)

    def errorMessage(self) -> str:
        return failure_message(self.state, self.process.returncode, self.process.stderr_text())

    def cancel(self) -> None:
        self.process.cancel()


class DoubleUNetSegmentLogic(ScriptedLoadableModuleLogic):
    """Dependencies, temporary files, the engine subprocess and importing its results as segments."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.moduleDir = Path(__file__).resolve().parent
        self.run: EngineRun | None = None
        self.workspace: Path | None = None

    # --- where things are ----------------------------------------------------------------------------------
    def bundleRoot(self) -> Path:
        return find_bundle_root(self.moduleDir)

    def models(self) -> tuple[str, list[ModelSpec]]:
        """(default name, specs) of the shipped models."""
        return read_catalog(self.bundleRoot())

    @staticmethod
    def pythonExecutable() -> str:
        """Slicer's own Python (``PythonSlicer``); packages installed at first use live there."""
        python = shutil.which("PythonSlicer")
        if not python:
            raise RuntimeError("PythonSlicer was not found next to 3D Slicer; reinstall 3D Slicer.")
        return python

    def requirementsPath(self) -> Path:
        return self.moduleDir / "Resources" / "requirements.txt"

    def slicerReleasesPath(self) -> Path:
        return self.moduleDir / "Resources" / "slicer_releases.json"

    def engineEnvironment(self) -> dict:
        return engine_environment(self.bundleRoot(), slicer.util.startupEnvironment())

    # --- dependencies --------------------------------------------------------------------------------------
    def missingDependencies(self) -> list[str]:
        return [u.describe() for u in unmet(load_requirements(self.requirementsPath()))]

    def checkSlicerVersion(self) -> None:
        """Refuse a Slicer older than the minimum: its Python or its own packages cannot run the engine."""
        running = f"{slicer.app.majorVersion}.{slicer.app.minorVersion}"
        message = slicer_too_old(running, load_slicer_releases(self.slicerReleasesPath()).minimum)
        if message:
            raise RuntimeError(message)

    def constraintsFile(self) -> Path:
        """pip ``-c`` file: the packages Slicer ships stay at the versions installed now (pip never replaces them)."""
        releases = load_slicer_releases(self.slicerReleasesPath())
        path = Path(tempfile.gettempdir()) / "DoubleUNetSegment-constraints.txt"
        path.write_text("\n".join(constraints(releases.release(releases.minimum), skip=["torch"])) + "\n")
        return path

    def ensureDependencies(self, askConfirmation: bool = True) -> None:
        """Install what the engine needs into Slicer's Python, asking first; raises with a helpful message.

        Requirements are lower bounds that Slicer's own packages satisfy, and pip runs with a constraints file
        that holds those packages at their installed versions: nothing Slicer ships is upgraded or replaced.
        """
        self.checkSlicerVersion()
        torchRequirement, others = split_torch(load_requirements(self.requirementsPath()))
        if torchRequirement is not None and unmet([torchRequirement]):
            self._installTorch(torchRequirement, askConfirmation, self.constraintsFile())
        if not unmet(others):
            return
        try:
            slicer.packaging.pip_ensure(
                [str(r) for r in others],
                constraints=str(self.constraintsFile()),
                skip_packages=["torch"],
                prompt_install=askConfirmation,
                requester="DoubleU-Net Segment",
            )
        except RuntimeError:
            raise
        except Exception as err:  # pip's errors come in many types; the user needs one clear message
            raise RuntimeError(install_failure_message("the required Python packages", err)) from err
        still = unmet(others)
        if still:
            raise RuntimeError(
                "These packages are still missing or at a wrong version:\n"
                + "\n".join(u.describe() for u in still)
                + "\nRestart 3D Slicer and try again."
            )

    @staticmethod
    def _installTorch(requirement, askConfirmation: bool, constraintsFile: Path) -> None:
        """torch through the PyTorch extension (right CUDA build for the driver), else plain pip (CPU build)."""
        try:
            import PyTorchUtils
        except ImportError:
            PyTorchUtils = None
        try:
            if PyTorchUtils is not None:
                torchLogic = PyTorchUtils.PyTorchUtilsLogic()
                if not torchLogic.torchInstalled():
                    torch = torchLogic.installTorch(
                        askConfirmation=askConfirmation,
                        torchVersionRequirement=torch_version_requirement(requirement),
                    )
                    if torch is None:
                        raise RuntimeError("PyTorch is required; its installation was cancelled or failed.")
                return
            if askConfirmation and not slicer.util.confirmOkCancelDisplay(
                f"DoubleU-Net Segment needs PyTorch ({requirement}). Install the CPU build now with pip?\n"
                "For a GPU build, install the PyTorch extension from the Extensions Manager first."
            ):
                raise RuntimeError("PyTorch is required; its installation was declined.")
            slicer.packaging.pip_install([str(requirement)], constraints=str(constraintsFile))
        except RuntimeError:
            raise
        except Exception as err:
            raise RuntimeError(install_failure_message("PyTorch", err)) from err

    # --- licences ------------------------------------------------------------------------------------------
    def confirmModelLicence(self, model: str) -> bool:
        """Show a research-only model's licence once (remembered in Slicer's settings); False: declined."""
        return confirm_licence(
            self.bundleRoot(),
            model,
            qt.QSettings(),
            lambda text: slicer.util.confirmOkCancelDisplay(text, windowTitle="DoubleU-Net Segment: model licence"),
        )

    # --- files ---------------------------------------------------------------------------------------------
    def newWorkspace(self) -> Path:
        base = Path(slicer.util.tempDirectory()).parent
        sweep_stale(base)
        return make_workspace(base)

    @staticmethod
    def writeVolume(volumeNode, path: Path) -> None:
        """The volume as NIfTI (its voxel grid unchanged, so results map back voxel for voxel)."""
        storageNode = slicer.vtkMRMLVolumeArchetypeStorageNode()
        storageNode.SetFileName(str(path))
        storageNode.UseCompressionOff()
        if not storageNode.WriteData(volumeNode):
            raise RuntimeError(f"Could not write {volumeNode.GetName()} to {path}")

    @staticmethod
    def loadLabelmap(path: Path):
        return slicer.util.loadLabelVolume(str(path), {"show": False})

    # --- running -------------------------------------------------------------------------------------------
    def startSegmentation(
        self,
        inputVolume,
        options: EngineOptions,
        onUpdate: Callable[[RunState], None] | None,
        onFinished: Callable[[EngineRun], None],
    ) -> EngineRun:
        """Write the volume, start the CLI in the background and return at once."""
        from DoubleUNetSegmentLib.process import EngineProcess

        if self.run is not None and self.run.process.running():
            raise RuntimeError("A segmentation is already running; cancel it first.")
        self.workspace = self.newWorkspace()
        inputPath = self.workspace / "input.nii"
        try:
            self.writeVolume(inputVolume, inputPath)
            command = cli_command(self.pythonExecutable(), inputPath, self.workspace / "output", options)
            logging.info("DoubleU-Net Segment: %s", " ".join(command))
            process = EngineProcess(command, env=self.engineEnvironment())
        except Exception:
            self.cleanup()
            raise
        self.run = EngineRun(process, onUpdate, onFinished)
        return self.run

    def resultOf(self, run: EngineRun) -> Prediction:
        return read_result(Path(run.state.outputs["segments"]).parent)

    def cancel(self) -> None:
        if self.run is not None:
            self.run.cancel()

    def cleanup(self) -> None:
        if self.workspace is not None:
            remove_workspace(self.workspace)
            self.workspace = None

    def startWorker(self, options: EngineOptions):
        """A persistent engine (model loaded once) for the effect's Preview."""
        from DoubleUNetSegmentLib.process import EngineProcess

        command = worker_command(self.pythonExecutable(), options)
        logging.info("DoubleU-Net Segment worker: %s", " ".join(command))
        return EngineProcess(command, env=self.engineEnvironment(), stdin=True)

    # --- results into segments -----------------------------------------------------------------------------
    @staticmethod
    def prepareSegmentation(segmentationNode, inputVolume):
        """A segmentation bound to the input volume: reference geometry, node reference, same study and transform.

        The reference to the source volume is what Slicer's DICOM SEG export needs to find the series.
        """
        if segmentationNode is None:
            segmentationNode = slicer.mrmlScene.AddNewNodeByClass(
                "vtkMRMLSegmentationNode", slicer.mrmlScene.GenerateUniqueName(f"{inputVolume.GetName()} DoubleU-Net")
            )
            segmentationNode.CreateDefaultDisplayNodes()
        if segmentationNode.GetNodeReference(segmentationNode.GetReferenceImageGeometryReferenceRole()) is None:
            segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(inputVolume)
            segmentationNode.SetNodeReferenceID(
                segmentationNode.GetReferenceImageGeometryReferenceRole(), inputVolume.GetID()
            )
        if segmentationNode.GetTransformNodeID() is None and inputVolume.GetTransformNodeID() is not None:
            segmentationNode.SetAndObserveTransformNodeID(inputVolume.GetTransformNodeID())
        shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
        volumeItem = shNode.GetItemByDataNode(inputVolume)
        segmentationItem = shNode.GetItemByDataNode(segmentationNode)
        if volumeItem and segmentationItem and shNode.GetItemParent(segmentationItem) == shNode.GetSceneItemID():
            shNode.SetItemParent(segmentationItem, shNode.GetItemParent(volumeItem))
        return segmentationNode

    @staticmethod
    def segmentNames(segmentationNode) -> list[str]:
        segmentation = segmentationNode.GetSegmentation()
        return [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())]

    def importLabels(
        self, labelsKji: np.ndarray, geometryNode, result: Prediction, segmentationNode, voxels=None
    ) -> list[str]:
        """Each label value as a new segment with a unique name, colour and terminology; returns their ids.

        ``geometryNode`` is a volume node with the grid ``labelsKji`` lies on (the engine's label map).
        Segments already in ``segmentationNode`` are never touched.
        """
        plan = plan_import(result.segments, self.segmentNames(segmentationNode), voxels)
        for name in plan.skipped:
            logging.info("DoubleU-Net Segment: no voxels of %s found; no segment created for it", name)
        segmentation = segmentationNode.GetSegmentation()
        added = []
        for item in plan.items:
            segmentId = segmentation.AddEmptySegment("", item.name, list(item.segment.slicer_color))
            segment = segmentation.GetSegment(segmentId)
            segment.SetTerminology(item.segment.terminology)
            segment.SetNameAutoGenerated(False)
            mask = (labelsKji == item.value).astype(np.uint8)
            slicer.util.updateSegmentBinaryLabelmapFromArray(mask, segmentationNode, segmentId, geometryNode)
            added.append(segmentId)
        return added

    def importResult(self, result: Prediction, segmentationNode, inputVolume):
        """The engine's label map into (a new or the given) segmentation; returns (segmentation, new ids)."""
        segmentationNode = self.prepareSegmentation(segmentationNode, inputVolume)
        labelNode = self.loadLabelmap(result.labelmap)
        try:
            labels = slicer.util.arrayFromVolume(labelNode)
            ids = self.importLabels(labels, labelNode, result, segmentationNode, result.voxels)
        finally:
            slicer.mrmlScene.RemoveNode(labelNode)
        return segmentationNode, ids

    def process(self, inputVolume, segmentationNode, options: EngineOptions, timeoutSeconds: float = 3600.0):
        """Blocking run for scripts and tests: segment, import, clean up; returns (segmentation, new ids)."""
        finished = []
        run = self.startSegmentation(inputVolume, options, None, finished.append)
        deadline = time.monotonic() + timeoutSeconds
        while not finished:
            slicer.app.processEvents()
            time.sleep(0.05)
            if time.monotonic() > deadline:
                self.cancel()
                run.poll()
                raise RuntimeError("DoubleU-Net segmentation timed out")
        try:
            if not run.succeeded:
                raise RuntimeError(run.errorMessage())
            return self.importResult(self.resultOf(run), segmentationNode, inputVolume)
        finally:
            self.cleanup()


# ---------------------------------------------------------------------------------------------------------------
# Widget: the panel.
# ---------------------------------------------------------------------------------------------------------------


class DoubleUNetSegmentWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Input, model, device and options; Apply runs in the background, Cancel ends it."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic: DoubleUNetSegmentLogic | None = None
        self.ui = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/DoubleUNetSegment.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = DoubleUNetSegmentLogic()

        for label, device in DEVICE_CHOICES:
            self.ui.deviceComboBox.addItem(label, device)
        self.populateModels()
        self.ui.contextCheckBox.setToolTip(
            "2.5D needs a model trained on stacks of adjacent slices; the selected model segments single slices."
        )
        self.ui.modelComboBox.connect("activated(int)", self.onModelActivated)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancelButton)
        self.ui.inputVolumeSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.updateButtons)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.updateButtons()

    def cleanup(self) -> None:
        self.removeObservers()
        if self.logic is not None:
            self.logic.cancel()
            self.logic.cleanup()

    def onSceneStartClose(self, caller, event) -> None:
        if self.logic is not None and self.logic.run is not None and self.logic.run.process.running():
            self.logic.cancel()

    def populateModels(self) -> None:
        combo = self.ui.modelComboBox
        combo.clear()
        try:
            default, models = self.logic.models()
        except (FileNotFoundError, ValueError, KeyError) as err:
            self.ui.statusLabel.text = f"Model catalog not found: {err}"
            default, models = "", []
        addModelItems(combo, models, default)
        self.modelThresholds = {model.name: model.threshold for model in models}
        self.showModelThreshold()

    def showModelThreshold(self) -> None:
        """Set the slider to the selected shipped model's own threshold (a user's model keeps the slider as it is)."""
        threshold = getattr(self, "modelThresholds", {}).get(self.ui.modelComboBox.currentData)
        if threshold is not None:
            self.ui.thresholdSlider.value = threshold

    def onModelActivated(self, index: int) -> None:
        chooseCustomModel(self.ui.modelComboBox, index)
        self.showModelThreshold()

    def options(self) -> EngineOptions:
        return EngineOptions(
            model=self.ui.modelComboBox.currentData,
            device=self.ui.deviceComboBox.currentData,
            threshold=float(self.ui.thresholdSlider.value),
            tta=self.ui.ttaCheckBox.checked,
            batch_size=int(self.ui.batchSizeSpinBox.value),
        )

    def running(self) -> bool:
        return self.logic.run is not None and self.logic.run.process.running()

    def updateButtons(self, *_args) -> None:
        busy = self.running()
        self.ui.applyButton.enabled = not busy and self.ui.inputVolumeSelector.currentNode() is not None
        self.ui.cancelButton.enabled = busy

    def onApplyButton(self) -> None:
        inputVolume = self.ui.inputVolumeSelector.currentNode()
        if inputVolume is None:
            return
        try:
            options = self.options()
            if not self.logic.confirmModelLicence(options.model):
                self.ui.statusLabel.text = "Not started: the model's licence terms were not accepted."
                return
            self.ui.statusLabel.text = "Checking Python packages..."
            slicer.app.processEvents()
            self.logic.ensureDependencies()
            self.logic.startSegmentation(inputVolume, options, self.onRunUpdate, self.onRunFinished)
        except Exception as err:
            self.ui.statusLabel.text = "Not started."
            slicer.util.errorDisplay(f"DoubleU-Net Segment could not start:\n{err}")
            return
        self.ui.progressBar.value = 0
        self.ui.statusLabel.text = "Starting the segmentation engine..."
        self.updateButtons()

    def onRunUpdate(self, state: RunState) -> None:
        self.ui.progressBar.value = state.percent
        self.ui.statusLabel.text = state.status
        if state.device_reason:
            self.ui.deviceComboBox.setToolTip(state.device_reason)

    def onRunFinished(self, run: EngineRun) -> None:
        try:
            if run.process.cancelled:
                self.ui.statusLabel.text = "Cancelled."
                self.ui.progressBar.value = 0
            elif not run.succeeded:
                self.ui.statusLabel.text = "Failed."
                slicer.util.errorDisplay(f"DoubleU-Net segmentation failed:\n{run.errorMessage()}")
            else:
                inputVolume = self.ui.inputVolumeSelector.currentNode()
                result = self.logic.resultOf(run)
                segmentationNode, ids = self.logic.importResult(
                    result, self.ui.outputSegmentationSelector.currentNode(), inputVolume
                )
                self.ui.outputSegmentationSelector.setCurrentNode(segmentationNode)
                notes = f" Notes: {' '.join(run.state.notes)}" if run.state.notes else ""
                volumes = f"\n{volumetry_summary(result.volumetry)}" if result.volumetry else ""
                self.ui.statusLabel.text = (
                    f"{run.state.status}; added {len(ids)} segment(s). Device: {result.device_reason}.{notes}{volumes}"
                )
                self.ui.progressBar.value = 100
        except Exception as err:
            slicer.util.errorDisplay(f"Could not import the DoubleU-Net result:\n{err}")
        finally:
            self.logic.cleanup()
            self.updateButtons()

    def onCancelButton(self) -> None:
        self.ui.statusLabel.text = "Cancelling..."
        self.logic.cancel()


# ---------------------------------------------------------------------------------------------------------------
# Self-test (Slicer's Reload and Test, or ctest through slicer_add_python_unittest).
# ---------------------------------------------------------------------------------------------------------------


def makeTestModel(folder: Path) -> str:
    """A hippocampus-shaped model with untrained weights, made by Slicer's Python (the shipped one may be absent)."""
    import subprocess

    weights = folder / "test-model.pt"
    weights.with_suffix(".json").write_text(
        '{"in_channels": 1, "out_channels": 3, "normalization": "zscore", "inplane": "sliding_window",'
        ' "roi_size": [64, 64], "slice_axis": 2, "segments": "hippocampus"}'
    )
    logic = DoubleUNetSegmentLogic()
    code = (
        "import torch; from doubleunet_segment.networks.doubleunet import DoubleUNet; torch.manual_seed(0); "
        f"torch.save(DoubleUNet(in_channels=1, out_channels=3).state_dict(), {str(weights)!r})"
    )
    subprocess.run([logic.pythonExecutable(), "-c", code], env=logic.engineEnvironment(), check=True)
    return str(weights)


def makeSmallSampleVolume(slices: int = 3):
    """A few axial slices of the MRHead sample, so the test runs in seconds on a CPU."""
    import SampleData

    head = SampleData.SampleDataLogic().downloadSample("MRHead")
    array = slicer.util.arrayFromVolume(head)
    middle = array.shape[0] // 2
    small = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "MRHead slab")
    ijkToRas = vtk.vtkMatrix4x4()
    head.GetIJKToRASMatrix(ijkToRas)
    origin = np.array([ijkToRas.GetElement(i, 3) for i in range(3)])
    step = np.array([ijkToRas.GetElement(i, 2) for i in range(3)])
    for i in range(3):
        ijkToRas.SetElement(i, 3, float(origin[i] + middle * step[i]))
    small.SetIJKToRASMatrix(ijkToRas)
    slicer.util.updateVolumeFromArray(small, np.ascontiguousarray(array[middle : middle + slices]))
    small.CreateDefaultDisplayNodes()
    return head, small


class DoubleUNetSegmentTest(ScriptedLoadableModuleTest):
    """Runs the real engine from Slicer on a sample volume and checks the segments it adds."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_PanelLogicAddsNamedSegments()
        self.setUp()
        self.test_EffectPreviewThresholdApplyUndo()

    def _model(self) -> str:
        logic = DoubleUNetSegmentLogic()
        logic.ensureDependencies(askConfirmation=False)
        self.tempFolder = logic.newWorkspace()
        return makeTestModel(self.tempFolder)

    def test_PanelLogicAddsNamedSegments(self) -> None:
        self.delayDisplay("Segment a sample volume with the panel's logic")
        model = self._model()
        _, volume = makeSmallSampleVolume()
        logic = DoubleUNetSegmentLogic()
        options = EngineOptions(model=model, device="cpu")

        user = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "user work")
        user.CreateDefaultDisplayNodes()
        userId = user.GetSegmentation().AddEmptySegment("", "Anterior hippocampus", [1.0, 0.0, 0.0])
        segmentation, ids = logic.process(volume, user, options)
        self.assertIs(segmentation, user)
        names = logic.segmentNames(segmentation)
        self.assertIn("Anterior hippocampus", names)  # the user's segment is still there...
        self.assertEqual(segmentation.GetSegmentation().GetSegment(userId).GetName(), "Anterior hippocampus")
        for segmentId in ids:  # ...and every new one has its own name and DICOM codes
            segment = segmentation.GetSegmentation().GetSegment(segmentId)
            self.assertNotEqual(segmentId, userId)
            self.assertIn("SCT^5366008^Hippocampus", segment.GetTerminology())
        self.assertTrue(all(n.startswith(("Anterior hippocampus", "Posterior hippocampus")) for n in names))
        self.assertEqual(len(set(names)), len(names))
        role = segmentation.GetReferenceImageGeometryReferenceRole()
        self.assertEqual(segmentation.GetNodeReference(role).GetID(), volume.GetID())
        self.assertIsNone(logic.workspace)  # temporary files removed

        self.delayDisplay("Cancel stops the engine process tree")
        finished = []
        run = logic.startSegmentation(volume, options, None, finished.append)
        pid = run.process.pid
        logic.cancel()
        while not finished:
            slicer.app.processEvents()
            time.sleep(0.05)
        import psutil

        self.assertFalse(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
        logic.cleanup()
        remove_workspace(self.tempFolder)
        self.delayDisplay("Panel test passed")

    def test_EffectPreviewThresholdApplyUndo(self) -> None:
        self.delayDisplay("Preview, re-threshold, apply and undo with the Segment Editor effect")
        model = self._model()
        _, volume = makeSmallSampleVolume()
        segmentationNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
        segmentationNode.CreateDefaultDisplayNodes()
        segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(volume)
        slicer.util.setSliceViewerLayers(background=volume, fit=True)

        editor = slicer.qMRMLSegmentEditorWidget()
        editor.setMRMLScene(slicer.mrmlScene)
        editorNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentEditorNode")
        editor.setMRMLSegmentEditorNode(editorNode)
        editor.setSegmentationNode(segmentationNode)
        editor.setSourceVolumeNode(volume)
        editor.setActiveEffectByName("DoubleU-Net")
        effect = editor.activeEffect()
        self.assertIsNotNone(effect, "the DoubleU-Net effect is not registered")
        effect.setParameter("Model", model)
        effect.setParameter("Device", "cpu")
        effect.self().updateGUIFromMRML()

        effect.self().onPreview()
        effect.self().waitForWorker(timeoutSeconds=600)
        self.assertIsNotNone(effect.self().previewProbabilities, effect.self().statusLabel.text)
        before = int(effect.self().previewLabels().astype(bool).sum())
        effect.self().thresholdSlider.value = 0.9  # stricter: re-thresholded without the network
        after = int(effect.self().previewLabels().astype(bool).sum())
        self.assertLessEqual(after, before)

        count = segmentationNode.GetSegmentation().GetNumberOfSegments()
        effect.setParameter("Scope", "slice")
        effect.self().onApply()
        effect.self().waitForWorker(timeoutSeconds=600)
        self.assertGreaterEqual(segmentationNode.GetSegmentation().GetNumberOfSegments(), count)
        editor.undo()
        self.assertEqual(segmentationNode.GetSegmentation().GetNumberOfSegments(), count)

        effect.setParameter("Scope", "volume")
        effect.self().onApply()
        effect.self().waitForWorker(timeoutSeconds=600)
        self.assertIsNone(effect.self().errorText, effect.self().errorText)
        effect.self().closeWorker()
        editor.setActiveEffect(None)
        remove_workspace(self.tempFolder)
        self.delayDisplay("Effect test passed")

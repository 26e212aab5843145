"""Hippocampus localisation in whole-head T1 MR: affine registration to the MNI152 template, one crop per
hippocampus in the model's geometry, and the crop's labels back on the study's grid.

The shipped hippocampus model learnt Medical Segmentation Decathlon Task04 crops: 1 mm voxels, RAS, about
35 x 50 x 35 voxels (X, Y, Z) around ONE hippocampus, always the LEFT one (the anterior-minus-posterior centroid
of the MSD labels, (+2.1, +18.0, -7.3) voxels over 208 cases, matches a FreeSurfer left hippocampus,
(+3.2, +19.8, -6.8) mm, not the right one, (-1.8, +18.2, -8.2) mm). A whole head is therefore

1. registered affinely to the MNI152 template (:func:`register_to_template`);
2. cut into one box per hippocampus, defined once in template space (:data:`HIPPOCAMPUS_BOXES_MNI`) and mapped
   to the subject (:func:`hippocampus_crops`); the right box is mirrored left-right so that it looks like a
   left hippocampus;
3. resampled box by box (:func:`extract`), segmented by the caller, and pasted back (:func:`paste`).

:func:`is_whole_head` tells a whole head (localise) from a crop like the training ones (segment as given).

Conventions: arrays are (X, Y, Z) with a 4x4 affine from voxel index to RAS mm (nibabel's); SimpleITK works in
LPS mm, so matrices are converted at the boundary (:data:`_RAS_FROM_LPS`). Template: ICBM 2009a nonlinear
symmetric (MNI152), 1 mm, skull-stripped, as shipped inside nilearn's wheel (no download).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # imported where used: importing this module stays light
    import SimpleITK as sitk

__all__ = [
    "ETIV_RANGE_ML",
    "ETIV_SCALE_ML",
    "METRIC_MAX",
    "HIPPOCAMPUS_BOXES_MNI",
    "Crop",
    "Registration",
    "extract",
    "hippocampus_crops",
    "is_whole_head",
    "paste",
    "paste_values",
    "register_to_template",
]

# eTIV = 1948.106 cm^3 / det(talairach.xfm): FreeSurfer's MRIestimateTIV (utils/mri.c), called by mri_segstats
# --etiv and mris_anatomical_stats with etiv_scale_factor = 1948.106, the constant FreeSurfer uses with its
# talairach.xfm (subject -> MNI305; 2150 went with the older talairach_with_skull.lta). Method: Buckner et al.
# 2004, NeuroImage 23:724-738 (eTIV inversely proportional to the atlas scaling factor).
ETIV_SCALE_ML = 1948.106

# Registration QC (Registration.plausible). METRIC_MAX lies between the sample head's successes (-0.37 and lower)
# and its failures (-0.13 and higher). ETIV_RANGE_ML is wide on purpose: adult intracranial volumes lie around
# 1.1-2.0 L, children's lower; a failed registration gave 2.3-2.7 L on the sample data.
METRIC_MAX = -0.25
ETIV_RANGE_ML = (700.0, 2400.0)

# Side -> (min corner, max corner) in MNI152 (ICBM 2009a sym) RAS mm: 48 x 64 x 52 mm.
# Source: the FreeSurfer hippocampus labels of the AOMIC PIOP2 head in the sample data
# (wholehead-t1/aomic-piop2-sub-0001/aseg.mgz, labels 17 and 53) mapped into template space by
# register_to_template: centroids left (-25.8, -23.1, -9.4), right (+26.8, -21.7, -9.8) mm; label extents left
# x -38.6..-11.9, y -45.1..-5.8, z -25.0..+9.1 mm, right x +12.9..+39.0, y -41.4..-5.9, z -25.8..+10.7 mm.
# The template is symmetric, so the boxes are mirror images about x = 0, centred on the mean midpoint of the
# two extents, (+-25.6, -24.6, -7.8) mm (the tail rises, so the centroid sits low). The margins, 10-13 mm in
# X and Y and 6-8 mm in Z (where the hippocampus is already 36 mm long), absorb registration error (a few mm)
# and give context like the MSD crops' (about 35 x 50 x 35 mm around the labels). The boxes do not overlap
# (3 mm apart at the midline).
HIPPOCAMPUS_BOXES_MNI: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "left": ((-49.6, -56.6, -33.8), (-1.6, 7.4, 18.2)),
    "right": ((1.6, -56.6, -33.8), (49.6, 7.4, 18.2)),
}

# ITK's physical space is LPS, nibabel's RAS: the same diagonal flips points both ways.
_RAS_FROM_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])

_WORK_MM = 2.0  # registration runs on images block-averaged to about this voxel size (speed; 1 mm adds nothing)
_SEED = 1  # fixed seed of the random metric sampling: the same input gives the same transform


@dataclass
class Registration:
    """An affine registration of a subject to the MNI152 template.

    Attributes:
        subject_to_template: 4x4 float64, subject RAS mm -> template (MNI152) RAS mm.
        metric: Mattes mutual information (32 bins; SimpleITK's sign: negative, lower is better) between the
            template, within its brain mask dilated 4 mm, and the subject (not stripped) under the final transform,
            at 2 mm, every voxel of the mask: a QC figure. Observed for the sample T1 head -0.37 to -0.39 however
            it was shifted, turned or scaled (-0.52 skull-stripped, -2.0 for the template on itself); for
            failures -0.13 or above (the head turned 90 or 180 degrees, noise, a 25-slice brain slab). See
            :attr:`plausible`.
        seconds: wall time of :func:`register_to_template`, template loading included on the first call.
    """

    subject_to_template: np.ndarray
    metric: float
    seconds: float

    @property
    def plausible(self) -> bool:
        """Whether the registration looks like a success: :attr:`metric` below :data:`METRIC_MAX` and an eTIV
        within :data:`ETIV_RANGE_ML` (a failed registration tends to blow the head up or shrink it away)."""
        low, high = ETIV_RANGE_ML
        return bool(self.metric < METRIC_MAX and low <= self.etiv_ml() <= high)

    @property
    def template_to_subject(self) -> np.ndarray:
        """4x4 float64: template RAS mm -> subject RAS mm (the inverse of :attr:`subject_to_template`)."""
        return np.linalg.inv(self.subject_to_template)

    @property
    def scale_factor(self) -> float:
        """The atlas scaling factor (ASF) of Buckner et al. 2004 (NeuroImage 23:724-738): the volume scaling that
        takes the subject to the atlas, ``|det|`` of the linear part of :attr:`subject_to_template` (unitless).

        The direction matters: a big head must shrink to fit the atlas, so its ASF is below 1 and its eTIV
        (:meth:`etiv_ml`, inversely proportional) is large. FreeSurfer's determinant is the same one, that of
        talairach.xfm, which maps the subject to the atlas.
        """
        return float(abs(np.linalg.det(self.subject_to_template[:3, :3])))

    def etiv_ml(self) -> float:
        """Estimated total intracranial volume in mL, as FreeSurfer computes it: ``1948.106 mL / ASF``
        (``MRIestimateTIV`` in FreeSurfer's utils/mri.c, used by ``mri_segstats --etiv``; Buckner et al. 2004).

        FreeSurfer calibrated the constant for its own registration to MNI305; this registration targets the
        ICBM 2009a template (MNI152 space, close to MNI305 in size), so the figure is an approximation of
        FreeSurfer's eTIV, good for QC and for normalising volumes within one pipeline, not for mixing with
        FreeSurfer's numbers.
        """
        return ETIV_SCALE_ML / self.scale_factor


@dataclass
class Crop:
    """One hippocampus box on the subject, as a grid the model can take as it is.

    Attributes:
        side: ``"left"`` or ``"right"`` (the subject's own side).
        affine: 4x4 float64, crop voxel index -> subject RAS mm. Its axes follow the template's R, A, S axes
            (the rotation part of the registration, so the crop is RAS like the training crops) and its voxels
            are ``pixdim`` mm in the SUBJECT (the model learnt native 1 mm voxels: the head's size is not
            normalised away). For a mirrored crop the X column points to the subject's left (the flip is in the
            affine): :func:`extract` and :func:`paste` use the affine as it is, nothing is flipped again, and
            the array must not be reoriented (``Orientationd``) before inference.
        shape: (X', Y', Z') voxels.
        mirrored: True for the right side: stored flipped left-right so that it looks like a left hippocampus.
    """

    side: str
    affine: np.ndarray
    shape: tuple[int, int, int]
    mirrored: bool


def _check_volume(shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    """``affine`` as a float64 4x4 after checking that it fits a 3D volume of ``shape``.

    Raises:
        ValueError: not 3D, not 4x4, not finite or singular.
    """
    if len(shape) != 3:
        raise ValueError(f"expected a 3D (X, Y, Z) volume, got shape {tuple(shape)}")
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise ValueError(f"expected a finite 4x4 voxel -> RAS mm affine, got {affine.shape}")
    if abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise ValueError("the affine is singular (zero voxel size or collinear axes)")
    return affine


def _to_sitk(array: np.ndarray, affine: np.ndarray) -> sitk.Image:
    """A SimpleITK float32 image of the (X, Y, Z) ``array`` with its voxel -> RAS mm ``affine`` (converted to LPS).

    The voxel axes may be sheared (rare): ITK keeps only a direction matrix and spacings, so the direction is
    the affine's columns normalised, exact for every orthogonal grid.
    """
    import SimpleITK as sitk

    # SimpleITK reads numpy arrays as (Z, Y, X)
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(array, dtype=np.float32).transpose(2, 1, 0)))
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    lps = _RAS_FROM_LPS @ affine
    image.SetSpacing(spacing.tolist())
    image.SetDirection((lps[:3, :3] / spacing).ravel().tolist())
    image.SetOrigin(lps[:3, 3].tolist())
    return image


def _shrink(image: sitk.Image, voxel_mm: np.ndarray) -> sitk.Image:
    """``image`` block-averaged to about :data:`_WORK_MM` voxels (per axis, so anisotropic scans end near-cubic)."""
    import SimpleITK as sitk

    factors = [max(1, int(round(_WORK_MM / float(mm)))) for mm in voxel_mm]
    return sitk.BinShrink(image, factors) if max(factors) > 1 else image


@lru_cache(maxsize=1)
def _template() -> tuple[sitk.Image, sitk.Image, sitk.Image]:
    """The MNI152 template at 2 mm and its brain mask dilated 4 mm (the brain and its edge), as a uint8 mask (where
    the metric samples) and as float32 (what strips the subject in the last stage); loaded once."""
    import SimpleITK as sitk
    from nilearn import datasets

    template = datasets.load_mni152_template(resolution=1)
    brain = datasets.load_mni152_brain_mask(resolution=1)
    image = _shrink(_to_sitk(template.get_fdata(dtype=np.float32), template.affine), np.ones(3))
    mask = _shrink(_to_sitk(brain.get_fdata(dtype=np.float32), brain.affine), np.ones(3)) > 0.5
    # 4 mm (2 voxels): the brain's edge carries most of the information on scale; a tighter strip (2 mm)
    # moved the sample head's eTIV 4% from that of the same head stripped beforehand
    mask = sitk.BinaryDilate(mask, [2, 2, 2])
    return image, mask, sitk.Cast(mask, sitk.sitkFloat32)


def _register(
    fixed: sitk.Image,
    moving: sitk.Image,
    mask: sitk.Image,
    initial: sitk.Transform,
    *,
    shrink: int,
    sigma_mm: float,
    sampling: float,
    step_mm: float,
) -> tuple[sitk.Transform, float]:
    """One SimpleITK registration stage: Mattes MI (32 bins) at one resolution, regular-step gradient descent
    with parameter scales from physical shifts (so ``step_mm`` is about a millimetre step at the box's edge).

    Returns:
        (the optimised transform, the final metric value).
    """
    import SimpleITK as sitk

    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(sampling, _SEED)
    method.SetMetricFixedMask(mask)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=step_mm,
        minStep=0.005,
        numberOfIterations=100,
        relaxationFactor=0.5,
        gradientMagnitudeTolerance=1e-8,
    )
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel([shrink])
    method.SetSmoothingSigmasPerLevel([sigma_mm])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    method.SetInitialTransform(initial, inPlace=False)
    result = method.Execute(fixed, moving)
    if isinstance(result, sitk.CompositeTransform):  # what Execute returns when not in place
        result = result.GetNthTransform(0)
    return result, float(method.GetMetricValue())


def _evaluate(fixed: sitk.Image, moving: sitk.Image, mask: sitk.Image, transform: sitk.Transform) -> float:
    """Mattes MI (32 bins, 2 mm, every voxel of ``mask``) of ``moving`` under ``transform``, unstripped."""
    import SimpleITK as sitk

    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    method.SetMetricFixedMask(mask)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetInitialTransform(transform)
    return float(method.MetricEvaluate(fixed, moving))


def _as_affine(transform: sitk.Transform) -> sitk.AffineTransform:
    """``transform`` (similarity or affine, same centre) as a 12-parameter affine transform to optimise next."""
    import SimpleITK as sitk

    affine = sitk.AffineTransform(3)
    affine.SetCenter(transform.GetCenter())
    affine.SetMatrix(transform.GetMatrix())
    affine.SetTranslation(transform.GetTranslation())
    return affine


def register_to_template(array: np.ndarray, affine: np.ndarray) -> Registration:
    """Register a T1 head or brain affinely (12 degrees of freedom) to the MNI152 template.

    Works on whole heads with skull, face and some neck as well as on skull-stripped brains, although the
    template is skull-stripped: the metric samples only the template's brain (dilated 4 mm), and a last stage
    strips the subject with the template's brain mask carried over by the stage before, so skull and scalp stop
    pulling the brain's edge outwards (without it the sample head came out 8% smaller in volume with skull than
    without; with it the two agree within 2%). Stages, all Mattes mutual information at about 2 mm voxels:

    1. similarity (rotation, translation, one scale) at 8 mm from the images' centres of mass (moments):
       finds the head's pose (tilted 15-20 degrees or shifted 56 mm, the sample head's hippocampi came back
       within 0.3 mm);
    2. affine at 4 mm;
    3. affine at 2 mm on the stripped subject.

    Deterministic: the metric's random samples come from a fixed seed; repeated runs agree to about 1e-12 (the
    order in which ITK's threads add their parts). About 2 s on 2 CPU cores for a 256^3 1 mm head, 1 s more on
    the first call (the template is loaded and cached).

    Args:
        array: (X, Y, Z) intensities (any real dtype; used as float32), T1-weighted.
        affine: 4x4 voxel index -> RAS mm.

    Returns:
        The registration (subject -> template RAS mm, final metric, seconds).

    Raises:
        ValueError: not a 3D volume, a bad affine, or an image without contrast (constant).
    """
    import SimpleITK as sitk

    start = time.perf_counter()
    affine = _check_volume(np.shape(array), affine)
    fixed, sample_mask, strip_mask = _template()

    values = np.asarray(array, dtype=np.float32)
    probe = values[::4, ::4, ::4]  # percentiles of every 64th voxel: the same figures, far faster
    probe = probe[np.isfinite(probe)]
    low = np.percentile(probe, 0.5) if probe.size else np.nan
    tissue = probe[probe > low]  # the upper cut among tissue, not background: a stripped brain is mostly zeros
    if not tissue.size:
        raise ValueError("the image has no contrast (constant or not finite): nothing to register")
    high = np.percentile(tissue, 99.5)
    # bright fat or vessels would squeeze the tissue into a few of the 32 histogram bins
    clipped = np.nan_to_num(np.clip(values, low, high), copy=False, nan=low)
    moving = _shrink(_to_sitk(clipped, affine), np.linalg.norm(affine[:3, :3], axis=0))

    initial = sitk.CenteredTransformInitializer(
        fixed, moving, sitk.Similarity3DTransform(), sitk.CenteredTransformInitializerFilter.MOMENTS
    )
    pose, _ = _register(fixed, moving, sample_mask, initial, shrink=4, sigma_mm=4.0, sampling=0.5, step_mm=2.0)
    rough, _ = _register(
        fixed, moving, sample_mask, _as_affine(pose), shrink=2, sigma_mm=2.0, sampling=0.2, step_mm=1.0
    )
    brain = sitk.Resample(strip_mask, moving, rough.GetInverse(), sitk.sitkLinear, 0.0)
    final, _ = _register(
        fixed, moving * brain, sample_mask, _as_affine(rough), shrink=1, sigma_mm=1.0, sampling=0.1, step_mm=0.5
    )
    # the stripped stage's own metric would reward the strip's edge even for noise: judge the unstripped head
    metric = _evaluate(fixed, moving, sample_mask, final)

    # ITK's transform maps fixed (template) points to moving (subject) points, in LPS
    matrix = np.array(final.GetMatrix()).reshape(3, 3)
    center = np.array(final.GetCenter())
    lps = np.eye(4)
    lps[:3, :3] = matrix
    lps[:3, 3] = np.array(final.GetTranslation()) + center - matrix @ center
    template_to_subject = _RAS_FROM_LPS @ lps @ _RAS_FROM_LPS
    return Registration(np.linalg.inv(template_to_subject), metric, time.perf_counter() - start)


def hippocampus_crops(registration: Registration, pixdim: float = 1.0, trained_side: str = "left") -> list[Crop]:
    """The subject-space crops of :data:`HIPPOCAMPUS_BOXES_MNI`, left then right.

    Each crop is centred on its box's centre mapped through the registration; its axes are the template's
    (the rotation of the polar decomposition of the template -> subject linear part: shear and scaling are left
    out so that voxels stay cubic); its extent along each axis is the box's, scaled by how long that template
    axis is in the subject, so the crop covers the mapped box. The crop of the side the model was not
    trained on is mirrored left-right (:attr:`Crop.mirrored`, X column of the affine negated).

    Args:
        registration: from :func:`register_to_template`.
        pixdim: crop voxel size in subject mm (the model's: 1 mm for the MSD hippocampus model).
        trained_side: the side the model's training crops show (``left`` for the MSD hippocampus model).

    Returns:
        ``[left, right]``; (47, 63, 47) each at 1 mm for the sample head (the template's brain is larger than
        most, so most heads get a little less than the box's 48 x 64 x 52 mm in voxels).

    Raises:
        ValueError: ``pixdim`` not positive, ``trained_side`` neither side, or a registration that flips or
            collapses space.
    """
    if not pixdim > 0:
        raise ValueError(f"pixdim must be positive, got {pixdim}")
    if trained_side not in HIPPOCAMPUS_BOXES_MNI:
        raise ValueError(f"trained_side must be one of {sorted(HIPPOCAMPUS_BOXES_MNI)}, got {trained_side!r}")
    to_subject = registration.template_to_subject
    linear = to_subject[:3, :3]
    if not np.linalg.det(linear) > 1e-6:
        raise ValueError("the registration flips or collapses space: not a head registered to the template")
    u, _, vt = np.linalg.svd(linear)
    rotation = u @ vt  # the nearest rotation (polar decomposition); det > 0 as the linear part's is
    axis_mm = np.linalg.norm(linear, axis=0)  # subject mm per template mm along R, A, S

    crops = []
    for side, (low, high) in HIPPOCAMPUS_BOXES_MNI.items():
        low, high = np.asarray(low), np.asarray(high)
        shape = tuple(int(n) for n in np.maximum(1, np.ceil((high - low) * axis_mm / pixdim - 1e-6)))
        mirrored = side != trained_side
        columns = rotation * pixdim
        if mirrored:
            columns = columns * np.array([-1.0, 1.0, 1.0])
        centre = to_subject[:3, :3] @ ((low + high) / 2) + to_subject[:3, 3]
        crop_affine = np.eye(4)
        crop_affine[:3, :3] = columns
        crop_affine[:3, 3] = centre - columns @ ((np.asarray(shape) - 1) / 2)
        crops.append(Crop(side=side, affine=crop_affine, shape=shape, mirrored=mirrored))
    return crops


def _crop_points(crop: Crop, affine: np.ndarray) -> np.ndarray:
    """(3, X'*Y'*Z') float64: the crop's voxel centres as (fractional) voxel indices of the subject grid."""
    to_voxel = np.linalg.inv(affine) @ crop.affine
    grid = np.indices(crop.shape, dtype=np.float64).reshape(3, -1)
    return to_voxel[:3, :3] @ grid + to_voxel[:3, 3:]


def extract(array: np.ndarray, affine: np.ndarray, crop: Crop, order: int = 1) -> np.ndarray:
    """The subject volume resampled onto the crop's grid, mirrored when ``crop.mirrored``.

    Only the crop's voxels are computed (and only the block of the volume they touch is read). Outside the
    subject's field of view the crop is 0.

    Args:
        array: (X, Y, Z) intensities (or labels, with ``order=0``) of the subject.
        affine: 4x4 voxel index -> RAS mm of ``array``.
        crop: from :func:`hippocampus_crops`.
        order: 1 trilinear (images), 0 nearest neighbour (label maps).

    Returns:
        (X', Y', Z') float32, ``crop.shape``.

    Raises:
        ValueError: not a 3D volume, a bad affine, or ``order`` not 0 or 1.
    """
    if order not in (0, 1):
        raise ValueError(f"order must be 0 (nearest) or 1 (trilinear), got {order}")
    from scipy import ndimage

    affine = _check_volume(np.shape(array), affine)
    points = _crop_points(crop, affine)
    # read only the block the points fall in (one voxel to spare for interpolation): a view, not a copy
    shape = np.asarray(np.shape(array))
    low = np.clip(np.floor(points.min(axis=1)).astype(int) - 1, 0, shape)
    high = np.clip(np.ceil(points.max(axis=1)).astype(int) + 2, 0, shape)
    if np.any(high <= low):
        return np.zeros(crop.shape, dtype=np.float32)  # the crop misses the field of view altogether
    block = np.asarray(array[low[0] : high[0], low[1] : high[1], low[2] : high[2]], dtype=np.float32)
    values = ndimage.map_coordinates(
        block, points - low[:, None], order=order, mode="constant", cval=0.0, output=np.float32, prefilter=False
    )
    return values.reshape(crop.shape)


def paste(
    labels: np.ndarray,
    crop: Crop,
    shape: tuple[int, int, int],
    affine: np.ndarray,
    out: np.ndarray | None = None,
    offset: int = 0,
) -> np.ndarray:
    """Labels made on a crop's grid, put back on the subject's grid (nearest neighbour).

    Each subject voxel whose centre falls inside the crop takes the label of the nearest crop voxel; labels
    ``v > 0`` are written as ``v + offset`` (left hippocampus 1, 2 and right 3, 4 with ``offset=2``). Background
    does not overwrite: voxels outside the crop, and voxels inside where the crop says 0, keep ``out``'s value, so
    the two sides can be pasted into one map in either order even where their boxes touch.

    Args:
        labels: (X', Y', Z') integer labels on the crop's grid (``crop.shape``, mirrored like :func:`extract`'s
            output; floats are truncated).
        crop: the crop they were made on.
        shape: (X, Y, Z) of the subject grid.
        affine: 4x4 voxel index -> RAS mm of the subject grid.
        out: (X, Y, Z) uint8 map to paste into (modified in place); None: a new zero map.
        offset: added to every non-zero label.

    Returns:
        ``out`` (or the new map): (X, Y, Z) uint8.

    Raises:
        ValueError: ``labels`` not of ``crop.shape``, ``out`` not uint8 of ``shape``, a bad affine, negative
            labels, or labels + offset beyond 255.
    """
    affine = _check_volume(tuple(shape), affine)
    labels = np.asarray(labels)
    if labels.shape != tuple(crop.shape):
        raise ValueError(f"labels have shape {labels.shape}, the crop {tuple(crop.shape)}")
    if labels.size and (labels.min() < 0 or int(labels.max()) + offset > 255 or offset < 0):
        raise ValueError(f"labels {labels.min()}..{labels.max()} with offset {offset} do not fit uint8 labels")
    if out is None:
        out = np.zeros(tuple(shape), dtype=np.uint8)
    elif out.shape != tuple(shape) or out.dtype != np.uint8:
        raise ValueError(f"out must be uint8 of shape {tuple(shape)}, got {out.dtype} {out.shape}")

    grid, points = _subject_voxels(crop, tuple(shape), affine)
    if not grid.shape[1]:
        return out
    index = np.rint(points).astype(np.int64)  # each subject voxel's nearest crop voxel
    inside = np.all((index >= 0) & (index < np.asarray(crop.shape)[:, None]), axis=0)
    values = np.zeros(grid.shape[1], dtype=np.int64)
    values[inside] = labels[tuple(index[:, inside])]
    hit = values > 0
    target = tuple(grid[:, hit])
    out[target] = (values[hit] + offset).astype(np.uint8)
    return out


def _subject_voxels(crop: Crop, shape: tuple[int, int, int], affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The subject voxels within the crop's bounding box, (3, N) int64 indices, and where their centres fall on
    the crop's grid, (3, N) float64 crop voxel coordinates."""
    corners = np.array(np.meshgrid(*[[-0.5, n - 0.5] for n in crop.shape], indexing="ij")).reshape(3, -1)
    to_subject = np.linalg.inv(affine) @ crop.affine
    reach = to_subject[:3, :3] @ corners + to_subject[:3, 3:]
    low = np.clip(np.floor(reach.min(axis=1)).astype(int), 0, shape)
    high = np.clip(np.ceil(reach.max(axis=1)).astype(int) + 1, 0, shape)
    if np.any(high <= low):
        return np.zeros((3, 0), dtype=np.int64), np.zeros((3, 0))
    grid = np.indices(tuple(high - low)).reshape(3, -1) + low[:, None]
    to_crop = np.linalg.inv(to_subject)
    return grid, to_crop[:3, :3] @ grid + to_crop[:3, 3:]


def paste_values(
    values: np.ndarray,
    crop: Crop,
    shape: tuple[int, int, int],
    affine: np.ndarray,
    out: np.ndarray,
    channels: list[int],
) -> np.ndarray:
    """Per-voxel values made on a crop's grid (class probabilities), put back on the subject's grid (trilinear).

    Each subject voxel whose centre falls inside the crop gets ``values[k]`` interpolated there, written to
    channel ``channels[k]`` of ``out``; voxels outside keep ``out``'s values.

    Args:
        values: (K, X', Y', Z') float values on the crop's grid (mirrored like :func:`extract`'s output).
        crop: the crop they were made on.
        shape: (X, Y, Z) of the subject grid.
        affine: 4x4 voxel index -> RAS mm of the subject grid.
        out: (C, X, Y, Z) float32 map to paste into (modified in place).
        channels: the channel of ``out`` for each of the K values.

    Returns:
        ``out``.

    Raises:
        ValueError: ``values`` not of (K, *crop.shape), or ``channels`` not K long.
    """
    from scipy import ndimage

    values = np.asarray(values, dtype=np.float32)
    if values.shape[1:] != tuple(crop.shape) or len(channels) != values.shape[0]:
        raise ValueError(f"values of shape {values.shape} for a crop {tuple(crop.shape)} and channels {channels}")
    affine = _check_volume(tuple(shape), affine)
    grid, points = _subject_voxels(crop, tuple(shape), affine)
    inside = np.all((points >= -0.5) & (points <= np.asarray(crop.shape)[:, None] - 0.5), axis=0)
    target = tuple(grid[:, inside])
    for k, channel in enumerate(channels):
        out[channel][target] = ndimage.map_coordinates(
            values[k], points[:, inside], order=1, mode="nearest", output=np.float32, prefilter=False
        )
    return out


def is_whole_head(
    shape: tuple[int, int, int],
    affine: np.ndarray,
    crop_mm: tuple[float, float, float] = (35, 50, 35),
    factor: float = 2.5,
) -> bool:
    """Whether a volume's field of view is far larger than a training crop in every direction (then it needs
    localisation; an MSD-like crop is segmented as it is).

    Compares the field of view's extent along R, A and S (the RAS bounding box of the voxel grid, edges
    included, so an oblique acquisition counts its projection) with ``factor`` times ``crop_mm``.

    Args:
        shape: (X, Y, Z) voxels.
        affine: 4x4 voxel index -> RAS mm.
        crop_mm: the training crops' size in mm along R, A, S (MSD Task04: about 35 x 50 x 35).
        factor: how many times larger each extent must be.

    Returns:
        True for a whole head (256 mm field of view) or the MNI152 template (197 x 233 x 189 mm), False for an
        MSD crop.

    Raises:
        ValueError: not 3D, or a bad affine.
    """
    affine = _check_volume(tuple(shape), affine)
    corners = np.array(np.meshgrid(*[[-0.5, n - 0.5] for n in shape], indexing="ij")).reshape(3, -1)
    world = affine[:3, :3] @ corners + affine[:3, 3:]
    extent = world.max(axis=1) - world.min(axis=1)
    return bool(np.all(extent > factor * np.asarray(crop_mm, dtype=np.float64)))

"""Quality control of a whole-head hippocampal volumetry: a verdict a person can act on, with its reasons.

A case is marked ``review`` (not ``pass``) when any of these holds; each adds a reason:

- the registration to the MNI152 template looks failed (``Registration.plausible`` of
  :mod:`doubleunet_segment.inference.localization`: its mutual information or the eTIV it implies is out of the
  range of good runs), so the hippocampus boxes may miss the hippocampi;
- a side or one of its two structures is missing (no voxel labelled);
- a side's volume lies outside :data:`PLAUSIBLE_SIDE_ML`;
- DoubleU-Net's two U-Nets disagree strongly inside the segmentation (mean stage-1 vs stage-2 disagreement above
  :data:`MAX_DISAGREEMENT`), so the result rests on one stage alone.
"""

from __future__ import annotations

from typing import Any

from .volumetry import Volumetry

__all__ = ["MAX_DISAGREEMENT", "PLAUSIBLE_SIDE_ML", "quality_control"]

# Adult hippocampus, one side, head to tail: about 2.5-5 mL by manual tracing and FreeSurfer (e.g. 4.42 / 4.25 mL
# left / right on wholehead-t1/aomic-piop2-sub-0001); the MSD protocol's labels are smaller. Outside 1.5-6.5 mL a
# person should look, whatever the cause (atrophy, a missed structure, a box on the wrong place).
PLAUSIBLE_SIDE_ML = (1.5, 6.5)
# Mean total-variation distance between the stages' class probabilities inside the labels (0 agree, 1 opposite).
MAX_DISAGREEMENT = 0.25


def quality_control(
    volumetry: Volumetry,
    registration: Any = None,
    disagreement: float | None = None,
    structures_per_side: int = 2,
) -> dict[str, Any]:
    """The verdict of one case.

    Args:
        volumetry: the case's volumes (sides from the segments' laterality).
        registration: the study's :class:`~doubleunet_segment.inference.localization.Registration` (None: not
            registered, not checked).
        disagreement: mean stage-1 vs stage-2 disagreement inside the labels, in [0, 1] (None: not checked).
        structures_per_side: structures each side must have (anterior and posterior: 2).

    Returns:
        ``{"verdict": "pass" | "review", "reason": "; "-joined reasons (empty on pass), "reasons": [...],
        "registration_metric": ..., "disagreement": ...}``.
    """
    reasons = []
    metric = None if registration is None else float(registration.metric)
    if registration is not None and not registration.plausible:
        reasons.append(
            f"registration to the MNI152 template looks failed (mutual information {metric:.3f}, "
            f"eTIV {registration.etiv_ml():.0f} mL)"
        )
    low, high = PLAUSIBLE_SIDE_ML
    for side in ("left", "right"):
        present = [n for n, s in volumetry.structure_sides.items() if s == side and volumetry.structures.get(n, 0) > 0]
        ml = volumetry.sides.get(side, 0.0)
        if ml <= 0:
            reasons.append(f"{side} hippocampus missing")
            continue
        if len(present) < structures_per_side:
            reasons.append(f"{side} hippocampus incomplete: only {', '.join(present)} labelled")
        if not low <= ml <= high:
            reasons.append(f"{side} hippocampus {ml:.2f} mL lies outside the plausible {low}-{high} mL")
    if disagreement is not None and disagreement > MAX_DISAGREEMENT:
        reasons.append(f"DoubleU-Net's two stages disagree (mean {disagreement:.2f} > {MAX_DISAGREEMENT})")
    return {
        "verdict": "review" if reasons else "pass",
        "reason": "; ".join(reasons),
        "reasons": reasons,
        "registration_metric": metric,
        "disagreement": disagreement,
    }

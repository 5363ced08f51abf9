"""Supervised patch-level contrastive learning for segmentation encoders, usable on its own.

>>> from ctseg.contrastive import PatchContrastiveLoss, patch_class_counts, patch_labels
"""

from ctseg.contrastive.ct import PatchContrastiveLoss, ProjectionHead
from ctseg.contrastive.losses import cl_pair_loss, info_nce
from ctseg.contrastive.multiscale import MultiScaleContrastiveLoss
from ctseg.contrastive.patches import infer_stride, multi_stride_counts, patch_class_counts, patch_labels

__all__ = [
    "MultiScaleContrastiveLoss",
    "PatchContrastiveLoss",
    "ProjectionHead",
    "cl_pair_loss",
    "info_nce",
    "infer_stride",
    "multi_stride_counts",
    "patch_class_counts",
    "patch_labels",
]

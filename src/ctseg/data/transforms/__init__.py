"""Training augmentation and normalisation on tensors: the basics, ctseg's own recipe and the paper's, per sample
and batched.

Presets (``augment: paper | ctseg | none`` in the data modules, :mod:`ctseg.data.datamodules`):

``ctseg`` — **ctseg's own recipe** (the default, not the paper's): random scale (factor uniform in
``scale_range``, default 0.75–1.5), plain random crop of ``crop_size`` (default: the training size; where the
scaled image is smaller the window overhangs and is padded, image black, mask ``ignore_index``), resize to the
training ``size`` when the crop size differs, a random 90° rotation (``k`` uniform), random horizontal and
vertical flips, then normalisation; :class:`TrainTransform` (per sample) and :class:`BatchTrainTransform`
(batched), in :mod:`~ctseg.data.transforms.ctseg`.

``paper`` — **the authors' training augmentation** (their ``train_aug``, docs/design.md §1.12):
:class:`PaperTrainTransform` and :class:`PaperBatchTransform`, in :mod:`~ctseg.data.transforms.paper` (which
describes the recipe).

``none`` only normalises. In every preset images are interpolated bilinearly and masks always with nearest
neighbour (no invented labels; the authors' Pillow default filter for masks is not repeated). Validation,
every preset: normalisation only (:class:`Normalize`, :mod:`~ctseg.data.transforms.basics`, with bands, dtypes
and the helpers both recipes use) — the authors' "resize to 512" is done once, when the
data are prepared (the ISPRS 500 px crops are stored at 512, :mod:`ctseg.data.prepare`).

Where things run:

- the per-sample classes work on one sample dict ``{"image": (C, H, W), "mask": (H, W), ...}`` on the CPU, as
  the training transform inside DataLoader workers;
- the batched classes work on a whole batch on whatever device it is on: scale, crop, resize and rotation (and
  flips for ``ctseg``) are folded into one affine map per sample, applied with one ``grid_sample`` for the
  images (bilinear) and one for the masks (nearest). Every random draw is a device tensor, shapes are fixed:
  no host–device sync.

Public names are importable from here (``from ctseg.data.transforms import TrainTransform``), each from its module
on first use.
"""

from ctseg._exports import lazy

__all__ = [
    "BatchTrainTransform", "Normalize", "TrainTransform", "normalize", "to_float_image", "value_scale",
    "PAPER_CROP", "PAPER_CROP_TRIES", "PAPER_MAX_RATIO", "PAPER_MOSAIC_RATIO", "PAPER_ROTATE_P", "PAPER_SCALES",
    "PAPER_SIZE", "PaperBatchTransform", "PaperTrainTransform", "balanced",
]  # fmt: skip

__getattr__, __dir__ = lazy(__name__, ["basics", "ctseg", "paper"])

"""What the data modules' loaders iterate: the train / eval views over prepared crops.

The training sampler (:class:`~ctseg.data.resumable.ResumableSampler`) yields ``(epoch, index)`` so that each
sample's augmentation is seeded by ``(seed, epoch, index)`` (:func:`~ctseg.data.resumable.sample_seed`) whatever
the worker count; :class:`TrainView` augments per sample (or leaves the stored dtype for on-device augmentation,
with the sample's seed attached); :class:`EvalView` normalises (or leaves the stored dtype).
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from ctseg.data.prepared import PreparedDataset
from ctseg.data.resumable import sample_seed
from ctseg.data.transforms import Normalize, PaperTrainTransform, TrainTransform

SampleTransform = PaperTrainTransform | TrainTransform | Normalize


class TrainView(Dataset):
    """Training crops as batch items: ``{"image", "mask"}``, augmented per sample or left as uint8."""

    def __init__(self, base: PreparedDataset, transform: SampleTransform | None, seed: int) -> None:
        self.base, self.transform, self.seed = base, transform, seed

    def _partner(self, generator: torch.Generator | None) -> dict[str, torch.Tensor]:
        """A uniformly drawn training crop (``paper``'s mosaic), drawn with the sample's generator."""
        image, mask = self.base.read_uint8(int(torch.randint(len(self.base), (), generator=generator)))
        return {"image": image, "mask": mask}

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        image, mask = self.base.read_uint8(index)
        sample = {"image": image, "mask": mask}
        if self.transform is None:  # on-device augmentation: the batch's seed travels with it (exact resume)
            sample["aug_seed"] = torch.tensor(sample_seed(self.seed, epoch, index), dtype=torch.int64)
            return sample
        generator = torch.Generator().manual_seed(sample_seed(self.seed, epoch, index))
        if isinstance(self.transform, PaperTrainTransform):
            return self.transform(sample, generator=generator, partner=self._partner)
        return self.transform(sample, generator=generator)


class EvalView(Dataset):
    """Validation crops: normalised, or uint8 for the on-device pipeline."""

    def __init__(self, base: PreparedDataset, transform: Normalize | None) -> None:
        self.base, self.transform = base, transform

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        image, mask = self.base.read_uint8(index)
        sample = {"image": image, "mask": mask}
        return self.transform(sample) if self.transform is not None else sample

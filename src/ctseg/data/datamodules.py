"""LightningDataModules over prepared crops: :class:`PreparedDataModule` and its per-data-set presets.

Batches are ``{"image": float32 (B, C, H, W) normalised, "mask": int64 (B, H, W)}`` (255 = ignore; C = the data
set's band count, ``info.bands``; the on-device pipeline's loaders yield the stored dtype, uint8 / uint16 /
float32, normalised after the transfer).

Training augmentation presets (``augment``, :mod:`ctseg.data.transforms`):

- ``"paper"``: the authors' ``train_aug`` (docs/design.md §1.12) — scale from {0.75, 1, 1.25, 1.5},
  class-balanced 375 px crop (re-drawn up to 10 times), resize to 512, 90° rotation with p = 0.5, no flips,
  mosaic of four on 25 % of the samples; the preset of every packaged ``potsdam/*`` and ``vaihingen/*`` config;
- ``"ctseg"`` (default): ctseg's own recipe — scale uniform in ``scale_range``, plain random crop, 90°
  rotations, horizontal and vertical flips;
- ``"none"``: normalisation only.

Two pipelines, the same preset:

- ``augment_on_device=False`` (default): DataLoader workers decode, augment and normalise each crop
  (:class:`~ctseg.data.transforms.PaperTrainTransform` / :class:`~ctseg.data.transforms.TrainTransform`); the
  loader yields finished batches. ``paper``'s mosaic reads its three other crops in the worker, drawn from the
  whole training split with the sample's generator.
- ``augment_on_device=True`` (the fast pipeline): workers only decode the crop files to uint8; the batch is
  augmented and normalised on the training device in :meth:`PreparedDataModule.on_after_batch_transfer` (a
  Lightning hook; code iterating the loaders by hand calls :meth:`PreparedDataModule.device_transform` itself) by
  :class:`~ctseg.data.transforms.PaperBatchTransform` / :class:`~ctseg.data.transforms.BatchTrainTransform`.
  Everything runs there, ``paper``'s class-balanced crop choice included (batched, no host sync); its mosaic
  takes the three other crops from the same batch. With ``decoded_cache`` on as well, workers do not even
  decode: each crop is a copy out of a memory-mapped uint8 cache (:mod:`ctseg.data.decoded`), so a few workers
  feed a GPU at its training rate.

Determinism: the training order is a permutation drawn from ``(seed, epoch)`` (a
:class:`~ctseg.data.resumable.ResumableSampler`, a ``DistributedSampler`` seeded with ``seed``, sharded over DDP
ranks; Lightning sets its epoch), and each sample's augmentation draws from a generator seeded with
``sample_seed(seed, epoch, index)`` (``paper``'s mosaic partners and their augmentations included) — so a run
resumed at an epoch boundary sees the same crops, in the same order, augmented the same way, whatever
``num_workers`` is; mid-epoch, the :class:`~ctseg.training.resume.ExactResume` callback (docs/design.md §9) has the
sampler skip the batches already trained on. The on-device pipeline seeds one device
generator per ``(seed, epoch, rank)``, whichever preset.
"""

from __future__ import annotations

import sys
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from ctseg.data.definitions import DatasetInfo, get_dataset_info
from ctseg.data.prepared import PreparedDataset, info_from_manifest, load_manifest
from ctseg.data.resumable import ResumableSampler, sample_seed, skip_resumed_batches
from ctseg.data.transforms import (
    BatchTrainTransform,
    Normalize,
    PaperBatchTransform,
    PaperTrainTransform,
    TrainTransform,
    normalize,
)
from ctseg.data.views import EvalView, SampleTransform, TrainView
from ctseg.errors import CtsegError

#: Values of the data modules' ``augment`` option (module docstring).
AUGMENT_PRESETS = ("paper", "ctseg", "none")


def check_augment(augment: str | bool) -> str:
    """The validated ``augment`` preset (case-insensitive); ``True`` / ``False`` (the former on/off switch, also
    as the strings ``"true"`` / ``"false"`` from a command line) mean ``"ctseg"`` / ``"none"``.

    Raises:
        CtsegError: an unknown value (one line naming the option and the choices).
    """
    if isinstance(augment, str) and augment.strip().lower() in ("true", "false"):
        augment = augment.strip().lower() == "true"
    if isinstance(augment, bool):
        return "ctseg" if augment else "none"
    if isinstance(augment, str) and augment.strip().lower() in AUGMENT_PRESETS:
        return augment.strip().lower()
    raise CtsegError(f"--data.augment {augment!r}: choose one of {', '.join(AUGMENT_PRESETS)}")


class PreparedDataModule(L.LightningDataModule):
    """Train / validation loaders over a folder written by :func:`ctseg.data.prepare_dataset`.

    Args:
        root: the prepared folder (holds ``manifest.json``).
        batch_size: training batch size.
        num_workers: DataLoader worker processes.
        image_size: training crop side after augmentation (validation crops keep their prepared size).
        train_split, val_split: split names in the manifest. ``val_split`` defaults to the preset's evaluation
            split: ``"test"`` for ISPRS and Dubai (the paper validates on the 14 Potsdam test tiles), ``"val"`` for
            LoveDA, UAVid and folder data sets.
        augment: the training augmentation preset (module docstring): ``"paper"`` (the authors' ``train_aug``:
            scale from {0.75, 1, 1.25, 1.5}, class-balanced crop of ``round(375 · image_size / 512)`` px resized to
            ``image_size``, 90° rotation with p = 0.5, no flips, mosaic on 25 % of the samples), ``"ctseg"``
            (default; ctseg's own: scale uniform in ``scale_range``, random crop, 90° rotations, flips) or
            ``"none"`` (normalisation only). ``True`` / ``False`` (the former on/off switch, as in configs saved
            by earlier runs) are read as ``"ctseg"`` / ``"none"``. Any other value raises
            :class:`~ctseg.errors.CtsegError`.
        augment_on_device: decode-only workers; augment and normalise whole batches on the device (see module
            docstring).
        scale_range: random scale range of the ``ctseg`` preset (``paper`` uses its fixed scale set).
        pin_memory: pin host batches (only when CUDA is available).
        persistent_workers: keep workers alive between epochs (when ``num_workers > 0``).
        seed: seeds the shuffling and the augmentation.
        val_batch_size: validation batch size (default: ``batch_size``).
        drop_last: drop the last incomplete training batch.
        decoded_cache: read crops from a decoded uint8 cache (:mod:`ctseg.data.decoded`) instead of decoding
            the crop files in every epoch: ``True`` (in ``<root>/decoded``), a folder, or ``False``. Built once, in
            :meth:`prepare_data` (one process per machine under DDP); the values are identical.
    """

    #: Set by presets: the data set the folder must hold.
    dataset_name: str | None = None
    #: The evaluation split when ``val_split`` is not given.
    default_val_split: str = "test"

    def __init__(
        self,
        root: str,
        batch_size: int = 8,
        num_workers: int = 4,
        image_size: int = 512,
        train_split: str = "train",
        val_split: str | None = None,
        augment: str | bool = "ctseg",
        augment_on_device: bool = False,
        scale_range: tuple[float, float] = (0.75, 1.5),
        pin_memory: bool = True,
        persistent_workers: bool = True,
        seed: int = 0,
        val_batch_size: int | None = None,
        drop_last: bool = True,
        decoded_cache: bool | str = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if batch_size < 1 or num_workers < 0 or image_size < 1:
            raise ValueError("batch_size and image_size must be positive, num_workers non-negative")
        self.root = root
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.num_workers = num_workers
        self.image_size = image_size
        self.train_split = train_split
        self.val_split = self.default_val_split if val_split is None else val_split
        self.augment, self.augment_on_device = check_augment(augment), augment_on_device
        self.scale_range = tuple(scale_range)
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers
        self.seed = seed
        self.drop_last = drop_last
        self.decoded_cache = decoded_cache
        self._info: DatasetInfo | None = get_dataset_info(self.dataset_name) if self.dataset_name else None
        self.train_dataset: PreparedDataset | None = None
        self.val_dataset: PreparedDataset | None = None
        self._train_sampler: ResumableSampler | None = None
        self._device_generators: dict[str, tuple[int, torch.Generator]] = {}
        self._batch_transform: PaperBatchTransform | BatchTrainTransform | None = None

    # ------------------------------------------------------------------------------------------ data set info
    @property
    def info(self) -> DatasetInfo:
        """Classes, colours, ignore index and normalisation of the data (presets know it without the folder)."""
        if self._info is None:
            self._info = info_from_manifest(load_manifest(self.root))
        return self._info

    def _check_folder(self, dataset: PreparedDataset) -> None:
        if self.dataset_name and dataset.info.name != self.dataset_name:
            raise CtsegError(
                f"{self.root} holds prepared {dataset.info.name!r} data, not {self.dataset_name!r}; "
                f"use the matching data module or folder"
            )

    # ------------------------------------------------------------------------------------------ datasets
    def _dataset(self, split: str) -> PreparedDataset:
        dataset = PreparedDataset(self.root, split)
        self._check_folder(dataset)
        if self.decoded_cache:
            dataset.use_decoded_cache(None if self.decoded_cache is True else self.decoded_cache)
        return dataset

    def prepare_data(self) -> None:
        """Build the decoded-crop caches (when ``decoded_cache`` is on); Lightning runs it once per machine."""
        if self.decoded_cache:
            for split in dict.fromkeys((self.train_split, self.val_split)):
                self._dataset(split)

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit") and self.train_dataset is None:
            self.train_dataset = self._dataset(self.train_split)
        if stage in (None, "fit", "validate", "test") and self.val_dataset is None:
            self.val_dataset = self._dataset(self.val_split)

    def train_transform(self) -> SampleTransform | None:
        """The per-sample training transform of the ``augment`` preset (``None`` in the on-device pipeline)."""
        if self.augment_on_device:
            return None
        if self.augment == "none":
            return Normalize.from_info(self.info)
        if self.augment == "paper":
            return PaperTrainTransform.from_info(self.info, self.image_size)
        return TrainTransform.from_info(self.info, self.image_size, scale_range=self.scale_range)

    def batch_transform(self) -> PaperBatchTransform | BatchTrainTransform | None:
        """The batched (on-device) training transform of the ``augment`` preset (``None`` for ``"none"``)."""
        if self.augment == "none":
            return None
        if self._batch_transform is None:
            if self.augment == "paper":
                self._batch_transform = PaperBatchTransform.from_info(self.info, self.image_size)
            else:
                self._batch_transform = BatchTrainTransform.from_info(
                    self.info, self.image_size, scale_range=self.scale_range
                )
        return self._batch_transform

    def _loader(self, dataset: Dataset, batch_size: int, sampler=None, drop_last: bool = False) -> DataLoader:
        workers = self.num_workers
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            shuffle=False,
            num_workers=workers,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            persistent_workers=self.persistent_workers and workers > 0,
            drop_last=drop_last,
        )

    def _rank(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            return int(trainer.world_size), int(trainer.global_rank)
        return 1, 0

    def train_dataloader(self) -> DataLoader:
        if self.train_dataset is None:
            self.setup("fit")
        assert self.train_dataset is not None
        replicas, rank = self._rank()
        self._train_sampler = ResumableSampler(
            self.train_dataset, num_replicas=replicas, rank=rank, shuffle=True, seed=self.seed, drop_last=True
        )
        view = TrainView(self.train_dataset, self.train_transform(), self.seed)
        loader = self._loader(view, self.batch_size, self._train_sampler, drop_last=self.drop_last)
        # A run resumed mid-epoch: skip what the checkpoint's epoch consumed now, before Lightning creates the
        # iterator (with worker processes it starts drawing from the sampler at once, before on_train_start).
        skip_resumed_batches(getattr(self, "trainer", None), self._train_sampler, len(loader), self.batch_size)
        return loader

    def val_dataloader(self) -> DataLoader:
        if self.val_dataset is None:
            self.setup("validate")
        assert self.val_dataset is not None
        transform = None if self.augment_on_device else Normalize.from_info(self.info)
        return self._loader(EvalView(self.val_dataset, transform), self.val_batch_size)

    def test_dataloader(self) -> DataLoader:
        """The evaluation split (``val_split``) again, with one line saying which split is scored: the same split
        ``fit`` validated on, and so chose the best checkpoint with (the paper's protocol for ISPRS and Dubai)."""
        loader = self.val_dataloader()
        hint = "; for a held-out score prepare another split, pass --data.val_split" if self.val_split != "test" else ""
        if self._rank()[1] == 0:  # one line on stderr, from the first process only
            print(
                f"ctseg test: scoring split {self.val_split!r} of {self.root} ({len(self.val_dataset)} crops), the "
                f"split that validated the fit and chose its best checkpoint{hint}",
                file=sys.stderr,
                flush=True,
            )
        return loader

    # ------------------------------------------------------------------------------------------ on device
    def _device_generator(self, device: torch.device, batch_seed: int | None = None) -> torch.Generator:
        """The device generator for one training batch, seeded from the batch itself (its first sample's
        ``(seed, epoch, index)`` seed, read on the CPU before the transfer) and the rank: the augmentation of a
        batch does not depend on how many batches this process has drawn before, so a run resumed mid-epoch
        augments exactly as the uninterrupted one. Without a batch seed, one generator per ``(seed, epoch,
        rank)``."""
        epoch = self._train_sampler.epoch if self._train_sampler is not None else 0
        _, rank = self._rank()
        key = str(device)
        cached = self._device_generators.get(key)
        if batch_seed is not None:
            generator = cached[1] if cached is not None else torch.Generator(device=device)
            self._device_generators[key] = (epoch, generator)
            return generator.manual_seed(sample_seed(batch_seed & 0x7FFFFFFF, epoch, -1 - rank))
        if cached is None or cached[0] != epoch:
            generator = torch.Generator(device=device).manual_seed(sample_seed(self.seed, epoch, -1 - rank))
            self._device_generators[key] = cached = (epoch, generator)
        return cached[1]

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if isinstance(batch, dict) and "aug_seed" in batch:
            batch = dict(batch)
            seeds = batch.pop("aug_seed")
            self._batch_seed = int(seeds.reshape(-1)[0]) if seeds.numel() else None  # a CPU tensor: no sync
        return batch

    def device_transform(self, batch: dict[str, Any], training: bool) -> dict[str, Any]:
        """On-device pipeline: uint8 batch → augmented (when ``training``, by the ``augment`` preset's batched
        transform, :meth:`batch_transform`) and normalised batch."""
        image, mask = batch["image"], batch["mask"]
        recipe = self.batch_transform() if training else None
        if recipe is not None:
            seed, self._batch_seed = getattr(self, "_batch_seed", None), None
            image, mask = recipe(image, mask, self._device_generator(image.device, seed))
        else:
            image, mask = normalize(image, self.info.mean, self.info.std), mask.to(torch.int64)
        return {**batch, "image": image, "mask": mask}

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if not self.augment_on_device:
            return batch
        trainer = getattr(self, "trainer", None)
        return self.device_transform(batch, training=bool(trainer is not None and trainer.training))


class PotsdamDataModule(PreparedDataModule):
    """:class:`PreparedDataModule` for a prepared Potsdam folder (``.info`` is :data:`~ctseg.data.definitions.POTSDAM`
    even before the folder is read; a folder holding another data set is an error)."""

    dataset_name = "potsdam"


class VaihingenDataModule(PreparedDataModule):
    """:class:`PreparedDataModule` for a prepared Vaihingen folder (IR-R-G crops, ISPRS classes)."""

    dataset_name = "vaihingen"


class DubaiDataModule(PreparedDataModule):
    """:class:`PreparedDataModule` for the prepared Dubai aerial set (validation = tiles 1–3 by default)."""

    dataset_name = "dubai"


class FolderDataModule(PreparedDataModule):
    """:class:`PreparedDataModule` for a folder prepared with ``ctseg prepare folder`` (your own imagery): classes,
    band layout and normalisation statistics all come from the folder's manifest; evaluation on ``val``."""

    default_val_split = "val"


class LoveDADataModule(PreparedDataModule):
    """:class:`PreparedDataModule` for prepared LoveDA (seven classes; evaluation on its Val split, ``val``)."""

    dataset_name = "loveda"
    default_val_split = "val"


class UAVidDataModule(PreparedDataModule):
    """:class:`PreparedDataModule` for prepared UAVid (eight classes; evaluation on the val sequences, ``val``)."""

    dataset_name = "uavid"
    default_val_split = "val"

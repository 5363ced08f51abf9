"""PreparedDataModule and its presets: batches, seeded order, the on-device pipeline, a Lightning run."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from ctseg.data import PreparedDataModule
from ctseg.data.datamodules import DubaiDataModule, PotsdamDataModule, VaihingenDataModule
from ctseg.data.definitions import DUBAI, POTSDAM, VAIHINGEN
from ctseg.errors import CtsegError


def _batches(dm, epoch: int = 0):
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(epoch)
    return list(loader)


def test_batches_are_normalised_floats_and_int64_masks(prepared_potsdam):
    dm = PreparedDataModule(str(prepared_potsdam), batch_size=4, num_workers=0, image_size=48)
    assert dm.info is POTSDAM
    batches = _batches(dm)
    assert len(batches) == 2  # 9 crops, drop_last
    batch = batches[0]
    assert set(batch) == {"image", "mask"}
    assert batch["image"].shape == (4, 3, 48, 48) and batch["image"].dtype == torch.float32
    assert batch["image"].min() < 0  # normalised
    assert batch["mask"].shape == (4, 48, 48) and batch["mask"].dtype == torch.int64
    val = next(iter(dm.val_dataloader()))
    assert val["image"].shape == (4, 3, 64, 64) and (val["mask"] == 255).any()


def test_seeded_order_and_augmentation_survive_a_restart(prepared_potsdam):
    def run(seed, epoch, workers=0):
        dm = PreparedDataModule(str(prepared_potsdam), batch_size=3, num_workers=workers, image_size=32, seed=seed)
        return _batches(dm, epoch)

    first = run(0, 1)
    again = run(0, 1)  # a fresh module, as after resuming at epoch 1
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
    assert not torch.equal(run(0, 2)[0]["image"], first[0]["image"])
    assert not torch.equal(run(1, 1)[0]["image"], first[0]["image"])
    with_workers = run(0, 1, workers=2)  # seeds do not depend on the worker (float rounding may, by threads)
    for a, b in zip(first, with_workers, strict=True):
        assert torch.allclose(a["image"], b["image"], atol=1e-5) and torch.equal(a["mask"], b["mask"])


def test_on_device_pipeline(prepared_potsdam):
    dm = PreparedDataModule(
        str(prepared_potsdam), batch_size=4, num_workers=0, image_size=40, augment_on_device=True, seed=3
    )
    raw = _batches(dm)[0]
    assert raw["image"].dtype == torch.uint8 and raw["mask"].dtype == torch.uint8
    train = dm.device_transform(raw, training=True)
    assert train["image"].shape == (4, 3, 40, 40) and train["image"].dtype == torch.float32
    assert train["mask"].shape == (4, 40, 40) and train["mask"].dtype == torch.int64
    twin = PreparedDataModule(
        str(prepared_potsdam), batch_size=4, num_workers=0, image_size=40, augment_on_device=True, seed=3
    )
    assert torch.equal(twin.device_transform(_batches(twin)[0], training=True)["mask"], train["mask"])
    val = dm.on_after_batch_transfer(next(iter(dm.val_dataloader())), 0)  # no trainer: evaluation
    assert val["image"].shape == (4, 3, 64, 64) and val["image"].dtype == torch.float32
    assert val["mask"].dtype == torch.int64


def test_presets(prepared_potsdam, tmp_path):
    assert PotsdamDataModule(str(tmp_path / "later")).info is POTSDAM
    assert VaihingenDataModule(str(tmp_path / "later")).info is VAIHINGEN
    assert DubaiDataModule(str(tmp_path / "later")).info is DUBAI
    with pytest.raises(CtsegError, match="does not exist"):
        _ = PreparedDataModule(str(tmp_path / "later")).info
    with pytest.raises(CtsegError, match="'potsdam' data, not 'dubai'"):
        DubaiDataModule(str(prepared_potsdam)).setup("fit")
    dm = PotsdamDataModule(str(prepared_potsdam), batch_size=2)
    assert dm.hparams["batch_size"] == 2 and dm.hparams["root"] == str(prepared_potsdam)


class _Probe(L.LightningModule):
    """Records what the training and validation steps receive."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Conv2d(3, 6, 1)
        self.seen: list[tuple[str, tuple, torch.dtype, torch.dtype, float]] = []

    def training_step(self, batch, batch_idx):
        self.seen.append(("train", tuple(batch["image"].shape), batch["image"].dtype, batch["mask"].dtype,
                          float(batch["image"].mean())))  # fmt: skip
        return torch.nn.functional.cross_entropy(self.layer(batch["image"]), batch["mask"], ignore_index=255)

    def validation_step(self, batch, batch_idx):
        self.seen.append(("val", tuple(batch["image"].shape), batch["image"].dtype, batch["mask"].dtype, 0.0))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


@pytest.mark.parametrize("on_device, augment", [(False, "ctseg"), (True, "ctseg"), (False, "paper"), (True, "paper")])
def test_lightning_fit(prepared_potsdam, on_device, augment):
    dm = PotsdamDataModule(
        str(prepared_potsdam), batch_size=4, num_workers=0, image_size=32, augment_on_device=on_device, augment=augment
    )
    probe = _Probe()
    trainer = L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(probe, datamodule=dm)
    train = [s for s in probe.seen if s[0] == "train"]
    val = [s for s in probe.seen if s[0] == "val"]
    assert len(train) == 4 and len(val) == 2 * 3  # 2 epochs × (2 train, 3 val batches)
    assert all(s[1] == (4, 3, 32, 32) and s[2] == torch.float32 and s[3] == torch.int64 for s in train)
    assert all(s[1][1:] == (3, 64, 64) and s[2] == torch.float32 and s[3] == torch.int64 for s in val)
    assert dm._train_sampler.epoch == 1  # Lightning set the epoch
    assert dm.augment == augment and dm.hparams["augment"] == augment

"""``ctseg.training.config_checks.check_hardware``: device requests the machine cannot meet, and the bf16 fallback."""

import pytest
import torch

from ctseg.errors import CtsegError
from ctseg.training.config_checks import _requested_devices, check_hardware


@pytest.mark.parametrize(
    "value, count", [("auto", None), (-1, None), ("-1", None), (3, 3), ("2", 2), ([0, 1], 2), ("0,1,", 2), (None, None)]
)
def test_requested_devices(value, count):
    assert _requested_devices(value) == count


def _fake_gpus(monkeypatch, n: int, bf16: bool) -> None:
    monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)


def test_bf16_falls_back_to_fp16_on_a_gpu_without_it(monkeypatch, capsys):
    _fake_gpus(monkeypatch, 2, bf16=False)
    trainer = {"accelerator": "gpu", "devices": 2, "precision": "bf16-mixed"}
    check_hardware(trainer)
    assert trainer["precision"] == "16-mixed"
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "16-mixed" in lines[0] and "bf16" in lines[0]


def test_bf16_kept_where_supported_and_on_cpu(monkeypatch, capsys):
    _fake_gpus(monkeypatch, 1, bf16=True)
    trainer = {"accelerator": "auto", "devices": "auto", "precision": "bf16-mixed"}
    check_hardware(trainer)
    assert trainer["precision"] == "bf16-mixed"
    _fake_gpus(monkeypatch, 0, bf16=False)
    trainer = {"accelerator": "cpu", "devices": 1, "precision": "bf16-mixed"}
    check_hardware(trainer)
    assert trainer["precision"] == "bf16-mixed" and capsys.readouterr().err == ""


def test_more_gpus_than_exist(monkeypatch):
    _fake_gpus(monkeypatch, 2, bf16=True)
    with pytest.raises(CtsegError, match=r"--trainer.devices 4: this machine has 2 CUDA GPUs; use --trainer.devices 2"):
        check_hardware({"accelerator": "gpu", "devices": 4, "precision": "bf16-mixed"})
    check_hardware({"accelerator": "gpu", "devices": [0, 1], "precision": "bf16-mixed"})  # exactly what exists


def test_gpu_requested_without_one(monkeypatch):
    _fake_gpus(monkeypatch, 0, bf16=False)
    with pytest.raises(CtsegError, match="no CUDA GPU is visible"):
        check_hardware({"accelerator": "cuda", "devices": "auto", "precision": "32-true"})

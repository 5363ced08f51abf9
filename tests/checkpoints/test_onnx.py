"""``ctseg export --format onnx`` and the onnxruntime back end (:class:`~ctseg.inference.onnx.OnnxSegmentor`).

Untrained ``pf-tiny`` models saved as Lightning-like checkpoints (as in ``test_bands.py``), exported at a 64-pixel
window; onnxruntime's logits are compared with PyTorch's.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from helpers.paths import REPO
from helpers.tiny import RGBN as RGBN_TEST
from helpers.tiny import save_task_checkpoint

from ctseg.checkpoints.files import load_model, load_onnx_model, read_checkpoint
from ctseg.checkpoints.onnx_export import export_onnx
from ctseg.cli.entry import main
from ctseg.data.definitions import DatasetInfo
from ctseg.errors import CtsegError
from ctseg.inference.onnx import OnnxSegmentor
from ctseg.inference.tile import predict_tile

WINDOW = 64
RGBN = replace(RGBN_TEST, name="rgbn-onnx")


def _save_task(path: Path, model: str = "pf-tiny", info: DatasetInfo | None = None, seed: int = 0) -> Path:
    return save_task_checkpoint(path, info, model=model, img_size=WINDOW, seed=seed)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("onnx")
    rgb = _save_task(root / "rgb.ckpt")
    rgbn = _save_task(root / "rgbn.ckpt", info=RGBN, seed=1)
    assert main(["export", str(rgb), str(root / "rgb.onnx"), "--window", str(WINDOW)]) == 0
    export_onnx(rgbn, root / "rgbn.onnx", window=WINDOW)
    return {"rgb": rgb, "rgbn": rgbn, "rgb.onnx": root / "rgb.onnx", "rgbn.onnx": root / "rgbn.onnx"}


def _logits(model, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model(x).numpy()


@pytest.mark.parametrize("kind", ["rgb", "rgbn"])
def test_onnxruntime_logits_match_pytorch(exported, kind):
    torch_model = load_model(exported[kind]).model
    onnx_model = OnnxSegmentor(exported[f"{kind}.onnx"])
    bands = 4 if kind == "rgbn" else 3
    assert (onnx_model.in_chans, onnx_model.window, onnx_model.input_multiple) == (bands, WINDOW, WINDOW)
    assert onnx_model.num_classes == torch_model.num_classes and onnx_model.encoder.in_chans == bands
    for batch in (1, 3):  # the batch axis is dynamic
        x = torch.randn(batch, bands, WINDOW, WINDOW, generator=torch.Generator().manual_seed(batch))
        got, want = _logits(onnx_model, x), _logits(torch_model, x)
        assert got.shape == (batch, torch_model.num_classes, WINDOW, WINDOW)
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def test_model_file_and_metadata(exported, tmp_path):
    proto = onnx.load(str(exported["rgbn.onnx"]))
    onnx.checker.check_model(proto)
    assert proto.opset_import[0].version >= 17
    assert not any(init.name.startswith(("proj", "head")) for init in proto.graph.initializer)
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 4, WINDOW, WINDOW]
    # the output's dimensions are named / fixed, also after shape inference (not the tracer's generated names)
    inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=True)
    for graph in (proto.graph, inferred.graph):
        dims = [d.dim_param or d.dim_value for d in graph.output[0].type.tensor_type.shape.dim]
        assert dims == ["batch", len(RGBN.classes), WINDOW, WINDOW]
    meta = json.loads({p.key: p.value for p in proto.metadata_props}["ctseg"])
    # the same metadata as the safetensors export
    assert main(["export", str(exported["rgbn"]), str(tmp_path / "m.safetensors")]) == 0
    from safetensors import safe_open

    with safe_open(str(tmp_path / "m.safetensors"), framework="pt") as fh:
        assert meta == json.loads(fh.metadata()["ctseg"])
    assert meta["config"]["in_chans"] == 4 and meta["class_names"] == list(RGBN.classes)
    assert meta["data_info"] == read_checkpoint(exported["rgbn"])["hyper_parameters"]["data_info"]
    loaded = load_onnx_model(exported["rgbn.onnx"])
    assert loaded.info == RGBN and loaded.in_chans == 4 and loaded.class_names == list(RGBN.classes)
    assert loaded.dataset == RGBN.name and loaded.ignore_index == 255
    assert load_onnx_model(exported["rgb.onnx"]).info is None


def test_sliding_window_predictor_runs_the_onnx_model(exported):
    image = np.random.default_rng(0).integers(0, 256, (100, 150, 3), dtype=np.uint8)
    torch_model, onnx_model = load_model(exported["rgb"]).model, OnnxSegmentor(exported["rgb.onnx"])
    want = predict_tile(torch_model, image, window=WINDOW, device="cpu")
    got = predict_tile(onnx_model, image, window=WINDOW, device="cpu")
    assert (got == want).mean() > 0.999
    small = image[:40, :50]  # smaller than the window: padded up to it
    assert predict_tile(onnx_model, small, window=WINDOW, device="cpu").shape == (40, 50)


def test_wrong_input_is_one_line(exported):
    model = OnnxSegmentor(exported["rgb.onnx"])
    for shape in [(1, 3, 2 * WINDOW, 2 * WINDOW), (1, 4, WINDOW, WINDOW), (3, WINDOW, WINDOW)]:
        with pytest.raises(CtsegError, match=f"takes \\(B, 3, {WINDOW}, {WINDOW}\\)") as err:
            model(torch.zeros(shape))
        assert "\n" not in str(err.value)
    with pytest.raises(CtsegError, match="window must be a positive multiple of 64"):
        predict_tile(model, np.zeros((100, 100, 3), np.uint8), window=96)


def test_devices(exported):
    import onnxruntime

    segmentor = OnnxSegmentor(exported["rgb.onnx"], "auto")
    assert segmentor.num_classes == 4
    options = segmentor.session.get_session_options()  # idle threads sleep between windows (issue 33)
    for entry in ("session.intra_op.allow_spinning", "session.inter_op.allow_spinning"):
        assert options.get_session_config_entry(entry) == "0"
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    with pytest.raises(CtsegError, match="no CUDA support.*--device cpu"):
        OnnxSegmentor(exported["rgb.onnx"], "cuda")


def _one_line(capsys, *needles: str) -> None:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("ctseg: error:"), err
    for needle in needles:
        assert needle in err, err


def test_export_refusals(exported, tmp_path, capsys):
    ckpt = str(exported["rgb"])
    assert main(["export", ckpt, str(exported["rgb.onnx"])]) == 2
    _one_line(capsys, "already exists", "--overwrite")
    assert main(["export", ckpt, str(tmp_path / "a.onnx"), "--window", "50"]) == 2
    _one_line(capsys, "--window 50", "multiples of 32")
    assert main(["export", ckpt, str(tmp_path / "a.safetensors"), "--format", "onnx"]) == 2
    _one_line(capsys, "*.onnx")
    assert main(["export", str(exported["rgb.onnx"]), str(tmp_path / "b.onnx")]) == 2
    _one_line(capsys, "already ONNX")
    not_ctseg = tmp_path / "plain.onnx"
    proto = onnx.load(str(exported["rgb.onnx"]))
    del proto.metadata_props[:]
    onnx.save(proto, str(not_ctseg))
    with pytest.raises(CtsegError, match="no ctseg metadata"):
        OnnxSegmentor(not_ctseg)
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(CtsegError, match="cannot be loaded"):
        OnnxSegmentor(tmp_path / "junk.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk.onnx", "plain.onnx"]  # no partial files


@pytest.mark.slow
def test_swin_model_exports_with_a_dynamic_batch(tmp_path):
    """``ds-paper`` (Swin encoder: window partitions, shifted-window masks) through the same exporter."""
    ckpt = _save_task(tmp_path / "ds.ckpt", model="ds-paper")
    out = export_onnx(ckpt, tmp_path / "ds.onnx", window=128)
    torch_model, onnx_model = load_model(ckpt).model, OnnxSegmentor(out)
    for batch in (1, 3):
        x = torch.randn(batch, 3, 128, 128, generator=torch.Generator().manual_seed(batch))
        np.testing.assert_allclose(_logits(onnx_model, x), _logits(torch_model, x), atol=1e-4, rtol=0)


def test_speed_benchmark_runs_at_toy_size(tmp_path):
    import os
    import subprocess
    import sys

    repo = REPO
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(repo / "src")}
    args = ["--models", "pf-tiny", "--window", "64", "--batch", "2", "--repeats", "1", "--warmup", "0"]
    res = subprocess.run(
        [sys.executable, str(repo / "benchmarks" / "onnx_speed.py"), *args, "--threads", "1", "--json",
         str(tmp_path / "s.json")], capture_output=True, text=True, timeout=240, env=env,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    row = json.loads((tmp_path / "s.json").read_text())["results"][0]
    assert row["model"] == "pf-tiny" and row["max_abs_diff"] < 1e-4 and row["onnxruntime_s"] > 0


def test_onnx_predict_never_imports_timm_or_torchvision(exported, tmp_path):
    """An ONNX model runs with onnxruntime: ``ctseg predict --ckpt x.onnx`` works with timm and torchvision made
    unimportable, so it pays neither's import time (issue 33)."""
    import subprocess
    import sys

    from PIL import Image

    image = tmp_path / "scene.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (80, 96, 3), dtype=np.uint8)).save(image)
    code = (
        "import sys; sys.modules['timm'] = None; sys.modules['torchvision'] = None\n"
        "from ctseg.cli.entry import main\n"
        f"raise SystemExit(main(['predict', {str(image)!r}, '--ckpt', {str(exported['rgb.onnx'])!r}, "
        f"'--out', {str(tmp_path / 'out')!r}, '--window', '{WINDOW}', '--no-color']))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "out" / "scene_pred.tif").is_file()

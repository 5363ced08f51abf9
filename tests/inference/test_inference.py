"""Sliding-window inference: identity with one window, seamless blending, TTA, bounded device batches."""

import numpy as np
import pytest
import torch
from torch import nn

from ctseg.errors import CtsegError
from ctseg.inference.tile import blend_weights, predict_tile, window_positions
from ctseg.models import build_model

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def _normalise(img_hwc: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(img_hwc).permute(2, 0, 1)[None].float() / 255
    return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


class Pointwise(nn.Module):
    """1×1 convolutions only: exactly translation- and flip-equivariant."""

    def __init__(self, k: int = 5):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(3, 16, 1), nn.ReLU(), nn.Conv2d(16, k, 1))

    def forward(self, x):
        return self.net(x)


class Local(nn.Module):
    """A 3×3 convolution: equivariant except for the zero padding at a window's edge."""

    def __init__(self, k: int = 5):
        super().__init__()
        torch.manual_seed(1)
        self.net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, k, 1))

    def forward(self, x):
        return self.net(x)


class Recorder(nn.Module):
    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.batches: list[tuple[int, ...]] = []

    def forward(self, x):
        self.batches.append(tuple(x.shape))
        return self.inner(x)


@pytest.fixture(scope="module")
def pf_tiny():
    torch.manual_seed(0)
    return build_model("pf-tiny", 6, img_size=64).eval()


def test_one_window_reproduces_a_forward_pass(pf_tiny):
    img = _image(64, 96)
    pred, probs = predict_tile(pf_tiny, img, window=128, return_probs=True)
    with torch.no_grad():
        ref = pf_tiny(_normalise(img)).softmax(1)[0]
    assert pred.shape == (64, 96) and pred.dtype == np.uint8
    assert probs.shape == (6, 64, 96) and probs.dtype == np.float16
    np.testing.assert_allclose(probs.astype(np.float32), ref.numpy(), atol=2e-3)
    top2 = ref.topk(2, dim=0).values
    clear = (top2[0] - top2[1] > 1e-2).numpy()  # ignore near-ties, where float16 rounding may flip argmax
    assert (pred == ref.argmax(0).numpy())[clear].all()


def test_odd_sizes_are_reflect_padded_and_cropped(pf_tiny):
    img = _image(50, 70, seed=1)
    pred, probs = predict_tile(pf_tiny, img, window=512, return_probs=True)
    padded = np.pad(img, ((0, 14), (0, 26), (0, 0)), mode="reflect")  # to 64 × 96
    with torch.no_grad():
        ref = pf_tiny(_normalise(padded)).softmax(1)[0, :, :50, :70]
    assert pred.shape == (50, 70)
    np.testing.assert_allclose(probs.astype(np.float32), ref.numpy(), atol=2e-3)
    # (H, W, 3) and (3, H, W) inputs are the same image
    np.testing.assert_array_equal(predict_tile(pf_tiny, img.transpose(2, 0, 1), window=512), pred)


@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5])
def test_windows_match_whole_image_for_equivariant_model(overlap):
    model = Pointwise()
    img = _image(200, 300, seed=2)
    pred, probs = predict_tile(model, img, window=64, overlap=overlap, batch_size=5, return_probs=True)
    with torch.no_grad():
        ref = model(_normalise(img)).softmax(1)[0].numpy()
    assert pred.shape == (200, 300)
    np.testing.assert_allclose(probs.astype(np.float32), ref, atol=2e-3)
    assert (pred == ref.argmax(0)).mean() > 0.999


def test_blending_hides_window_edges():
    model = Local()
    img = _image(192, 256, seed=3)
    pred = predict_tile(model, img, window=64, overlap=0.25)
    with torch.no_grad():
        ref = model(_normalise(img)).argmax(1)[0].numpy()
    assert (pred == ref).mean() > 0.995


def test_tta_runs_and_is_exact_for_flip_equivariant_model():
    model = Pointwise()
    img = _image(96, 128, seed=4)
    plain = predict_tile(model, img, window=64, overlap=0.25, tta=False, return_probs=True)[1]
    tta = predict_tile(model, img, window=64, overlap=0.25, tta=True, return_probs=True)[1]
    np.testing.assert_allclose(tta.astype(np.float32), plain.astype(np.float32), atol=2e-3)


def test_pf_tiny_tta_and_small_windows(pf_tiny):
    img = _image(160, 130, seed=5)
    pred = predict_tile(pf_tiny, img, window=64, overlap=0.25, tta=True, batch_size=4)
    assert pred.shape == (160, 130) and pred.max() < 6


def test_at_most_batch_size_windows_per_forward():
    rec = Recorder(Pointwise())
    img = _image(300, 260, seed=6)
    predict_tile(rec, img, window=64, overlap=0.5, batch_size=3, tta=True)
    ys = window_positions(300, 64, 0.5)
    xs = window_positions(260, 64, 0.5)
    assert all(b[0] <= 3 and b[-2:] == (64, 64) for b in rec.batches)
    assert sum(b[0] for b in rec.batches) == 3 * len(ys) * len(xs)  # three flips per window


def test_model_mode_is_restored(pf_tiny):
    pf_tiny.train()
    predict_tile(pf_tiny, _image(64, 64), window=64)
    assert pf_tiny.training
    pf_tiny.eval()


@pytest.mark.parametrize(
    "length, window, overlap", [(64, 64, 0.25), (300, 64, 0.25), (6000, 512, 0.25), (513, 512, 0.5)]
)
def test_window_positions_cover_and_overlap(length, window, overlap):
    pos = window_positions(length, window, overlap)
    assert pos[0] == 0 and pos[-1] == length - window
    steps = np.diff(pos)
    assert (steps <= window - round(overlap * window)).all() and (steps > 0).all()
    weights = blend_weights(length, window, pos)
    total = np.zeros(length)
    for p, w in zip(pos, weights, strict=True):
        assert (w > 0).all()
        total[p : p + window] += w
    np.testing.assert_allclose(total, 1.0, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"window": 100}, "multiple of 32"),
        ({"overlap": 1.0}, "[0, 1)"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_bad_arguments(kwargs, needle):
    with pytest.raises(CtsegError, match=needle.replace("[", r"\[").replace(")", r"\)")):
        predict_tile(Pointwise(), _image(64, 64), **kwargs)


def test_bad_images():
    with pytest.raises(CtsegError, match="uint8, uint16 or float32, got int32"):
        predict_tile(Pointwise(), np.zeros((64, 64, 3), dtype=np.int32))
    with pytest.raises(CtsegError, match="3 bands"):
        predict_tile(Pointwise(), np.zeros((64, 64, 4), dtype=np.uint8))
    with pytest.raises(CtsegError, match="4 values"):
        predict_tile(Pointwise(), np.zeros((64, 64, 3), dtype=np.uint8), mean=(0.5,) * 4, std=(0.2,) * 3)


class Bands(nn.Module):
    """1×1 convolutions over ``c`` bands."""

    def __init__(self, c: int, k: int = 4):
        super().__init__()
        torch.manual_seed(2)
        self.net = nn.Sequential(nn.Conv2d(c, 16, 1), nn.ReLU(), nn.Conv2d(16, k, 1))

    def forward(self, x):
        return self.net(x)


@pytest.mark.parametrize(
    "dtype, scale", [(np.uint8, 255.0), (np.uint16, 65535.0), (np.float32, 1.0)], ids=["uint8", "uint16", "float32"]
)
@pytest.mark.parametrize("channels", [1, 4, 5])
def test_any_band_count_and_dtype(dtype, scale, channels):
    """(x / scale − mean) / std over C bands, scale from the dtype; (H, W, C), (C, H, W) and (H, W) for 1 band."""
    rng = np.random.default_rng(channels)
    high = 1.0 if dtype == np.float32 else np.iinfo(dtype).max + 1
    img = (rng.random((channels, 64, 96)) * high).astype(dtype)
    mean, std = tuple(rng.uniform(0.3, 0.6, channels)), tuple(rng.uniform(0.1, 0.3, channels))
    model = Bands(channels)
    pred, probs = predict_tile(model, img, window=128, mean=mean, std=std, return_probs=True)
    x = torch.from_numpy(img.astype(np.float32))[None] / scale
    x = (x - torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)) / torch.tensor(std).float().view(1, -1, 1, 1)
    with torch.no_grad():
        ref = model(x).softmax(1)[0]
    np.testing.assert_allclose(probs.astype(np.float32), ref.numpy(), atol=2e-3)
    again = predict_tile(model, img.transpose(1, 2, 0), window=128, mean=mean, std=std)
    np.testing.assert_array_equal(pred, again)
    if channels == 1:
        np.testing.assert_array_equal(pred, predict_tile(model, img[0], window=128, mean=mean, std=std))
    explicit = predict_tile(model, img, window=128, mean=mean, std=std, scale=scale)
    np.testing.assert_array_equal(pred, explicit)


def test_mean_must_match_the_model_bands():
    model = build_model("pf-tiny", 3, in_chans=4, img_size=64)
    with pytest.raises(CtsegError, match="takes 4 bands but mean / std have 3"):
        predict_tile(model, np.zeros((3, 64, 64), np.uint8))

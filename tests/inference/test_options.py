"""``WindowOptions``: the sliding window's settings checked once, and the same result as the keywords it replaces."""

from __future__ import annotations

import dataclasses
import inspect

import numpy as np
import pytest
import torch
from torch import nn

from ctseg.errors import CtsegError
from ctseg.inference import WindowOptions, predict_rows, predict_tile
from ctseg.inference.rows import ArrayRows, class_rows


class Local(nn.Module):
    """A 3×3 convolution over 3 bands (windows and their blend matter)."""

    in_chans = 3

    def __init__(self, k: int = 5):
        super().__init__()
        torch.manual_seed(3)
        self.net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, k, 1))

    def forward(self, x):
        return self.net(x)


def _image(h: int, w: int, dtype=np.uint8) -> np.ndarray:
    high = 1.0 if dtype == np.float32 else np.iinfo(dtype).max + 1
    return (np.random.default_rng(7).random((3, h, w)) * high).astype(dtype)


def test_defaults_and_normalised_fields():
    opts = WindowOptions()
    assert (opts.window, opts.overlap, opts.batch_size, opts.tta) == (512, 0.25, 8, False)
    assert opts.device is None and opts.scale is None and opts.amp is None
    same = WindowOptions(window=512.0, overlap=0.25, batch_size="8", device="auto", mean=list(opts.mean), std=opts.std)
    assert same == opts and hash(same) == hash(opts)
    assert isinstance(same.window, int) and isinstance(same.mean, tuple)
    assert WindowOptions(device="cpu") == WindowOptions(device=torch.device("cpu"))
    assert WindowOptions(scale=255).scale == 255.0 and WindowOptions(amp=0).amp is False
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.window = 256  # type: ignore[misc]


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"window": 0}, "window must be a positive multiple"),
        ({"overlap": 1.0}, r"overlap is a fraction of the window in \[0, 1\), got 1.0"),
        ({"overlap": -0.1}, r"in \[0, 1\)"),
        ({"batch_size": 0}, "batch_size must be at least 1, got 0"),
        ({"mean": (0.5,) * 4}, "mean has 4 values but std has 3"),
        ({"mean": (), "std": ()}, "mean must be one number per band, got none"),
        ({"std": 0.2}, "std must be one number per band, got 0.2"),
        ({"scale": 0}, "scale must be positive, got 0.0"),
        ({"device": "nonsense"}, "device must be auto, cpu, cuda or cuda:N, got 'nonsense'"),
    ],
)
def test_checks_are_one_line_errors(kwargs, needle):
    with pytest.raises(CtsegError, match=needle) as err:
        WindowOptions(**kwargs)
    assert "\n" not in str(err.value)
    with pytest.raises(CtsegError, match=needle):  # the keywords are checked by the same code
        predict_tile(Local(), _image(64, 64), **kwargs)


def test_model_checks_at_prediction_time():
    with pytest.raises(CtsegError, match="window must be a positive multiple of 32, got 100"):
        predict_tile(Local(), _image(64, 64), options=WindowOptions(window=100))
    with pytest.raises(CtsegError, match="takes 3 bands but mean / std have 4"):
        predict_tile(Local(), _image(64, 64), options=WindowOptions(mean=(0.5,) * 4, std=(0.2,) * 4))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize(
    "kw",
    [
        {"window": 64},
        {"window": 64, "overlap": 0.5, "batch_size": 3, "tta": True},
        {"window": 128, "mean": (0.4, 0.5, 0.6), "std": (0.2, 0.3, 0.25), "scale": 300.0, "device": "cpu"},
    ],
)
def test_options_equal_keywords_bit_for_bit(dtype, kw):
    model, image = Local(), _image(150, 170, dtype)
    classes, probs = predict_tile(model, image, return_probs=True, **kw)
    opts = WindowOptions(**kw)
    classes_o, probs_o = predict_tile(model, image, options=opts, return_probs=True)
    np.testing.assert_array_equal(classes_o, classes)
    np.testing.assert_array_equal(probs_o, probs)
    # a keyword that agrees with the options is accepted
    np.testing.assert_array_equal(predict_tile(model, image, options=opts, window=kw["window"]), classes)

    def streamed(**call) -> np.ndarray:
        out = np.zeros(image.shape[1:], np.uint8)

        def emit(top, p, mask):
            out[top : top + p.shape[1]] = class_rows(p, mask)

        predict_rows(model, ArrayRows(image), emit, **call)
        return out

    np.testing.assert_array_equal(streamed(**kw), classes)
    np.testing.assert_array_equal(streamed(options=opts), classes)


def test_conflicting_keyword_is_a_one_line_error():
    opts = WindowOptions(window=64, tta=True)
    for call in (
        lambda **kw: predict_tile(Local(), _image(64, 64), **kw),
        lambda **kw: predict_rows(Local(), ArrayRows(_image(64, 64)), lambda *a: None, **kw),
    ):
        with pytest.raises(CtsegError, match=r"conflicting window settings: window=128 but options.window=64") as e:
            call(options=opts, window=128)
        assert "\n" not in str(e.value)
        with pytest.raises(CtsegError, match="tta=False but options.tta=True"):
            call(options=opts, tta=False)
        with pytest.raises(CtsegError, match="options must be a WindowOptions, got dict"):
            call(options={"window": 64})


def test_keyword_defaults_read_as_the_fields():
    for fn in (predict_tile, predict_rows):
        params = inspect.signature(fn).parameters
        assert params["options"].default is None
        for field in dataclasses.fields(WindowOptions):
            assert repr(params[field.name].default) == repr(field.default)

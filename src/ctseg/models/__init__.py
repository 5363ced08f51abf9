"""Segmentation models: timm encoders with the DCSwin and UNetFormer decoders, as named presets.

>>> from ctseg.models import build_model, list_models
>>> model = build_model("pf-tiny", num_classes=6)          # doctest: +SKIP
>>> feats = model.encode(x)                                 # [(B, C_s, H/r_s, W/r_s)] for r_s = 4, 8, 16, 32
>>> logits = model.decode(feats, x.shape[-2:])              # (B, 6, H, W)

See :mod:`ctseg.models.registry` for the presets and their parameter counts.
"""

from ctseg._exports import lazy

__all__ = [
    "DCSwinDecoder",
    "Encoder",
    "LoadReport",
    "Segmentor",
    "UNetFormerDecoder",
    "build_model",
    "list_encoders",
    "list_models",
    "load_encoder_weights",
    "register_model",
]
# Each name from its module on first use: reading the presets (the checks on a model file's metadata, an ONNX
# model's run) does not import timm or torchvision; building a model does.
__getattr__, __dir__ = lazy(__name__, ("registry", "segmentor", "encoders", "weights", "dcswin", "unetformer"))

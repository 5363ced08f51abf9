"""Segmentation models: timm encoders with the DCSwin and UNetFormer decoders, as named presets.

>>> from ctseg.models import build_model, list_models
>>> model = build_model("pf-tiny", num_classes=6)          # doctest: +SKIP
>>> feats = model.encode(x)                                 # [(B, C_s, H/r_s, W/r_s)] for r_s = 4, 8, 16, 32
>>> logits = model.decode(feats, x.shape[-2:])              # (B, 6, H, W)

See :mod:`ctseg.models.registry` for the presets and their parameter counts.
"""

from ctseg.models.dcswin import DCSwinDecoder
from ctseg.models.encoders import Encoder, list_encoders
from ctseg.models.registry import build_model, list_models, register_model
from ctseg.models.segmentor import Segmentor
from ctseg.models.unetformer import UNetFormerDecoder
from ctseg.models.weights import LoadReport, load_encoder_weights

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

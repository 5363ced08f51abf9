"""Named model presets over one private builder (timm-style registry).

Each preset is one :class:`ModelPreset` registered with :func:`register_model`, named once: the encoder (fixed, or
a default the caller may replace), the decoder and the decoder's options; a duplicate name is an error.
:func:`build_model` looks the name up and calls :func:`_build`, the only place where models are assembled.

==============  ===========================================  ==========  =====================================
name            encoder                                      decoder     parameters (6 classes)
==============  ===========================================  ==========  =====================================
``ds-paper``    ``ctseg_swin_paper`` (fixed)                 DCSwin      21,890,254 (encoder 13,834,508)
``uf-paper``    ``ctseg_swin_paper`` (fixed)                 UNetFormer  14,345,514 (decoder 511,006)
``pf-paper``    ``ctseg_poolformer_paper`` (fixed)           DCSwin      17,513,346 (encoder 9,457,600)
``dcswin``      any timm pyramid (default ``swin_tiny…``)    DCSwin      45,631,580 with swin_tiny
``unetformer``  any timm pyramid (default ``poolformerv2``)  UNetFormer  11,894,838 with poolformerv2_s12
``pf-tiny``     ``ctseg_poolformer_tiny`` (fixed)            DCSwin      3,246,082 (CPU demos and tests)
``uf-tiny``     ``ctseg_poolformer_tiny`` (fixed)            UNetFormer  1,360,818 (D = 32, 4 heads)
==============  ===========================================  ==========  =====================================
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from torch import nn

from ctseg.errors import CtsegError
from ctseg.models.dcswin import DCSwinDecoder
from ctseg.models.segmentor import Segmentor
from ctseg.models.unetformer import UNetFormerDecoder

__all__ = ["ModelPreset", "build_model", "decoder_options", "get_preset", "list_models", "register_model"]

_DECODERS: dict[str, type[nn.Module]] = {"dcswin": DCSwinDecoder, "unetformer": UNetFormerDecoder}


@dataclass(frozen=True)
class ModelPreset:
    """Settings of a named model: ``encoder`` is fixed unless ``encoder_fixed`` is False (then a default)."""

    name: str
    encoder: str
    decoder: str
    encoder_fixed: bool = True
    decoder_kwargs: dict[str, Any] = field(default_factory=dict)
    description: str = ""


_PRESETS: dict[str, ModelPreset] = {}


def register_model(preset: ModelPreset | str):
    """Register a :class:`ModelPreset` under its own ``name`` (returns it); a second preset of the same name is an
    error (a duplicate never silently replaces the first).

    ``register_model("name")`` is the decorator form: it registers the :class:`ModelPreset` that the decorated
    zero-argument function returns (its ``name`` must be ``"name"`` or empty).
    """
    if isinstance(preset, str):
        name = preset

        def decorate(fn: Callable[[], ModelPreset]) -> Callable[[], ModelPreset]:
            made = fn()
            if made.name not in ("", name):
                raise ValueError(f"preset function for {name!r} returned a preset named {made.name!r}")
            register_model(replace(made, name=name))
            return fn

        return decorate
    if preset.decoder not in _DECODERS:
        raise ValueError(f"preset {preset.name!r}: unknown decoder {preset.decoder!r}")
    if not preset.name:
        raise ValueError("a model preset needs a name")
    if preset.name in _PRESETS:
        raise ValueError(f"model preset {preset.name!r} is already registered; choose another name")
    _PRESETS[preset.name] = preset
    return preset


def get_preset(name: str) -> ModelPreset | None:
    """The registered :class:`ModelPreset` of ``name`` (``None`` for an unknown name)."""
    return _PRESETS.get(name)


def list_models() -> list[str]:
    """Names accepted by :func:`build_model`."""
    return sorted(_PRESETS)


register_model(ModelPreset("ds-paper", "ctseg_swin_paper", "dcswin", description="CT paper's DS: Swin + DCSwin"))
register_model(
    ModelPreset(
        "uf-paper", "ctseg_swin_paper", "unetformer", description="CT paper's UF: Swin + UNetFormer (no aux head)"
    )
)
register_model(
    ModelPreset("pf-paper", "ctseg_poolformer_paper", "dcswin", description="CT paper's PF: PoolFormer + DCSwin")
)
register_model(
    ModelPreset(
        "dcswin",
        "swin_tiny_patch4_window7_224",
        "dcswin",
        encoder_fixed=False,
        description="DCSwin decoder over any timm pyramid encoder",
    )
)
register_model(
    ModelPreset(
        "unetformer",
        "poolformerv2_s12",
        "unetformer",
        encoder_fixed=False,
        description="UNetFormer decoder over any timm pyramid encoder",
    )
)
register_model(
    ModelPreset("pf-tiny", "ctseg_poolformer_tiny", "dcswin", description="small PoolFormer + DCSwin for CPU demos")
)
register_model(
    ModelPreset(
        "uf-tiny",
        "ctseg_poolformer_tiny",
        "unetformer",
        decoder_kwargs=dict(decode_channels=32, num_heads=4),
        description="small PoolFormer + UNetFormer for CPU demos",
    )
)


def decoder_options() -> dict[str, set[str]]:
    return {
        name: {
            p
            for p in inspect.signature(cls.__init__).parameters
            if p not in ("self", "encoder_channels", "num_classes")
        }
        for name, cls in _DECODERS.items()
    }


def build_model(
    name: str,
    num_classes: int,
    *,
    encoder: str | None = None,
    pretrained: str | Path | None = None,
    img_size: int = 512,
    in_chans: int = 3,
    **kwargs: Any,
) -> Segmentor:
    """Build a named model (:func:`list_models`) as a :class:`Segmentor`.

    Args:
        name: preset name, e.g. ``"ds-paper"``, ``"pf-tiny"``, ``"dcswin"``.
        num_classes: K.
        encoder: timm encoder name for the ``"dcswin"`` / ``"unetformer"`` presets (others fix their encoder).
        pretrained: a local encoder weights file (.pth/.pt/.bin/.safetensors), loaded by
            :func:`~ctseg.models.weights.load_encoder_weights`; nothing is ever downloaded.
        img_size: nominal input size (multiple of 32); other multiples of 32 run too.
        in_chans: input bands (the data set's ``DatasetInfo.bands``), passed to the timm encoder's constructor.
            RGB ``pretrained`` weights get their first convolution adapted by timm's ``adapt_input_conv``: the RGB
            filters repeated cyclically over the bands and scaled by 3 / ``in_chans`` (summed for 1 band).
        **kwargs: ``stage_norm`` ("auto", "layernorm", "groupnorm", "none"), ``drop_path_rate``,
            ``encoder_kwargs`` (dict for the timm constructor), ``allow_partial`` (for ``pretrained``: load only
            the tensors whose shapes match, below the 90 % rule — how ``pf-paper`` takes timm's ``poolformer_s12``
            ImageNet checkpoint, as the authors did), and decoder options: DCSwin ``atrous_rates``, ``dropout``;
            UNetFormer ``decode_channels``, ``window_size``, ``num_heads``, ``dropout``.

    Returns:
        a :class:`Segmentor` whose ``config`` rebuilds it: ``build_model(**model.config)``.

    Raises:
        CtsegError: unknown name or option, unknown encoder or one without a stride-4…32 pyramid, a fixed-encoder
            preset given another encoder, ``pretrained=True`` (no downloads), a missing or unsuitable weights file.
    """
    if name not in _PRESETS:
        raise CtsegError(f"unknown model {name!r}; valid names: {', '.join(list_models())}")
    preset = _PRESETS[name]
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise CtsegError(f"num_classes={num_classes!r}: expected a positive integer")
    if isinstance(img_size, bool) or not isinstance(img_size, int) or img_size < 32 or img_size % 32:
        raise CtsegError(f"img_size={img_size!r}: expected a positive multiple of 32")
    if preset.encoder_fixed and encoder not in (None, preset.encoder):
        raise CtsegError(
            f"model {name!r} fixes its encoder ({preset.encoder}); for encoder={encoder!r} use 'dcswin' or 'unetformer'"
        )
    if isinstance(in_chans, bool) or not isinstance(in_chans, int) or in_chans < 1:
        raise CtsegError(f"in_chans={in_chans!r}: expected a positive number of input bands")
    if pretrained is True:
        raise CtsegError("pretrained=True: ctseg never downloads weights; pass pretrained=PATH to a local weights file")
    options = dict(kwargs)
    allow_partial = bool(options.pop("allow_partial", False))
    decoder_kwargs = dict(preset.decoder_kwargs)
    decoder_kwargs.update(options.pop("decoder_kwargs", None) or {})
    allowed = decoder_options()[preset.decoder]
    for key in [k for k in options if k in allowed]:
        decoder_kwargs[key] = options.pop(key)
    encoder_kwargs = dict(options.pop("encoder_kwargs", None) or {})
    if in_chans != 3:
        if encoder_kwargs.get("in_chans", in_chans) != in_chans:
            raise CtsegError(f"in_chans={in_chans} and encoder_kwargs in_chans={encoder_kwargs['in_chans']} differ")
        encoder_kwargs["in_chans"] = in_chans
    if "drop_path_rate" in options:
        encoder_kwargs["drop_path_rate"] = options.pop("drop_path_rate")
    stage_norm = options.pop("stage_norm", "auto")
    if options:
        accepted = sorted(
            {"allow_partial", "decoder_kwargs", "encoder_kwargs", "drop_path_rate", "stage_norm"} | allowed
        )
        raise CtsegError(f"model {name!r}: unknown option(s) {sorted(options)}; accepted: {', '.join(accepted)}")

    config: dict[str, Any] = dict(name=name, num_classes=num_classes, encoder=encoder, img_size=img_size, **kwargs)
    config.pop("allow_partial", None)
    if in_chans != 3:  # 3-band configs stay as earlier ctseg wrote them (and readable by it)
        config["in_chans"] = in_chans
    model = _build(
        encoder_name=encoder or preset.encoder,
        decoder_name=preset.decoder,
        num_classes=num_classes,
        img_size=img_size,
        stage_norm=stage_norm,
        encoder_kwargs=encoder_kwargs,
        decoder_kwargs=decoder_kwargs,
        config=config,
    )
    if pretrained is not None and pretrained is not False:
        from ctseg.models.weights import load_encoder_weights

        load_encoder_weights(model, pretrained, allow_partial=allow_partial)
    return model


def _build(
    *,
    encoder_name: str,
    decoder_name: str,
    num_classes: int,
    img_size: int,
    stage_norm: str,
    encoder_kwargs: dict[str, Any],
    decoder_kwargs: dict[str, Any],
    config: dict[str, Any],
) -> Segmentor:
    from ctseg.models.encoders import Encoder  # timm: imported when a model is built, not to read the presets

    encoder = Encoder(encoder_name, img_size=img_size, stage_norm=stage_norm, **encoder_kwargs)
    try:
        decoder = _DECODERS[decoder_name](encoder.channels, num_classes, **decoder_kwargs)
    except (TypeError, ValueError) as err:
        raise CtsegError(f"{decoder_name} decoder options {decoder_kwargs}: {err}") from err
    return Segmentor(encoder, decoder, num_classes, config=config)

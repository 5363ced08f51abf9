"""Segmentor: an encoder pyramid and a decoder, with the encode / decode split the CT scheme needs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

from ctseg.errors import CtsegError

if TYPE_CHECKING:  # an annotation only: building a Segmentor does not need timm imported here
    from ctseg.models.encoders import Encoder

__all__ = ["Segmentor"]


class Segmentor(nn.Module):
    """Encoder + decoder.

    The contrastive schemes work on the encoder's stage outputs, so the forward pass is split in two::

        feats = model.encode(x)                    # [F_1 … F_4], F_s: (B, C_s, H / r_s, W / r_s)
        logits = model.decode(feats, x.shape[-2:]) # (B, K, H, W)
        logits = model(x)                          # the same in one call

    Args:
        encoder: a :class:`~ctseg.models.encoders.Encoder` (strides 4, 8, 16, 32).
        decoder: a module called as ``decoder(feats, size) -> logits``.
        num_classes: K.
        config: keyword arguments of :func:`ctseg.models.build_model` that rebuild this model
            (``build_model(**model.config)``; weights are not part of it).

    Attributes:
        channels, strides: per-stage lists from the encoder, e.g. ``[64, 128, 256, 512]``, ``[4, 8, 16, 32]``.
    """

    def __init__(self, encoder: Encoder, decoder: nn.Module, num_classes: int, config: dict[str, Any] | None = None):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.num_classes = int(num_classes)
        self.channels: list[int] = list(encoder.channels)
        self.strides: list[int] = list(encoder.strides)
        self.config: dict[str, Any] = dict(config or {})

    def check_input(self, x: Tensor) -> None:
        """Raise :class:`CtsegError` unless ``x`` is (B, C, H, W) with H and W multiples of 32 (Python ints only)."""
        multiple = self.encoder.input_multiple
        if x.dim() != 4 or x.shape[-2] % multiple or x.shape[-1] % multiple:
            raise CtsegError(
                f"input of shape {tuple(x.shape)}: expected (B, C, H, W) with H and W multiples of {multiple}; "
                "crop or pad the images (e.g. 512×512 crops)"
            )

    def encode(self, x: Tensor) -> list[Tensor]:
        """(B, C_in, H, W) → list of stage features (B, C_s, H / r_s, W / r_s), NCHW."""
        self.check_input(x)
        return self.encoder(x)

    def decode(self, feats: Sequence[Tensor], size: Sequence[int]) -> Tensor:
        """Stage features → logits ``(B, K, *size)``."""
        return self.decoder(list(feats), tuple(int(s) for s in size))

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_in, H, W) → logits (B, K, H, W)."""
        return self.decode(self.encode(x), x.shape[-2:])

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, channels={self.channels}, strides={self.strides}"

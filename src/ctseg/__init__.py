"""ctseg: aerial-image semantic segmentation with the Contrastive Transformer (CT) scheme."""

__version__ = "0.1.0"

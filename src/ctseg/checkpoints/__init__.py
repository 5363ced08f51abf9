"""Model files: export a trained model (safetensors), load any ctseg model file for inference
(:mod:`~ctseg.checkpoints.files`: ``load_model``, ``export_model``, ``read_checkpoint``) and export to ONNX
(:mod:`~ctseg.checkpoints.onnx_export`). Every file is read as data (:mod:`ctseg.safety`)."""

from ctseg._exports import lazy

__getattr__, __dir__ = lazy(__name__, ("files", "onnx_export"))

"""Arrays in, arrays out: the sliding-window prediction of a whole image (:mod:`~ctseg.inference.tile`,
``predict_tile``), its settings (:mod:`~ctseg.inference.options`, ``WindowOptions``), its blend weights
(:mod:`~ctseg.inference.blend`), the same prediction streamed by row bands (:mod:`~ctseg.inference.rows`,
``predict_rows``) and the onnxruntime model (:mod:`~ctseg.inference.onnx`).

Public names are importable from here (``from ctseg.inference import predict_tile``), each from its module on
first use."""

from ctseg._exports import lazy

__getattr__, __dir__ = lazy(__name__, ("tile", "options", "rows", "blend", "onnx"))

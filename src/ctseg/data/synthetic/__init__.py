"""The synthetic aerial scenes of the demo and the tests (six ISPRS classes, generated on the fly; no download).

* :mod:`~ctseg.data.synthetic.canvas` — the class indices and the canvas: noise, the ground, roads, shadows and
  the finish;
* :mod:`~ctseg.data.synthetic.scene` — the objects on it and :func:`generate_scene`, one whole scene;
* :mod:`~ctseg.data.synthetic.dataset` — :func:`scene_seed`, :class:`SyntheticAerialDataset` and
  :class:`SyntheticDataModule` (its class path ``ctseg.data.synthetic.SyntheticDataModule``, like
  ``ctseg.data.SyntheticDataModule``, is what configs and ``results.json`` files name).

Names are taken from their module on first use (:func:`ctseg._exports.lazy`): ``generate_scene`` needs numpy only,
the data module Lightning.
"""

from ctseg._exports import lazy

__all__ = [
    "BUILDING", "CAR", "CLUTTER", "IMPERVIOUS", "LOW_VEG", "SPLITS", "TREE", "SyntheticAerialDataset",
    "SyntheticDataModule", "generate_scene", "scene_seed",
]  # fmt: skip

__getattr__, __dir__ = lazy(__name__, ["canvas", "scene", "dataset"])

"""``ctseg predict``, files in, files out: the run (:mod:`~ctseg.predict.run`, ``run_predict``), each input's
outputs start to finish (:mod:`~ctseg.predict.outputs`), its inputs (:mod:`~ctseg.predict.inputs`), checks
(:mod:`~ctseg.predict.plan`), the COG writers (:mod:`~ctseg.predict.write`), the PNG writers
(:mod:`~ctseg.predict.png`: colour, legend, index), the overlay (:mod:`~ctseg.predict.overlay`), the GIS sidecars
and the frame of inputs without georeference (:mod:`~ctseg.predict.gis`), one-line write failures
(:mod:`~ctseg.predict.failures`), all-or-nothing staging of each input's outputs (:mod:`~ctseg.predict.stage`) and
torchrun / SLURM sharding (:mod:`~ctseg.predict.shard`)."""

from ctseg._exports import lazy

__getattr__, __dir__ = lazy(
    __name__,
    ("run", "outputs", "inputs", "plan", "write", "png", "overlay", "gis", "failures", "stage", "shard"),
)

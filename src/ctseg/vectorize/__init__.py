"""Polygons from class maps: ``vectorize_raster`` and the block-merged polygon engine
(:mod:`~ctseg.vectorize.polygons`), outline clean-up and regularised footprints
(:mod:`~ctseg.vectorize.regularize`), and their file I/O (:mod:`~ctseg.vectorize.io`)."""

from ctseg._exports import lazy

__getattr__, __dir__ = lazy(__name__, ("polygons", "regularize", "io"))

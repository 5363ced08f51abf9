"""Polygons from class maps: ``vectorize_raster`` (:mod:`~ctseg.vectorize.polygons`), the block-merged polygon
engine (:mod:`~ctseg.vectorize.blocks`), per-polygon raster statistics (:mod:`~ctseg.vectorize.stats`), outline
clean-up and regularised footprints (:mod:`~ctseg.vectorize.regularize`), and their file I/O
(:mod:`~ctseg.vectorize.io`)."""

from ctseg._exports import lazy

__getattr__, __dir__ = lazy(__name__, ("polygons", "regularize", "io"))

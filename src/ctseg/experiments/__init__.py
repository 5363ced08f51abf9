"""Experiments built on the library: the paper's grid (:mod:`~ctseg.experiments.grid`), the report of a grid
(:mod:`~ctseg.experiments.report`, with its tables and figures), the CPU demo (:mod:`~ctseg.experiments.demo`) and
the shared figure helpers (:mod:`~ctseg.experiments.figures`)."""

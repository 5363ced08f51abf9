"""Built-in data sets, one file each; every module here is imported by :mod:`ctseg.data.registry` and registers
its :class:`~ctseg.data.registry.DatasetSpec`. Add a data set by adding a file (see the registry's docstring)."""

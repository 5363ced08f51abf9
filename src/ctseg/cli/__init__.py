"""The ``ctseg`` command: ``main`` (:mod:`~ctseg.cli.entry`, the console script ``ctseg.cli:main``), one module per
sub-command with its flags and its run (:mod:`~ctseg.cli.demo`, :mod:`~ctseg.cli.prepare`, :mod:`~ctseg.cli.predict`,
:mod:`~ctseg.cli.export`, :mod:`~ctseg.cli.vectorize`, :mod:`~ctseg.cli.grid`, :mod:`~ctseg.cli.report`,
:mod:`~ctseg.cli.evaluate`) and the flags they share (:mod:`~ctseg.cli.flags`). ``fit`` / ``validate`` / ``test``
go to the LightningCLI wiring, which belongs to training (:mod:`~ctseg.training.lightning_cli`)."""

from ctseg._exports import lazy
from ctseg.cli.entry import main

__all__ = ["main"]
__getattr__, __dir__ = lazy(__name__, ("entry",))

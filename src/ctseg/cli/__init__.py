"""The ``ctseg`` command: ``main`` (:mod:`~ctseg.cli.entry`, the console script ``ctseg.cli:main``), one handler per
sub-command (:mod:`~ctseg.cli.commands`), the LightningCLI wiring of ``fit`` / ``validate`` / ``test``
(:mod:`~ctseg.cli.lightning`) and its checks (:mod:`~ctseg.cli.checks`)."""

from ctseg._exports import lazy
from ctseg.cli.entry import main

__all__ = ["main"]
__getattr__, __dir__ = lazy(__name__, ("entry", "commands", "lightning", "checks"))

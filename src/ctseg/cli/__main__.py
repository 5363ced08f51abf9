"""``python -m ctseg.cli …`` (torchrun, SLURM): the ``ctseg`` command."""

from ctseg.cli.entry import main

raise SystemExit(main())

"""Test helpers, importable as ``helpers.*`` (``tests/`` is on pytest's ``pythonpath``): a tiny finished run
(:mod:`helpers.tiny`), generated data sets in each release's layout (``make_*``), evaluation crops put back
together (:mod:`helpers.scored`), CT loss inputs, subprocess fits and their logs, and the repository's paths
(:mod:`helpers.paths`)."""

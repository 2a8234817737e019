"""The top layer: the ``turnwise`` command line (:mod:`cli.main`) and the client tools (replay)."""

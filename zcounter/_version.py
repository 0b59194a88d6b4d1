"""zcounter's version, in one place: read by the package (``zcounter.__version__``), every
command's ``--version``, the node (INFO, metrics), the simulator, the fuzzers, the
benchmark, and by setuptools at build time (pyproject.toml, ``[tool.setuptools.dynamic]``,
which reads this file without importing the package).  It imports nothing, so whatever
reads it loads neither the client nor zmq."""

__version__ = "0.2.0"

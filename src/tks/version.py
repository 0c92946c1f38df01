"""The version of tks: the one place it is written (``tks.__version__`` and pyproject.toml read it from here).

A module that imports nothing, so that whatever records the version (provenance, NIR metadata) can import it
without importing the package's other modules.
"""

__version__ = "0.1.0"

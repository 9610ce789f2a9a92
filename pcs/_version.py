"""The version of pcs, in one place (``pcs.__version__`` re-exports it)."""

__version__ = "0.1.0"

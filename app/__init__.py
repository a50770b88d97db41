"""digitsum's HTTP service: POST an image and a number, get the digit and the network's sum."""

__version__ = "1.0.0"  # the one place the version is written (pyproject.toml reads it)

"""builder: build, check and version the data that makes language models safer."""

__version__ = "0.1.0"

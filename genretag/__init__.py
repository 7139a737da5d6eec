"""genretag: multi-label music genre tagging with a CRNN."""

__version__ = "0.1.0"

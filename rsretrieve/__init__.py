"""rsretrieve: multi-sensor remote-sensing scene retrieval."""

__version__ = "0.1.0"

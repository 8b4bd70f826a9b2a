"""A local HTTP query service over a workspace: ``create_app(workspace)`` (run it with ``rsretrieve serve``)."""

from rsretrieve.serve.app import create_app

__all__ = ["create_app"]

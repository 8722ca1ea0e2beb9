"""Lightning callbacks: thin layers over the plain-torch engine."""

from faig_lightning.callbacks.attribution import AttributionCallback

__all__ = ["AttributionCallback"]

"""Lightning callbacks: thin layers over the plain-torch engine."""

from faig_lightning.callbacks.attribution import AttributionCallback
from faig_lightning.callbacks.ema import ForeachEMA

__all__ = ["AttributionCallback", "ForeachEMA"]

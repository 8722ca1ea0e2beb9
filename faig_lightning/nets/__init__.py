"""Super-resolution networks: one file per architecture."""

from faig_lightning.nets.build import build_net
from faig_lightning.nets.msrresnet import MSRResNet
from faig_lightning.nets.srcnn_style import SRCNNStyle
from faig_lightning.nets.swinir import SwinIR

__all__ = ["MSRResNet", "SRCNNStyle", "SwinIR", "build_net"]

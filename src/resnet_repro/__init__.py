"""Reproduction of He et al., Deep Residual Learning for Image Recognition (CVPR 2016)."""

__version__ = "0.1.0"

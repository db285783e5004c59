"""Mask estimators: the subband kernel machine, the DNN baseline, and their on-disk format."""

"""The shared core: data and datasets, backbones and their cuts, FLOPs, timing, the feature cache,
trainer checkpoints and the method protocol. Imports only the projector library.
"""

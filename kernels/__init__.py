"""Triton kernels for the message-passing hot path (installed as ``equimol.kernels``)."""

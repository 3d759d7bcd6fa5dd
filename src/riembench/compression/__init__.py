"""Compression of networks and matrices: graph analysis, fake quantization, packed layer formats and the methods."""

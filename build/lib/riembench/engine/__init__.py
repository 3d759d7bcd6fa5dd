"""The data-free fitting engine: RieM and Lp-norm embeddings, the one fitting loop, starts and shared solves."""

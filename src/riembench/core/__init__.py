"""The bottom layer: errors, the registry type, input validation, file digests and atomic writes; imports nothing of riembench."""

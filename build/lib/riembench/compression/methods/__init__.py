"""The compression methods, one module each behind the interfaces of ``base`` (declared, with
their settings, in :mod:`riembench.config.methods`)."""

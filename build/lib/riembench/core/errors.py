"""Errors that carry a message a user can act on; the runner records them instead of crashing a sweep."""


class RiembenchError(Exception):
    """Base class: anything the user can fix by changing config, paths or inputs."""


class UnknownEntry(RiembenchError, KeyError):
    """A registry lookup failed; the message lists the names that exist."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class ImpossibleBudget(RiembenchError, ValueError):
    """A size target that no setting of the method can meet (raised before any fitting)."""


class FitDiverged(RiembenchError, RuntimeError):
    """Every seed of a fit went non-finite."""

"""The protocols: what a method may see while it compresses (docs/protocols.md).

Each protocol checks that a cell can follow it (before any claim or work) and gives the method
what it may read beyond the weights. ``strict``: nothing; ``dev_guided``: a dev-split scorer for
choosing between a fit's checkpoints. Neither ever reads the test split.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from riembench.config.choices import TaskKind
from riembench.config.methods import METHODS, MethodConfig
from riembench.core.errors import RiembenchError

if TYPE_CHECKING:  # the run's objects, imported by the runner; this module stays torch-free
    from riembench.compression.methods.base import DevGuide
    from riembench.harness.cell import Cell
    from riembench.harness.evaluate import Evaluator


class Protocol:
    """Strict: the fit sees the weights only; dev only ranks the finished seeds."""

    name = "strict"

    def check(self, cell: Cell) -> None:
        """Refuse a cell that cannot follow this protocol (raises RiembenchError)."""

    def dev_guide(self, cell: Cell, evaluator: Evaluator) -> DevGuide | None:
        """What the method may score checkpoints with (None: nothing)."""
        return None


class DevGuided(Protocol):
    """The paper's reading: every ``protocol.every`` fit steps each seed's network is rebuilt as
    stored and scored on the dev split, and each seed keeps its best-dev state."""

    name = "dev_guided"

    def check(self, cell: Cell) -> None:
        if cell.dataset.kind != TaskKind.network:
            raise RiembenchError(f"protocol={self.name} needs a network and its dev split; a "
                                 "matrix task (table 5) is fitted under protocol=strict")
        if not cell.method.has_checkpoints:
            with_checkpoints = [n for n in METHODS.names() if _has_checkpoints(n)]
            raise RiembenchError(f"protocol={self.name} chooses between a fit's checkpoints; "
                                 f"method '{cell.method.name}' has none (use protocol=strict; "
                                 "methods with checkpoints: " + ", ".join(with_checkpoints) + ")")

    def dev_guide(self, cell: Cell, evaluator: Evaluator) -> DevGuide | None:
        from riembench.compression.methods.base import DevGuide

        stop_at = (evaluator.score(evaluator.original, "dev") if cell.protocol.stop_at_original
                   else None)
        return DevGuide(score=lambda model: evaluator.score(model, "dev"),
                        every=cell.protocol.every, stop_at=stop_at)


def _has_checkpoints(name: str) -> bool:
    schema = METHODS.schema(name)
    return isinstance(schema, type) and issubclass(schema, MethodConfig) and schema.has_checkpoints


STRICT = Protocol()
DEV_GUIDED = DevGuided()

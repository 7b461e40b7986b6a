"""The deploy gate's robustness requirements, read from the policy's own data.

``policies/data/provenance.json`` is the one place the thresholds are written: the
provenance policy reads it as ``data.data.provenance.requirements``, and every caller of
the gate (the service start, the Pulumi program) reads it through :func:`load_requirements`
and passes the requirements in the policy input, overriding only what its configuration
sets.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.gate.errors import GateUnavailableError
from service.toolchain.paths import POLICIES_DIR

REQUIREMENTS_FILE = POLICIES_DIR / "data" / "provenance.json"


@dataclass(frozen=True)
class Requirements:
    """What a trusted robustness evaluation must show for a model to deploy.

    Attributes:
        min_robust_accuracy: Lowest robust accuracy accepted, in [0, 1].
        epsilon: The smallest L-inf attack budget the evaluation may have used.
        attack: The attack the evaluation must have used (``worst-case``: per example the
            worst of PGD and AutoAttack).
        min_steps: Fewest PGD steps accepted.
        min_restarts: Fewest PGD random restarts accepted.
    """

    min_robust_accuracy: float
    epsilon: float
    attack: str
    min_steps: int
    min_restarts: int

    def to_input(self) -> dict[str, Any]:
        """The ``requirements`` object of the provenance policy's input."""
        return {
            "min_robust_accuracy": self.min_robust_accuracy,
            "epsilon": self.epsilon,
            "attack": self.attack,
            "min_steps": self.min_steps,
            "min_restarts": self.min_restarts,
        }


def load_requirements(path: Path = REQUIREMENTS_FILE) -> Requirements:
    """Read the requirements of ``policies/data/provenance.json``.

    Raises:
        GateUnavailableError: the file is missing or its requirements are malformed.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        raw = data["provenance"]["requirements"]
        accuracy, epsilon = raw["min_robust_accuracy"], raw["epsilon"]
        attack, steps, restarts = raw["attack"], raw["min_steps"], raw["min_restarts"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise GateUnavailableError(
            f"Cannot read the deploy-gate requirements from {path} ({type(err).__name__}: "
            f"{err}); it must hold provenance.requirements."
        ) from None
    numbers = (accuracy, epsilon)
    if (
        not all(isinstance(n, int | float) and not isinstance(n, bool) for n in numbers)
        or not isinstance(attack, str)
        or not all(isinstance(n, int) and not isinstance(n, bool) for n in (steps, restarts))
    ):
        raise GateUnavailableError(
            f"The requirements in {path} are malformed: min_robust_accuracy and epsilon must "
            "be numbers, attack a string, min_steps and min_restarts integers."
        )
    return Requirements(float(accuracy), float(epsilon), attack, steps, restarts)

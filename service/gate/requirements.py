"""The deploy gate's robustness requirements, read from the policy's own data.

``policies/data/provenance.json`` is the one place the thresholds are written: the
provenance policy reads it as ``data.data.provenance.requirements``, and every caller of
the gate (the service start, the Pulumi program) reads it through :func:`load_requirements`
and passes the requirements in the policy input, overriding only what its configuration
sets.

The requirements are per input modality: default requirements, and for each modality the
fields it overrides (``by_modality``). Robustness is measured in unit space, epsilon a
fraction of each feature's declared range, and moving every feature of a tabular row by
10 % of its range at once is a far larger change than moving every pixel of an image by
10 % of its intensity, so a modality may be held to its own epsilon.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, get_args

from service.gate.errors import GateUnavailableError
from service.toolchain.paths import POLICIES_DIR

REQUIREMENTS_FILE = POLICIES_DIR / "data" / "provenance.json"

#: The input modalities of a model contract (``service.model.contract.Modality``, not
#: imported: the gate runs where the model code's dependencies are not needed).
Modality = Literal["image", "tabular"]
MODALITIES: tuple[Modality, ...] = get_args(Modality)

#: The fields a modality may override.
FIELDS = ("min_robust_accuracy", "epsilon", "attack", "min_steps", "min_restarts")

Override = Mapping[str, float | int | str]


@dataclass(frozen=True)
class Requirements:
    """What a trusted robustness evaluation must show for a model to deploy.

    Attributes:
        min_robust_accuracy: Lowest robust accuracy accepted, in [0, 1].
        epsilon: The smallest L-inf attack budget the evaluation may have used, as a
            fraction of each feature's declared range (unit space).
        attack: The attack the evaluation must have used (``worst-case``: per example the
            worst of PGD and AutoAttack).
        min_steps: Fewest PGD steps accepted.
        min_restarts: Fewest PGD random restarts accepted.
        by_modality: For each input modality, the fields it overrides (e.g.
            ``{"tabular": {"epsilon": 0.05}}``); a modality without an entry, or with an
            empty one, is held to the fields above.
    """

    min_robust_accuracy: float
    epsilon: float
    attack: str
    min_steps: int
    min_restarts: int
    by_modality: Mapping[Modality, Override] = field(default_factory=dict)

    def for_modality(self, modality: Modality) -> Requirements:
        """The requirements a model of ``modality`` is held to (no ``by_modality``)."""
        merged = {**self._defaults(), **self.by_modality.get(modality, {})}
        return _checked(merged, "requirements")

    def to_input(self) -> dict[str, Any]:
        """The ``requirements`` object of the provenance policy's input."""
        return {
            **self._defaults(),
            "by_modality": {m: dict(o) for m, o in sorted(self.by_modality.items())},
        }

    def _defaults(self) -> dict[str, Any]:
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
        raw = json.loads(path.read_text(encoding="utf-8"))["provenance"]["requirements"]
        defaults = {name: raw[name] for name in FIELDS}
        by_modality = raw.get("by_modality", {})
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise GateUnavailableError(
            f"Cannot read the deploy-gate requirements from {path} ({type(err).__name__}: "
            f"{err}); it must hold provenance.requirements."
        ) from None
    requirements = _checked(defaults, str(path))
    if not isinstance(by_modality, dict) or not all(
        modality in MODALITIES and isinstance(override, dict) and set(override) <= set(FIELDS)
        for modality, override in by_modality.items()
    ):
        raise GateUnavailableError(
            f"The requirements in {path} are malformed: by_modality must map a modality "
            f"({', '.join(MODALITIES)}) to an object of the fields it overrides "
            f"({', '.join(FIELDS)})."
        )
    for modality, override in by_modality.items():
        _checked({**defaults, **override}, f"{path} (by_modality.{modality})")
    return replace(requirements, by_modality=by_modality)


def _checked(raw: Mapping[str, Any], where: str) -> Requirements:
    """Requirements of well-typed values, or an error naming ``where``."""
    accuracy, epsilon = raw["min_robust_accuracy"], raw["epsilon"]
    attack, steps, restarts = raw["attack"], raw["min_steps"], raw["min_restarts"]
    if (
        not all(isinstance(n, int | float) and not isinstance(n, bool) for n in (accuracy, epsilon))
        or not isinstance(attack, str)
        or not all(isinstance(n, int) and not isinstance(n, bool) for n in (steps, restarts))
    ):
        raise GateUnavailableError(
            f"The requirements in {where} are malformed: min_robust_accuracy and epsilon "
            "must be numbers, attack a string, min_steps and min_restarts integers."
        )
    return Requirements(float(accuracy), float(epsilon), attack, steps, restarts)

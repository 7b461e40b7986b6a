"""Training and evaluation settings per defense and profile.

Profiles: ``full`` (the reported numbers), ``fast`` (what the local stack trains on first
run: still meets the clean >= 95% / robust >= 80% at eps 0.1 targets for ``pgd``) and
``tiny`` (seconds; for smoke tests only, makes no accuracy promise). ``fast`` and ``full``
evaluate with the defaults of :class:`EvalConfig`; ``tiny`` evaluates with 10 PGD steps, one
restart and no AutoAttack, which the deploy gate refuses.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal, get_args

from service.model.errors import TrainingError
from service.model.net import DEFAULT_HIDDEN

Defense = Literal["none", "pgd", "trades", "distill"]
Profile = Literal["tiny", "fast", "full"]
DEFENSES: tuple[Defense, ...] = get_args(Defense)
PROFILES: tuple[Profile, ...] = get_args(Profile)
EPSILONS: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3)


@dataclass(frozen=True)
class EvalConfig:
    """How robustness is measured: PGD steps and restarts at each epsilon, and AutoAttack.

    The defaults meet the deploy gate's minimum (``policies/data/provenance.json``: 100
    PGD steps, 10 restarts, and the worst case over PGD and AutoAttack).
    """

    epsilons: tuple[float, ...] = EPSILONS
    steps: int = 100
    restarts: int = 10
    autoattack: bool = True
    seed: int = 7


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run (recorded as hyperparameters)."""

    defense: Defense
    profile: Profile
    hidden: tuple[int, ...] = DEFAULT_HIDDEN
    epochs: int = 40
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.0
    train_eps: float = 0.0
    train_steps: int = 7
    eps_warmup_epochs: int = 0
    trades_beta: float = 6.0
    temperature: float = 1.0
    teacher_epochs: int = 0
    seed: int = 1234
    eval: EvalConfig = field(default_factory=EvalConfig)

    def hyperparameters(self) -> dict[str, Any]:
        """Return the settings as a JSON-ready dict (for metrics.json and the ledger)."""
        params = asdict(self)
        params["hidden"] = list(self.hidden)
        params["eval"] = {**params["eval"], "epsilons": list(self.eval.epsilons)}
        params["optimizer"] = "adam"
        params["schedule"] = "one-cycle"
        return params


_BASE: dict[Profile, dict[str, Any]] = {
    "tiny": {"epochs": 15, "eval": EvalConfig(steps=10, restarts=1, autoattack=False)},
    "fast": {"epochs": 30, "eval": EvalConfig()},
    "full": {"epochs": 60, "eval": EvalConfig()},
}

_WIDE = (512, 512, 512)

_DEFENSE: dict[Defense, dict[Profile, dict[str, Any]]] = {
    "none": {"tiny": {}, "fast": {"epochs": 40}, "full": {}},
    "pgd": {
        "tiny": {"train_eps": 0.15, "train_steps": 3},
        "fast": {"train_eps": 0.15, "train_steps": 5, "eps_warmup_epochs": 3},
        "full": {"hidden": _WIDE, "train_eps": 0.2, "train_steps": 10, "eps_warmup_epochs": 10},
    },
    "trades": {
        "tiny": {"train_eps": 0.15, "train_steps": 3},
        "fast": {"train_eps": 0.15, "train_steps": 5, "eps_warmup_epochs": 3},
        "full": {"hidden": _WIDE, "train_eps": 0.2, "train_steps": 10, "eps_warmup_epochs": 10},
    },
    "distill": {
        "tiny": {"temperature": 50.0, "teacher_epochs": 15},
        "fast": {"temperature": 50.0, "epochs": 40, "teacher_epochs": 40},
        "full": {"temperature": 50.0, "teacher_epochs": 60},
    },
}


def config_for(defense: str, profile: str, **overrides: Any) -> TrainConfig:
    """Return the settings for a defense and profile, with optional field overrides.

    Args:
        defense: One of ``none``, ``pgd``, ``trades``, ``distill``.
        profile: One of ``tiny``, ``fast``, ``full``.
        **overrides: TrainConfig fields to change (for experiments and tests).

    Returns:
        The training configuration.

    Raises:
        TrainingError: On an unknown defense, profile or field.
    """
    if defense not in DEFENSES:
        raise TrainingError(f"unknown defense {defense!r}; choose one of {', '.join(DEFENSES)}")
    if profile not in PROFILES:
        raise TrainingError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    base = TrainConfig(defense=defense, profile=profile)
    try:
        config = replace(base, **{**_BASE[profile], **_DEFENSE[defense][profile]})
        return replace(config, **overrides)
    except TypeError as exc:
        raise TrainingError(f"invalid training setting: {exc}") from exc

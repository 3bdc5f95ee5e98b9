"""The one study config: typed, strict, loaded from YAML plus ``--set key.path=value`` overrides.

``load(path, overrides)`` returns a `StudyConfig`. Unknown keys, wrong types and bad values fail
with a `ConfigError` whose message starts with the key path (``training.lr: expected float,
got 'fast'``). ``model.params`` is validated against the config class of the model named by
``model.name`` in the `MODELS` registry, with the same rules.

Types accepted from YAML: ``int`` (not bool), ``float`` (ints, and strings such as ``1e-3`` that
YAML 1.1 leaves as strings, are converted), ``str``, ``bool``, ``Literal``, ``Optional``,
``list[...]``, ``dict[str, ...]`` and nested dataclasses.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from robustmsa.errors import ConfigError

# ---------------------------------------------------------------------------------------------
# Sections


def refuse_credentials(key: str, value: str | None) -> None:
    """ValueError when the URI ``value`` carries a password (``scheme://user:secret@host``):
    a config's values are logged as run parameters and artifacts, a password must not be.
    Credentials come from the environment (``MLFLOW_TRACKING_USERNAME`` and
    ``MLFLOW_TRACKING_PASSWORD``, ``MLFLOW_TRACKING_TOKEN``, the storage's own)."""
    if value and "://" in value:
        from urllib.parse import urlsplit

        try:
            password = urlsplit(value).password
        except ValueError:  # a malformed netloc: not this check's business
            return
        if password is not None:
            raise ValueError(
                f"{key}: holds a password; give credentials through the environment "
                "(MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD, the storage's own), "
                "never in the config, whose values are logged"
            )


@dataclass
class DataConfig:
    """Where the dataset comes from.

    ``source: synthetic`` generates ``preset`` with ``seed`` under ``cache_dir`` on first use;
    ``source: parquet`` reads the dataset directory ``path`` (train/valid/test.parquet).
    """

    source: Literal["synthetic", "parquet"] = "synthetic"
    path: str | None = None
    preset: str = "tiny"
    seed: int = 0
    cache_dir: str = ".robustmsa/data"

    def __post_init__(self) -> None:
        if self.source == "parquet" and not self.path:
            raise ValueError("path: required when source is 'parquet'")
        refuse_credentials("path", self.path)


@dataclass
class ModelConfig:
    """The model to train: a name in `MODELS` and its parameters (validated by its class)."""

    name: str = "qa_moe"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainingConfig:
    """The training loop.

    ``backend``: ``in_process`` runs a single-worker trial inside the Tune trial process;
    ``torch_trainer`` runs it through a Ray Train ``TorchTrainer`` (DDP over ``num_workers``);
    ``auto`` picks ``in_process`` for one CPU worker and ``torch_trainer`` otherwise (the
    per-trial overhead measured in ``benchmarks/trial_overhead.py`` decides this default).

    ``weight_average``: the decay of the moving average of the weights that validation,
    selection and the best checkpoint use (`robustmsa.training.weight_average`; 0.9 averages
    over roughly the last ten steps once its warm-up is over); 0 (the default): the raw
    weights, as trained.

    ``target_link``: what the models learn in place of the labels (`robustmsa.models.base`):
    ``standardise`` (the default) the labels standardised with the training split's mean and
    standard deviation; ``normal_score`` then their normal scores under the training labels'
    distribution, predictions mapped back through its quantiles (`robustmsa.models.target_link`).

    ``lr_schedule``: ``constant`` (the default) trains at ``lr`` throughout; ``cosine`` anneals
    it towards 0 over each training stage's planned epochs, step by step
    (`robustmsa.training.lr_schedule`).
    """

    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    patience: int = 3
    seed: int = 0
    num_workers: int = 1
    use_gpu: bool = False
    backend: Literal["auto", "in_process", "torch_trainer"] = "auto"
    # bf16: each training step's forward runs under torch.autocast(bfloat16) on the training
    # device (the weights, the optimizer and every evaluation stay float32).
    precision: Literal["fp32", "bf16"] = "fp32"
    weight_average: float = 0.0
    target_link: Literal["standardise", "normal_score"] = "standardise"
    lr_schedule: Literal["constant", "cosine"] = "constant"

    def __post_init__(self) -> None:
        if not 0.0 <= self.weight_average < 1.0:  # also refuses NaN
            raise ValueError(f"weight_average: must be in [0, 1), got {self.weight_average}")
        for name in ("epochs", "batch_size", "num_workers"):
            if getattr(self, name) < (0 if name == "epochs" else 1):
                raise ValueError(f"{name}: must be positive, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr: must be > 0, got {self.lr}")
        if self.patience < 1:
            raise ValueError(f"patience: must be >= 1, got {self.patience}")


@dataclass
class SpectrumConfig:
    """Corruption at training time and the validation spectrum.

    Training (``sampler``, see `robustmsa.spectrum.sampler`; every parameter a flat key, so a
    search can name it): ``continuous`` (QA-MoE) draws ``λ, η ~ U(0, 1)`` per sample and
    modality with probability ``p_corrupt``, then drops whole modalities with probability
    ``p_drop``; ``rates`` (LNLN) keeps ``clean_fraction`` of the samples clean and gives the
    others per-modality rates ``r ~ U(0, 1)`` on ``rates_axis``; ``patterns`` (MPLMM) gives a
    sample one of the incomplete availability patterns with probability ``p_pattern``;
    ``mixture`` picks one of those three per sample by ``mixture_weights`` (name -> weight >= 0,
    left-out names weigh 0); ``fixed`` puts every sample at ``(fixed_noise, fixed_missing)`` (the
    per-rate specialists of TFR-Net / EMT-DLFR). Evaluation: ``protocols`` on the validation
    split every epoch, ``report_protocols`` on the test split once per finished trial, both
    corrupted deterministically from ``eval_seed``.
    """

    sampler: Literal["continuous", "rates", "patterns", "fixed", "mixture"] = "continuous"
    p_corrupt: float = 1.0
    p_drop: float = 0.1
    clean_fraction: float = 0.5
    rates_axis: Literal["missing", "noise", "both"] = "missing"
    p_pattern: float = 0.7
    fixed_noise: float = 0.0
    fixed_missing: float = 0.0
    mixture_weights: dict[str, float] = field(
        default_factory=lambda: {"continuous": 1.0, "rates": 1.0, "patterns": 1.0}
    )
    # Every epoch's validation: the all-modality curves (cheap); `missing` alone would add the
    # per-modality curves (4x the points).
    protocols: list[str] = field(default_factory=lambda: ["clean", "missing@all", "noise@all"])
    # The one test evaluation of a finished trial reports the whole spectrum, the λ x η grid
    # (heat maps) included.
    report_protocols: list[str] = field(
        default_factory=lambda: ["clean", "missing", "noise", "joint", "patterns", "random", "grid"]
    )
    eval_seed: int = 0

    def __post_init__(self) -> None:
        for name in (
            "p_corrupt",
            "p_drop",
            "clean_fraction",
            "p_pattern",
            "fixed_noise",
            "fixed_missing",
        ):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name}: must be in [0, 1], got {getattr(self, name)}")
        from robustmsa.spectrum.sampler import check_mixture_weights

        check_mixture_weights(self.mixture_weights)  # says "mixture_weights.<name>: ..."
        from robustmsa.spectrum.protocols import check_protocol_names

        for name in ("protocols", "report_protocols"):
            try:
                check_protocol_names(getattr(self, name))
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from exc


# Roles the study itself gives: the reference model, the Bayes oracle and the constant predictor
# (the floor, `robustmsa.evaluation.floor.FLOOR`) of the comparison.
RESERVED_ROLES = frozenset({"reference", "oracle", "constant"})
_ROLE_NAME = re.compile(r"[A-Za-z0-9_.\-]+")


def check_role(role: str, path: str) -> None:
    """A variant's role names MLflow metrics (``compare/<split>/<role>/...``) and a run tag."""
    if not _ROLE_NAME.fullmatch(role) or role in RESERVED_ROLES:
        raise ValueError(
            f"{path}: a role is letters, digits, '_', '-' or '.', and not one of "
            f"{sorted(RESERVED_ROLES)}"
        )


@dataclass
class ParamSpace:
    """One searched parameter, named by its config key path.

    ``type``: ``int`` / ``float`` over ``[low, high]`` (``log`` for a log scale) or
    ``categorical`` over ``choices``. ``high`` may name an earlier searched parameter (for
    example ``top_k`` up to ``model.params.num_experts``).
    """

    name: str
    type: Literal["int", "float", "categorical"]
    low: float | None = None
    high: float | str | None = None
    log: bool = False
    choices: list[Any] | None = None

    def __post_init__(self) -> None:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("choices: required for a categorical parameter")
        elif self.low is None or self.high is None:
            raise ValueError(f"low: {self.type} parameter {self.name!r} needs low and high")


@dataclass
class StudySection:
    """How a study runs, whatever its kind. ``kind``: a registered study kind
    (`robustmsa.search.kinds`: ``search``, ``per_rate``, ``one_checkpoint_for_all``,
    ``compare_models``, ``confirm``); its own settings are the top-level section named after
    it (``search:``, ``per_rate:``, ...). ``reference_model`` (a registered model name, or
    null) is trained at its default parameters: the baseline of effective robustness.

    Resources (`robustmsa.search.resources`): each training worker of a trial holds
    ``cpus_per_trial`` CPUs and ``gpus_per_trial`` GPUs (a fraction shares a GPU; null: 1 when
    ``training.use_gpu``, else 0); ``max_concurrent`` is a number of trials or ``auto``: as
    many as the cluster's resources, and what its autoscaler may add, can hold at once.
    ``storage_path``: where Ray Tune writes results and checkpoints, a local path or a URI of
    any ``pyarrow.fs`` filesystem (``s3://``, ``gs://``, ``file://``) that every node reaches.

    ``max_failures``: how often a trial that lost its process, worker or node (or raised) is
    restarted from its last checkpoint before it counts as failed (Tune's and Ray Train's
    ``FailureConfig``); its run records each restart (``robustmsa.restarts``).
    """

    kind: str = "search"
    reference_model: str | None = "late_fusion"
    max_concurrent: int | Literal["auto"] = 2
    cpus_per_trial: float = 1.0
    gpus_per_trial: float | None = None
    storage_path: str | None = None  # Ray Tune results (path or URI); None: .robustmsa/ray_results
    max_failures: int = 2

    def __post_init__(self) -> None:
        refuse_credentials("storage_path", self.storage_path)
        if self.max_failures < 0:
            raise ValueError(f"max_failures: must be >= 0, got {self.max_failures}")
        if self.max_concurrent != "auto" and self.max_concurrent < 1:
            raise ValueError(f"max_concurrent: must be >= 1, got {self.max_concurrent}")
        if self.cpus_per_trial <= 0:
            raise ValueError(f"cpus_per_trial: must be > 0, got {self.cpus_per_trial}")
        gpus = self.gpus_per_trial
        if gpus is not None and (gpus < 0 or (gpus > 1 and gpus != int(gpus))):
            # Ray schedules a GPU fraction (several trials share one) or whole GPUs, not 1.5.
            raise ValueError(
                f"gpus_per_trial: must be a fraction in [0, 1] or a whole number, got {gpus}"
            )
        if self.reference_model is not None:
            from robustmsa.models import MODELS

            if self.reference_model not in MODELS:
                raise ValueError(
                    f"reference_model: unknown model {self.reference_model!r} "
                    f"(known: {sorted(MODELS)})"
                )


@dataclass
class EvaluationConfig:
    """What a search study evaluates beyond each epoch's validation (`robustmsa.search.
    study_evaluation`). A pruned trial ends with what it logged while training; a completed one
    gets its best epoch's validation spectrum; the oracle is computed once per split and logged
    on the parent run; figures are drawn for the selected trial and the reference model
    (``robustmsa report --run-id RUN`` draws any other run's).

    ``test_policy``: ``selected`` evaluates the test split once per study, after the search,
    for the trial selected on validation and for the reference model (no other trial ever sees
    test); ``completed`` evaluates every completed trial on test in its finishing task (the
    earlier behaviour: a test report per completed trial). Comparison studies (``per_rate``,
    ``one_checkpoint_for_all``, ``compare_models``) report every variant on test either way.
    """

    test_policy: Literal["selected", "completed"] = "selected"


@dataclass
class TrackingConfig:
    """MLflow. ``uri`` None: ``MLFLOW_TRACKING_URI`` if set, else ``sqlite:///mlruns.db``."""

    uri: str | None = None
    experiment: str = "robustmsa"

    def __post_init__(self) -> None:
        refuse_credentials("uri", self.uri)


@dataclass
class StudyConfig:
    name: str = "study"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    spectrum: SpectrumConfig = field(default_factory=SpectrumConfig)
    study: StudySection = field(default_factory=StudySection)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    # The section of ``study.kind`` (the top-level key named after the kind), built from that
    # kind's section class at load time (`_build_study`); not a key of its own.
    kind_section: Any = field(default=None, metadata={"derived": True})

    def model_params(self) -> Any:
        """``model.params`` as the registered model's validated config instance."""
        from robustmsa.models import MODELS

        spec = MODELS.get(self.model.name)
        if spec is None:
            raise ConfigError(
                f"model.name: unknown model {self.model.name!r} (known: {sorted(MODELS)})"
            )
        return build(spec.config_cls, self.model.params, "model.params")

    def to_dict(self) -> dict[str, Any]:
        """The config as YAML would hold it: the kind's section under the kind's name."""
        raw = dataclasses.asdict(self)
        section = raw.pop("kind_section")
        if section is not None:
            raw[self.study.kind] = section
        return raw


# ---------------------------------------------------------------------------------------------
# Strict construction


def _type_name(tp: Any) -> str:
    """``int | Literal['auto']`` -> ``int or 'auto'`` (None left out: it is always allowed)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp) if a is not type(None))
    if origin is Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(arg, value, path)
            except ConfigError:
                continue
        raise ConfigError(f"{path}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{path}: expected one of {list(args)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        return build(tp, value, path)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        return [_convert(args[0], v, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        return {str(k): _convert(args[1], v, f"{path}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected bool, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected int, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{path}: expected float, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads `1e-3` as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{path}: expected float, got {value!r}")
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected str, got {value!r}")
        return value
    raise TypeError(f"{path}: unsupported config type {tp!r}")  # a bug in a config class


def build(cls: type, raw: Any, path: str = "") -> Any:
    """An instance of dataclass ``cls`` from the mapping ``raw``, strictly checked.

    ``path`` prefixes every error message (``training`` -> ``training.lr: ...``).
    """
    prefix = f"{path}." if path else ""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path or '<root>'}: expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls) if not f.metadata.get("derived")}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{prefix}{unknown[0]}: unknown key (known: {sorted(known)})")
    kwargs = {k: _convert(hints[k], v, f"{prefix}{k}") for k, v in raw.items()}
    missing = [
        f.name
        for f in dataclasses.fields(cls)
        if f.name not in kwargs
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{prefix}{missing[0]}: required key missing")
    try:
        return cls(**kwargs)
    except ValueError as exc:  # __post_init__ checks say "<field>: <problem>"
        raise ConfigError(f"{prefix}{exc}") from exc


# ---------------------------------------------------------------------------------------------
# Loading and overrides


def parse_override(text: str) -> tuple[str, Any]:
    """``"a.b=value"`` -> ``("a.b", value)`` with the value read as YAML (``3`` is an int)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"{text}: an override must look like key.path=value")
    try:
        return key.strip(), yaml.safe_load(value)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{key}: value {value!r} is not valid YAML ({exc})") from exc


def set_path(raw: dict[str, Any], key: str, value: Any) -> None:
    """Set ``raw[a][b][c] = value`` for ``key = "a.b.c"``, creating mappings on the way."""
    node = raw
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{'.'.join(parts[: i + 1])}: is a value, not a section")
        node = child
    node[parts[-1]] = value


def from_dict(raw: dict[str, Any], overrides: dict[str, Any] | None = None) -> StudyConfig:
    """A validated `StudyConfig` from a raw mapping plus ``{key.path: value}`` overrides."""
    raw = copy.deepcopy(raw) if raw else {}
    for key, value in (overrides or {}).items():
        set_path(raw, key, value)
    return _build_study(raw)


# Keys of the study section that sat in ``search:`` before study kinds had sections of their own.
_MOVED_TO_STUDY = (
    "kind", "reference_model", "max_concurrent", "cpus_per_trial", "gpus_per_trial",
    "storage_path",
)  # fmt: skip
_MOVED_TO_KIND = {"per_rate_axis": "per_rate.axis", "levels": "per_rate.levels",
                  "models": "compare_models.models"}  # fmt: skip


def _check_moved_keys(raw: dict[str, Any]) -> None:
    """A config written for the layout before study kinds: say where each key went."""
    old = raw.get("search")
    if not isinstance(old, dict):
        return
    for key in old:
        if key in _MOVED_TO_STUDY:
            raise ConfigError(f"search.{key}: moved to study.{key} (docs/study_kinds.md)")
        if key in _MOVED_TO_KIND:
            raise ConfigError(
                f"search.{key}: moved to {_MOVED_TO_KIND[key]} (the section of the study kind; "
                "docs/study_kinds.md)"
            )


def _build_study(raw: dict[str, Any]) -> StudyConfig:
    """The config with the section of its study kind, checked as that kind requires, before
    anything runs (`robustmsa.search.kinds`)."""
    from robustmsa.search.kinds import KINDS

    _check_moved_keys(raw)
    sections = {name: raw.pop(name) for name in list(raw) if name in KINDS}
    config = build(StudyConfig, raw)
    kind = KINDS.get(config.study.kind)
    if kind is None:
        raise ConfigError(
            f"study.kind: unknown study kind {config.study.kind!r} (known: {sorted(KINDS)})"
        )
    for name in sections:
        if name != kind.name:
            raise ConfigError(
                f"{name}: the section of study kind {name!r}, but study.kind is {kind.name!r}"
            )
    config.model_params()  # validates model.name and model.params now, not in a trial
    config.kind_section = build(kind.section, sections.get(kind.name), kind.name)
    kind.check(config)
    gpus = config.study.gpus_per_trial
    if gpus and not config.training.use_gpu:
        raise ConfigError(
            f"study.gpus_per_trial: {gpus} GPUs per trial needs training.use_gpu: true"
        )
    return config


def load(path: str | Path, overrides: list[str] | None = None) -> StudyConfig:
    """Load the YAML study config ``path`` and apply ``--set`` style ``overrides``."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc.strerror})") from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: malformed YAML ({exc})".replace("\n", " ")) from exc
    if raw is None:
        # An empty file would otherwise run the whole default study without a word.
        raise ConfigError(f"{path}: empty config (a study config names at least its model)")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    parsed = dict(parse_override(o) for o in overrides or [])
    try:
        return from_dict(raw, parsed)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc

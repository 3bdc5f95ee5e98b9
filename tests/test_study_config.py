"""The strict study config: YAML + overrides, key paths in every error."""

from __future__ import annotations

import pytest
from paths import REPO
from robustmsa.config import StudyConfig, from_dict, load
from robustmsa.errors import ConfigError

STUDY_YAML = REPO / "studies" / "configs" / "qa_moe_search.yaml"


def test_study_yaml_loads_with_typed_sections():
    config = load(STUDY_YAML)
    assert isinstance(config, StudyConfig)
    assert config.model.name == "qa_moe"
    assert config.training.lr == pytest.approx(1e-3)
    assert [p.name for p in config.kind_section.space][:2] == [
        "model.params.num_experts",
        "model.params.top_k",
    ]
    assert config.model_params().hidden == 64


def test_every_study_yaml_is_headed_by_its_run_command():
    for path in (REPO / "studies" / "configs").glob("*.yaml"):
        first = path.read_text().splitlines()[0]
        assert first.startswith("# Run:") and ".py" in first, path


def test_overrides_are_typed_by_yaml_and_reach_nested_keys():
    config = load(
        STUDY_YAML,
        ["training.epochs=3", "training.lr=1e-2", "model.params.num_experts=4", "name=x"],
    )
    assert config.training.epochs == 3
    assert config.training.lr == pytest.approx(1e-2)  # YAML 1.1 reads 1e-2 as a string
    assert config.model_params().num_experts == 4
    assert config.name == "x"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["training.lrr=0.1"], "training.lrr: unknown key"),
        (["training.lr=fast"], "training.lr: expected float"),
        (["training.epochs=2.5"], "training.epochs: expected int"),
        (["training.use_gpu=3"], "training.use_gpu: expected bool"),
        (["training.backend=magic"], "training.backend: expected one of"),
        (["training.lr=-1"], "training.lr: must be > 0"),
        (["model.name=nope"], "model.name: unknown model 'nope'"),
        (["model.params.experts=3"], "model.params.experts: unknown key"),
        (["model.params.top_k=9", "model.params.num_experts=4"], "model.params.top_k"),
        (["spectrum.protocols=[clean, nope]"], "spectrum.protocols: protocol 'nope' unknown"),
        (["spectrum.p_drop=1.5"], "spectrum.p_drop: must be in [0, 1]"),
        (["data.source=parquet"], "data.path: required"),
        (["training=3"], "training: expected a mapping"),
        (
            ["search.space=[{name: training.nope, type: int, low: 1, high: 2}]"],
            "search.space[0].name: training.nope: unknown key",
        ),
        (
            ["search.space=[{name: model.params.top_k, type: int, low: 1, high: model.params.x}]"],
            "search.space[0].high",
        ),
    ],
)
def test_bad_values_fail_with_the_key_path(overrides, message):
    with pytest.raises(ConfigError) as err:
        load(STUDY_YAML, overrides)
    assert message in str(err.value)
    assert str(err.value).startswith(str(STUDY_YAML))


def test_malformed_and_missing_files(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("training: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: malformed YAML"):
        load(bad)
    with pytest.raises(ConfigError, match=r"missing\.yaml: cannot read"):
        load(tmp_path / "missing.yaml")
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("3\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load(scalar)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("trainig:\n  epochs: 2\n")
    with pytest.raises(ConfigError, match="trainig: unknown key"):
        load(unknown)


def test_override_syntax_error():
    with pytest.raises(ConfigError, match=r"key\.path=value"):
        load(STUDY_YAML, ["training.epochs"])


def test_round_trip_through_dict_is_identity():
    config = load(STUDY_YAML)
    assert from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["spectrum.sampler=magic"], "spectrum.sampler: expected one of"),
        (["spectrum.clean_fraction=1.5"], "spectrum.clean_fraction: must be in [0, 1]"),
        (["spectrum.p_pattern=-0.1"], "spectrum.p_pattern: must be in [0, 1]"),
        (["spectrum.rates_axis=sideways"], "spectrum.rates_axis: expected one of"),
        (["spectrum.mixture_weights={rates: -1}"], "spectrum.mixture_weights.rates: must be"),
        (["spectrum.mixture_weights.rates=.nan"], "spectrum.mixture_weights.rates: must be"),
        (["spectrum.mixture_weights={bogus: 1}"], "spectrum.mixture_weights.bogus: unknown"),
        (["spectrum.mixture_weights={rates: 0}"], "spectrum.mixture_weights: must not all be 0"),
        (["spectrum.mixture_weights=3"], "spectrum.mixture_weights: expected a mapping"),
    ],
)
def test_bad_sampler_settings_fail_with_the_key_path(overrides, message):
    with pytest.raises(ConfigError) as err:
        load(STUDY_YAML, overrides)
    assert message in str(err.value)


def test_sampler_settings_round_trip_and_can_be_searched():
    raw = load(STUDY_YAML).to_dict()
    config = from_dict(
        raw,
        {
            "spectrum.sampler": "mixture",
            "spectrum.clean_fraction": 0.25,
            "spectrum.rates_axis": "both",
            "spectrum.p_pattern": 0.6,
            "spectrum.mixture_weights": {"rates": 2, "patterns": 1},
            "search.space": [
                {"name": "spectrum.clean_fraction", "type": "float", "low": 0.0, "high": 1.0},
                {"name": "spectrum.mixture_weights.rates", "type": "float", "low": 0, "high": 3},
                {"name": "spectrum.sampler", "type": "categorical", "choices": ["rates"]},
            ],
        },
    )
    s = config.spectrum
    assert (s.sampler, s.rates_axis) == ("mixture", "both")
    assert (s.clean_fraction, s.p_pattern) == (0.25, 0.6)
    assert s.mixture_weights == {"rates": 2.0, "patterns": 1.0}
    assert all(isinstance(w, float) for w in s.mixture_weights.values())
    assert from_dict(config.to_dict()) == config
    # An unchanged study YAML keeps today's sampler.
    assert load(STUDY_YAML).spectrum.sampler == "continuous"


def test_an_empty_space_searches_the_models_own_space(monkeypatch):
    from dataclasses import replace

    from robustmsa.models import MODELS

    spec = MODELS["late_fusion"]
    own = ({"name": "model.params.hidden", "type": "int", "low": 8, "high": 32},)
    monkeypatch.setitem(MODELS, "late_fusion", replace(spec, search_space=own))
    config = from_dict({"model": {"name": "late_fusion"}})
    assert [(p.name, p.low, p.high) for p in config.kind_section.space] == [
        ("model.params.hidden", 8, 32)
    ]
    listed = from_dict(
        {
            "model": {"name": "late_fusion"},
            "search": {"space": [{"name": "training.lr", "type": "float", "low": 0.1, "high": 1}]},
        }
    )
    assert [p.name for p in listed.kind_section.space] == ["training.lr"]
    bad = ({"name": "model.params.nope", "type": "int", "low": 1, "high": 2},)
    monkeypatch.setitem(MODELS, "late_fusion", replace(spec, search_space=bad))
    with pytest.raises(ConfigError, match=r"model\.params\.nope: unknown key"):
        from_dict({"model": {"name": "late_fusion"}})


def test_each_study_kind_reads_its_own_section_and_round_trips():
    from robustmsa.search.kinds import KINDS

    config = load(STUDY_YAML)
    assert config.study.kind == "search" and type(config.kind_section) is KINDS["search"].section
    raw = config.to_dict()
    assert "kind_section" not in raw and raw["search"]["trial_epoch_budget"] == 64
    assert from_dict(raw).to_dict() == raw  # a trial's config.yaml loads back the same
    confirm = from_dict({"study": {"kind": "confirm"}, "confirm": {"seeds": 4}})
    assert confirm.kind_section.seeds == 4 and "search" not in confirm.to_dict()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"study": {"kind": "grid"}}, r"^study\.kind: unknown study kind 'grid' \(known: \["),
        ({"search": {"max_concurrent": 2}}, r"^search\.max_concurrent: moved to study\."),
        ({"search": {"kind": "per_rate"}}, r"^search\.kind: moved to study\.kind"),
        ({"search": {"levels": [0.5]}}, r"^search\.levels: moved to per_rate\.levels"),
        ({"search": {"num_samples": 0}}, r"^search\.num_samples: must be >= 1, got 0"),
        (
            {"search": {"trial_epoch_budget": 0}},
            r"^search\.trial_epoch_budget: must be >= 1, got 0",
        ),
        ({"per_rate": {"levels": [0.5]}}, r"^per_rate: the section of study kind 'per_rate', "),
        ({"study": {"kind": "confirm"}, "confirm": {"seeds": 1}}, r"^confirm\.seeds: .*at least"),
        (
            {"study": {"kind": "per_rate"}, "per_rate": {"levels": [0.0, 0.25, 0.5]}},
            r"^per_rate\.levels: \[0\.25\] are not levels of the 'missing' curve",
        ),
        (
            {
                "study": {"kind": "one_checkpoint_for_all"},
                "one_checkpoint_for_all": {"levels": [0.75]},
            },
            r"^one_checkpoint_for_all\.levels: \[0\.75\] are not levels",
        ),
        (
            {"study": {"kind": "confirm", "reference_model": None}},
            r"^study\.reference_model: a confirmation pairs",
        ),
        (
            {"study": {"kind": "compare_models"}, "compare_models": {"models": {}}},
            r"^compare_models\.models: compare_models needs at least one model",
        ),
    ],
)
def test_a_study_kind_section_is_checked_when_the_config_loads(raw, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(raw)

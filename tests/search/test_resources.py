"""Trial resources, what a cluster can hold, and ``study.max_concurrent: auto``."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient
from paths import REPO
from robustmsa.config import load
from robustmsa.errors import ConfigError
from robustmsa.search.kinds import KINDS
from robustmsa.search.resources import (
    check_fits,
    concurrent_trials,
    launcher_ceiling,
    resolve_max_concurrent,
    trial_resources,
)

STUDY_YAML = REPO / "studies" / "configs" / "qa_moe_search.yaml"


def config(*overrides: str):
    return load(STUDY_YAML, list(overrides))


def test_an_in_process_trial_holds_one_workers_share():
    plan = trial_resources(config("study.cpus_per_trial=2"), in_process=True)
    assert plan.trial == {"cpu": 2.0}
    assert plan.footprint() == {"CPU": 2.0}
    assert plan.finishing == {"cpu": 2.0, "gpu": 0.0}


def test_use_gpu_defaults_to_one_gpu_and_a_fraction_shares_it():
    whole = trial_resources(config("training.use_gpu=true"), in_process=True)
    assert whole.trial == {"cpu": 1.0, "gpu": 1.0}
    assert whole.finishing == {"cpu": 1.0, "gpu": 1.0}  # evaluates on the GPU
    quarter = trial_resources(
        config("training.use_gpu=true", "study.gpus_per_trial=0.25"), in_process=True
    )
    assert quarter.footprint() == {"CPU": 1.0, "GPU": 0.25}
    assert concurrent_trials(quarter.footprint(), {"CPU": 16, "GPU": 1}) == 4


def test_a_torch_trainer_trial_holds_its_process_and_every_worker():
    plan = trial_resources(
        config("training.num_workers=4", "training.use_gpu=true", "study.cpus_per_trial=2"),
        in_process=False,
    )
    assert plan.trial == {"cpu": 1.0}
    assert plan.worker == {"CPU": 2.0, "GPU": 1.0}
    assert plan.footprint() == {"CPU": 9.0, "GPU": 4.0}
    # Two such trials fit 8 GPUs; the CPUs would allow three.
    assert concurrent_trials(plan.footprint(), {"CPU": 32, "GPU": 8}) == 2


def test_auto_fits_the_cluster_and_never_exceeds_the_samples():
    cfg = config("study.max_concurrent=auto", "search.num_samples=8")
    plan = trial_resources(cfg, in_process=True)
    trials = KINDS["search"].trial_count(cfg)
    assert trials == 8
    assert resolve_max_concurrent(cfg, plan, {"CPU": 3}, trials) == 3
    assert resolve_max_concurrent(cfg, plan, {"CPU": 64}, trials) == 8
    fixed = config("study.max_concurrent=5")
    assert resolve_max_concurrent(fixed, plan, {"CPU": 2}, trials) == 5  # kept as asked


def test_a_gpu_study_on_a_cluster_without_gpus_is_refused():
    cfg = config("training.use_gpu=true", "study.max_concurrent=auto")
    plan = trial_resources(cfg, in_process=True)
    with pytest.raises(ConfigError, match=r"^study\.gpus_per_trial: .*has no GPUs"):
        resolve_max_concurrent(cfg, plan, {"CPU": 16}, 8)
    with pytest.raises(ConfigError, match=r"^study\.cpus_per_trial: .*needs 4 CPU.*offers 2"):
        check_fits({"CPU": 4}, {"CPU": 2})


def test_the_launcher_config_gives_the_autoscalers_ceiling():
    """``ray up`` leaves the cluster YAML on the head; its node types at max_workers are what
    the autoscaler may add (the project's own AWS config, read as the head reads it)."""
    import yaml

    raw = yaml.safe_load((REPO / "cluster" / "aws.yaml").read_text())
    expected: dict[str, float] = {}
    for name, node_type in raw["available_node_types"].items():
        count = 1 if name == raw["head_node_type"] else node_type["max_workers"]
        count = count if name == raw["head_node_type"] else min(count, raw["max_workers"])
        for key, amount in node_type["resources"].items():
            expected[key] = expected.get(key, 0.0) + count * amount
    ceiling = launcher_ceiling(REPO / "cluster" / "aws.yaml")
    assert ceiling == expected
    assert ceiling["GPU"] > 0 and ceiling["CPU"] > 0
    assert launcher_ceiling(REPO / "no-such-file.yaml") is None


def test_a_gpu_study_fails_before_any_run_on_a_local_ray_without_gpus(tmp_path, local_ray):
    """Not a hang: the study names the missing GPUs and leaves no run behind."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    from robustmsa.search.study import run_study

    cfg = load(
        STUDY_YAML,
        ["data.preset=tiny", f"data.cache_dir={tmp_path / 'data'}", "training.use_gpu=true"],
    )
    with pytest.raises(ConfigError, match="has no GPUs"):
        run_study(cfg, root=tmp_path)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns.db'}")
    experiment = client.get_experiment_by_name("qa_moe_search")
    assert experiment is None or not client.search_runs([experiment.experiment_id])


def test_a_declared_ceiling_is_read_from_the_environment():
    from robustmsa.search.resources import MAX_RESOURCES_ENV, declared_ceiling

    assert declared_ceiling({}) is None
    assert declared_ceiling({MAX_RESOURCES_ENV: '{"CPU": 96, "GPU": 4}'}) == {
        "CPU": 96.0,
        "GPU": 4.0,
    }
    with pytest.raises(ConfigError, match=rf"^{MAX_RESOURCES_ENV}: expected a JSON mapping"):
        declared_ceiling({MAX_RESOURCES_ENV: "96 CPUs"})

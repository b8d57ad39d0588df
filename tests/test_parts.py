"""Named parts with their own LR factor: splitting, the factors a study searches, best.json and back."""

from __future__ import annotations

import json
import math
from pathlib import Path

import optuna
import pytest
import torch
from click.testing import CliRunner, Result
from torch import nn

import lrtune
from lrtune.cli import cli
from lrtune.config import build_config, load_study_file
from lrtune.errors import UsageError
from lrtune.finder import LRFinder
from lrtune.optimizers import OptimizerSpec
from lrtune.parts import (
    DEFAULT_GROUP,
    GroupSpec,
    from_json,
    group_ratios,
    optimizer_groups,
    specs_from_mapping,
    split_parameters,
    to_json,
)
from lrtune.schedules import build, parse_spec
from lrtune.space import LRBounds, SearchSpace, baseline_params, plan_from_params, sample
from lrtune.study.record import StudyRecord
from lrtune.tasks import Task
from lrtune.trainer import TrainSettings, fit

BOUNDS = {"sgd": LRBounds(0.01, 1.0, 0.1)}


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8))
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def names(groups: list[dict[str, object]], model: nn.Module) -> dict[str, list[str]]:
    by_id = {id(p): n for n, p in model.named_parameters()}
    return {str(g["name"]): [by_id[id(p)] for p in g["params"]] for g in groups}  # type: ignore[attr-defined]


def run_cli(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def assert_usage_error(result: Result, fragment: str) -> None:
    assert result.exit_code == 2, (result.output, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert fragment in lines[0], lines[0]


# ------------------------------------------------------------------------------------- GroupSpec
def test_parse_takes_name_pattern_and_the_factor_after_the_last_at() -> None:
    assert GroupSpec.parse(r"body=^body\.@0.1") == GroupSpec("body", r"^body\.", 0.1)
    assert GroupSpec.parse("head=head") == GroupSpec("head", "head", 1.0)
    assert GroupSpec.parse("x=a@b@2") == GroupSpec("x", "a@b", 2.0)
    assert GroupSpec.parse("x=a@b", allow_factor=False) == GroupSpec("x", "a@b", 1.0)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("body", "NAME=REGEX"),
        ("body=([", "bad regular expression"),
        ("body=x@abc", "must be a number > 0"),
        ("body=x@0", "factor must be a number > 0"),
        ("body=x@-1", "factor must be a number > 0"),
        ("body=x@nan", "factor must be a number > 0"),
        ("default=x", "reserved"),
        ("1body=x", "letters, digits"),
        ("body=", "non-empty pattern"),
    ],
)
def test_parse_rejects_bad_input(text: str, fragment: str) -> None:
    with pytest.raises(UsageError, match=fragment.replace("(", r"\(")):
        GroupSpec.parse(text)


def test_a_study_flag_refuses_a_fixed_factor() -> None:
    with pytest.raises(UsageError, match="searches each group's factor"):
        GroupSpec.parse("body=x@0.1", allow_factor=False)


# ------------------------------------------------------------------------------------- splitting
def test_split_first_match_wins_and_the_rest_is_default() -> None:
    model = Net()
    specs = [GroupSpec("biases", r"\.bias$", 0.5), GroupSpec("body", r"^body\.", 0.1)]
    groups = split_parameters(model, specs)
    assert [g.name for g in groups] == [DEFAULT_GROUP, "biases", "body"]
    assert groups[0].names == ("head.weight",) and groups[0].factor == 1.0
    assert groups[1].names == ("body.0.bias", "body.2.bias", "head.bias")
    assert groups[2].names == ("body.0.weight", "body.2.weight")  # its biases went to the earlier group
    assert sum(len(g.params) for g in groups) == len(list(model.parameters()))


def test_split_leaves_out_an_empty_default_group() -> None:
    groups = split_parameters(Net(), [GroupSpec("body", "^body"), GroupSpec("head", "^head")])
    assert [g.name for g in groups] == ["body", "head"]


@pytest.mark.parametrize(
    ("specs", "fragment"),
    [
        ([GroupSpec("x", "^nothing")], "matches no parameter"),
        ([GroupSpec("a", "body"), GroupSpec("b", r"^body\.0")], "taken by an earlier group"),
        ([GroupSpec("a", "body"), GroupSpec("a", "head")], "unique"),
    ],
)
def test_split_errors(specs: list[GroupSpec], fragment: str) -> None:
    with pytest.raises(UsageError, match=fragment):
        split_parameters(Net(), specs)


def test_optimizer_groups_set_lr_to_base_times_factor() -> None:
    model = Net()
    groups = optimizer_groups(model, [GroupSpec("body", r"^body\.", 0.1)], base_lr=0.5)
    assert [(g["name"], g["lr"], g["lr_factor"]) for g in groups] == [
        ("default", 0.5, 1.0),
        ("body", 0.05, 0.1),
    ]
    assert names(groups, model)["default"] == ["head.weight", "head.bias"]
    assert group_ratios(groups) == [1.0, 0.1]
    assert group_ratios([{"lr": 0.1}, {"lr": 0.2, "lr_factor": 2.0}]) is None


def test_json_round_trip_keeps_order_and_factors() -> None:
    specs = (GroupSpec("body", r"^body\.", 0.1), GroupSpec("head", "head", 0.7))
    data = json.loads(json.dumps(to_json(specs)))
    assert data == {
        "body": {"pattern": r"^body\.", "lr_factor": 0.1},
        "head": {"pattern": "head", "lr_factor": 0.7},
    }
    assert from_json(data) == specs
    with pytest.raises(UsageError, match="pattern"):
        from_json({"body": {"lr_factor": 0.1}})


# --------------------------------------------------------------------- param_groups() and build
def write_best(path: Path, schedule: dict[str, object], groups: dict[str, object] | None) -> Path:
    data: dict[str, object] = {"schedule": schedule, "optimizer": {"name": "sgd", "momentum": 0.9}}
    if groups is not None:
        data["param_groups"] = groups
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "groups",
    [
        {"body": {"pattern": r"^body\.", "lr_factor": 0.1}},  # head in "default" (factor 1)
        {"body": {"pattern": r"^body\.", "lr_factor": 0.1}, "head": {"pattern": "^head", "lr_factor": 0.4}},
    ],
)
def test_param_groups_round_trip_with_build_keeping_the_factors(
    tmp_path: Path, groups: dict[str, object]
) -> None:
    schedule = {"type": "cosine", "base_lr": 0.2, "min_lr": 0.002, "warmup_steps": 3}
    path = write_best(tmp_path / "best.json", schedule, groups)
    model = Net()
    param_groups = lrtune.param_groups(model, path)
    factors = {g["name"]: g["lr_factor"] for g in param_groups}
    assert {name: g["lr"] for name, g in zip(factors, param_groups, strict=True)} == {
        name: 0.2 * factor for name, factor in factors.items()
    }
    opt = torch.optim.SGD(param_groups, lr=123.0)  # the optimizer's own lr is ignored
    scheduler = build(lrtune.load_schedule(path), opt, total_steps=20)
    spec = parse_spec(schedule)
    for k in range(20):
        for group in opt.param_groups:
            assert math.isclose(group["lr"], spec.lr(k, 20) * factors[group["name"]], rel_tol=1e-12), (
                k,
                group["name"],
            )
        opt.step()
        scheduler.step()


def test_param_groups_of_a_file_without_parts_is_one_default_group(tmp_path: Path) -> None:
    path = write_best(tmp_path / "best.json", {"type": "constant", "base_lr": 0.3}, None)
    model = Net()
    (group,) = lrtune.param_groups(model, path)
    assert group["name"] == "default" and group["lr"] == 0.3 and len(group["params"]) == 6


def test_param_groups_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not found"):
        lrtune.param_groups(Net(), tmp_path / "missing.json")
    bad = write_best(
        tmp_path / "bad.json",
        {"type": "constant", "base_lr": 0.3},
        {"x": {"pattern": "^zzz", "lr_factor": 1}},
    )
    with pytest.raises(UsageError, match="matches no parameter"):
        lrtune.param_groups(Net(), bad)
    (tmp_path / "noschedule.json").write_text("{}", encoding="utf-8")
    with pytest.raises(UsageError, match="base_lr"):
        lrtune.param_groups(Net(), tmp_path / "noschedule.json")


# ----------------------------------------------------------------------------- finder and trainer
def test_the_range_test_moves_every_group_by_one_multiplier() -> None:
    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.SGD(optimizer_groups(model, [GroupSpec("body", r"^body\.", 0.1)], base_lr=1.0), lr=1.0)
    seen: list[list[float]] = []
    opt.register_step_pre_hook(lambda o, args, kwargs: seen.append([g["lr"] for g in o.param_groups]))
    data = [(torch.randn(16, 4), torch.randint(0, 3, (16,))) for _ in range(4)]
    result = LRFinder(model, opt, nn.functional.cross_entropy, device="cpu").range_test(
        data, start_lr=1e-4, end_lr=1.0, num_iter=20
    )
    assert len(seen) >= 10
    assert math.isclose(seen[0][0], 1e-4, rel_tol=1e-9)  # the default group (factor 1) carries the swept rate
    assert all(math.isclose(body, head * 0.1, rel_tol=1e-9) for head, body in seen)
    assert math.isclose(result.lrs[0], 1e-4, rel_tol=1e-9)
    assert [g["lr"] for g in opt.param_groups] == [1.0, 0.1]  # restored


def test_fit_builds_the_groups_with_their_factors() -> None:
    task = Task(
        "tiny",
        model=Net,
        train=torch.utils.data.TensorDataset(torch.randn(32, 4), torch.randint(0, 3, (32,))),
        val=torch.utils.data.TensorDataset(torch.randn(8, 4), torch.randint(0, 3, (8,))),
        batch_size=16,
    )
    captured: list[list[tuple[str, float]]] = []

    def factory(opt: torch.optim.Optimizer, total_steps: int) -> object:
        captured.append([(g["name"], g["lr"]) for g in opt.param_groups])
        return build({"type": "constant", "base_lr": 0.2}, opt, total_steps)

    result = fit(
        task,
        optimizer=OptimizerSpec("sgd"),
        schedule=factory,
        settings=TrainSettings(epochs=1, device="cpu"),
        param_groups=(GroupSpec("body", r"^body\.", 0.25),),
    )
    assert captured == [[("default", 1.0), ("body", 0.25)]]  # factory schedules start from base_lr 1.0
    assert result.final().lrs == (0.2, 0.2)  # the base rate (factor 1), not a part's


# --------------------------------------------------------------------------- study space and files
def test_sample_draws_a_factor_per_part_in_its_range_and_the_plan_records_it() -> None:
    space = SearchSpace(
        bounds=BOUNDS,
        schedules=("cosine",),
        param_groups=(("body", r"^body\."),),
        group_factor_range=(0.05, 0.5),
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(20):
        trial = study.ask()
        plan = sample(trial, space, total_steps=100, steps_per_epoch=10)
        factor = trial.params["lr_factor_body"]
        assert 0.05 <= factor <= 0.5
        assert plan.to_dict()["param_groups"] == {"body": {"pattern": r"^body\.", "lr_factor": factor}}
        assert plan_from_params(trial.params, space, total_steps=100, steps_per_epoch=10) == plan
        study.tell(trial, 0.0)


def test_the_baseline_trial_is_one_global_rate() -> None:
    space = SearchSpace(
        bounds=BOUNDS, schedules=("cosine",), param_groups=(("body", "^body"), ("head", "^head"))
    )
    params = baseline_params(space)
    assert params["lr_factor_body"] == params["lr_factor_head"] == 1.0


def test_space_rejects_bad_parts() -> None:
    with pytest.raises(UsageError, match="unique"):
        SearchSpace(bounds=BOUNDS, schedules=("cosine",), param_groups=(("a", "x"), ("a", "y")))
    with pytest.raises(UsageError, match="group_factor_range"):
        SearchSpace(bounds=BOUNDS, schedules=("cosine",), group_factor_range=(0.5, 0.1))


def test_study_file_and_flags_give_the_parts_in_order(tmp_path: Path) -> None:
    path = tmp_path / "study.yaml"
    path.write_text(
        "param_groups:\n  body: ^body\\.\n  head: ^head\ngroup_factor_range: [0.001, 1]\n", encoding="utf-8"
    )
    config = build_config(load_study_file(path), {})
    assert config.param_groups == (("body", r"^body\."), ("head", "^head"))
    assert config.group_factor_range == (0.001, 1.0)
    assert config.search_space(BOUNDS).param_groups == config.param_groups
    flags = build_config(None, {"param_groups": ("b=^body",)})
    assert flags.param_groups == (("b", "^body"),)
    for bad, fragment in [
        ({"param_groups": "body"}, "must map group names"),
        ({"param_groups": {"body": "(["}}, "bad regular expression"),
        ({"group_factor_range": [0, 1]}, "0 < low <= high"),
        ({"group_factor_range": [1]}, "range"),
    ]:
        with pytest.raises(UsageError, match=fragment):
            build_config(bad, {})


def test_a_resumed_study_refuses_changed_parts() -> None:
    def record(
        groups: tuple[tuple[str, str], ...], factor_range: tuple[float, float] = (0.01, 1.0)
    ) -> StudyRecord:
        return StudyRecord(
            task="digits-finetune",
            epochs=2,
            steps_per_epoch=5,
            batch_size=20,
            metric="val_accuracy",
            direction="maximize",
            schedules=("cosine",),
            optimizers=("sgd",),
            bounds=BOUNDS,
            param_groups=groups,
            group_factor_range=factor_range,
        )

    stored = record((("body", r"^body\."),))
    assert StudyRecord.from_attr(json.loads(json.dumps(stored.to_attr()))) == stored
    assert stored.conflicts(record((("body", r"^body\."),)), compare_bounds=True) == []
    assert any(
        "param_groups" in c for c in stored.conflicts(record((("head", "^head"),)), compare_bounds=False)
    )
    assert any("param_groups" in c for c in stored.conflicts(record(()), compare_bounds=False))
    changed = stored.conflicts(record((("body", r"^body\."),), (0.1, 1.0)), compare_bounds=False)
    assert any("group_factor_range" in c for c in changed)
    old = stored.to_attr()
    del old["param_groups"], old["group_factor_range"]  # a study stored before parts existed
    assert StudyRecord.from_attr(old).param_groups == ()


def test_specs_from_mapping_keeps_order() -> None:
    assert [s.name for s in specs_from_mapping({"z": "a", "a": "b"})] == ["z", "a"]


# ------------------------------------------------------------------------------------- CLI: find
@pytest.mark.slow
def test_find_with_fixed_factors_writes_the_files(tmp_path: Path) -> None:
    out = tmp_path / "find"
    result = run_cli(
        "find", "--task", "digits-finetune", "--param-group", r"body=^body\.@0.1",
        "--num-iter", "20", "--repeats", "1", "--no-mlflow", "--out", str(out), "--device", "cpu",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads((out / "finder.json").read_text(encoding="utf-8"))
    assert data["lrs"][0] == pytest.approx(1e-7)


@pytest.mark.parametrize(
    ("flag", "fragment"),
    [
        ("x=^nothing@0.1", "matches no parameter"),
        ("body=([@0.1", "bad regular expression"),
        ("body=^body@abc", "must be a number > 0"),
        ("body=^body@0", "factor must be a number > 0"),
        ("nogroup", "NAME=REGEX"),
    ],
)
def test_find_bad_groups_exit_2_and_write_nothing(tmp_path: Path, flag: str, fragment: str) -> None:
    out = tmp_path / "find"
    result = run_cli(
        "find", "--task", "digits-finetune", "--param-group", flag, "--no-mlflow", "--out", str(out)
    )
    assert_usage_error(result, fragment)
    assert not out.exists()


def test_find_group_with_no_parameter_left_exits_2(tmp_path: Path) -> None:
    result = run_cli(
        "find", "--task", "digits-finetune", "--param-group", "a=body", "--param-group", r"b=^body\.0",
        "--no-mlflow", "--out", str(tmp_path / "find"),
    )  # fmt: skip
    assert_usage_error(result, "taken by an earlier group")


def test_study_bad_group_exits_2_before_creating_anything(tmp_path: Path) -> None:
    storage = tmp_path / "s.db"
    for flag, fragment in [
        ("x=^nothing", "matches no parameter"),
        ("b=^body@0.1", "searches each group's factor"),
    ]:
        result = run_cli(
            "study", "--task", "digits-finetune", "--param-group", flag, "--storage", f"sqlite:///{storage}",
            "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}", "--n-trials", "1", "--epochs", "1",
        )  # fmt: skip
        assert_usage_error(result, fragment)
    assert not storage.exists()

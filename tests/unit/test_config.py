"""Override parsing, config loading and the stages' real config models (shared/config.py)."""

from __future__ import annotations

import copy

import pytest
from pydantic import BaseModel, Field, ValidationError

from proactive_rl.shared.config import StageConfig, apply_override, load_config, parse_value
from proactive_rl.shared.errors import UserError
from proactive_rl.stages.eval.config import EvalConfig
from proactive_rl.stages.grpo.config import GrpoConfig
from proactive_rl.stages.prep.config import PrepConfig
from proactive_rl.stages.rollout.config import RolloutConfig
from proactive_rl.stages.sft.config import SftConfig

PARSE_CASES = [
    ("1", 1),
    ("-3", -3),
    ("0", 0),
    ("0.5", 0.5),
    ("1e-6", 1e-6),
    ("true", True),
    ("false", False),
    ("null", None),
    ("[1, 2]", [1, 2]),
    ('["a", "b"]', ["a", "b"]),
    ("[]", []),
    ('{"alpha": 0.5, "names": ["x"]}', {"alpha": 0.5, "names": ["x"]}),
    ('"123"', "123"),  # JSON-quoted: a string even though it looks like a number
    ("abc", "abc"),
    ("builtin:tiny", "builtin:tiny"),
    ("/data/model dir", "/data/model dir"),
    ("True", "True"),  # Python spelling is not JSON: stays a string
    ("a=b", "a=b"),
    ("x==y", "x==y"),
    ("", ""),
    ("[1, 2", "[1, 2"),  # broken JSON falls back to the raw text
]


@pytest.mark.parametrize("raw, expected", PARSE_CASES)
def test_parse_value(raw, expected):
    value = parse_value(raw)
    assert value == expected
    assert type(value) is type(expected)  # 1 == 1.0 == True, so check the type too


APPLY_CASES = [
    # (dict before, assignment, dict after)
    ({}, "a=1", {"a": 1}),
    ({"a": 1}, "a=2", {"a": 2}),
    ({}, "a.b.c=2", {"a": {"b": {"c": 2}}}),
    ({"a": {"x": 1}}, "a.y=true", {"a": {"x": 1, "y": True}}),
    ({"a": {"x": 1}}, "a.x=[1]", {"a": {"x": [1]}}),
    ({}, "a=b=c", {"a": "b=c"}),
    ({}, " lr =0.1", {"lr": 0.1}),
    ({}, "name=", {"name": ""}),
    ({}, "sampling.top_p=0.9", {"sampling": {"top_p": 0.9}}),
]


@pytest.mark.parametrize("before, assignment, after", APPLY_CASES)
def test_apply_override(before, assignment, after):
    data = copy.deepcopy(before)
    apply_override(data, assignment)
    assert data == after


@pytest.mark.parametrize(
    "before, assignment, message",
    [
        ({}, "novalue", "not of the form key=value"),
        ({}, "=x", "not of the form key=value"),
        ({}, " =x", "not of the form key=value"),
        ({}, "", "not of the form key=value"),
        ({"a": 5}, "a.b=1", "'a' is not a section"),
        ({"a": {"b": "s"}}, "a.b.c=1", "'b' is not a section"),
    ],
)
def test_apply_override_errors(before, assignment, message):
    data = copy.deepcopy(before)
    with pytest.raises(UserError, match=message):
        apply_override(data, assignment)
    assert data == before


# ---------------------------------------------------------------- load_config


class Section(StageConfig):
    lr: float = Field(0.1, gt=0, description="Learning rate.")
    steps: int = Field(10, ge=1, description="Steps.")


class Demo(StageConfig):
    name: str = Field("run", description="Run name.")
    batch: int = Field(8, ge=1, le=1024, description="Batch size.")
    opt: Section = Field(default_factory=Section)


TOML = """
name = "from-file"
batch = 4

[opt]
lr = 0.5
"""


def test_load_config_defaults():
    assert load_config(Demo) == Demo()
    assert load_config(Demo).opt.steps == 10


def test_load_config_file_then_overrides(tmp_path):
    path = tmp_path / "demo.toml"
    path.write_text(TOML)

    from_file = load_config(Demo, path)
    assert (from_file.name, from_file.batch, from_file.opt.lr, from_file.opt.steps) == (
        "from-file",
        4,
        0.5,
        10,
    )

    config = load_config(Demo, path, ["batch=16", "opt.steps=3", "name=a=b"])
    assert (config.name, config.batch, config.opt.lr, config.opt.steps) == ("a=b", 16, 0.5, 3)


@pytest.mark.parametrize(
    "overrides, bad_key",
    [
        (["bogus=1"], "'bogus'"),
        (["opt.bogus=1"], "'opt.bogus'"),
        (["batch_size=4"], "'batch_size'"),
    ],
)
def test_unknown_key_lists_valid_keys(overrides, bad_key):
    with pytest.raises(UserError) as err:
        load_config(Demo, None, overrides)
    message = str(err.value)
    assert f"unknown key {bad_key}" in message
    assert "valid keys: name, batch, opt.lr, opt.steps" in message


def test_unknown_key_in_file_names_the_file(tmp_path):
    path = tmp_path / "demo.toml"
    path.write_text('batch = 2\ntypo_key = "x"\n')
    with pytest.raises(UserError) as err:
        load_config(Demo, path)
    assert "unknown key 'typo_key'" in str(err.value)
    assert str(path) in str(err.value)


@pytest.mark.parametrize(
    "override, field, hint",
    [
        ("batch=0", "batch", "greater than or equal to 1"),
        ("batch=2048", "batch", "less than or equal to 1024"),
        ("opt.lr=0", "opt.lr", "greater than 0"),
        ("opt.steps=1.5", "opt.steps", "integer"),
        ("batch=abc", "batch", "integer"),
    ],
)
def test_bound_violations_name_the_field(override, field, hint):
    with pytest.raises(UserError) as err:
        load_config(Demo, None, [override])
    message = str(err.value)
    assert f"  {field}: " in message
    assert hint in message
    assert "unknown key" not in message


def test_assignment_is_validated_too():
    config = Demo()
    with pytest.raises(ValidationError):
        config.batch = 0
    assert config.batch == 8


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "does not exist"),
        ("batch = \n", "not valid TOML"),
        ("[opt\nlr = 1", "not valid TOML"),
    ],
)
def test_bad_config_file_names_the_file(tmp_path, content, message):
    path = tmp_path / "stage.toml"
    if content is not None:
        path.write_text(content)
    with pytest.raises(UserError, match=message) as err:
        load_config(Demo, path)
    assert str(path) in str(err.value)


# ---------------------------------------------------------------- the stages' real configs

STAGE_CONFIGS = [PrepConfig, SftConfig, RolloutConfig, GrpoConfig, EvalConfig]


def _leaf_fields(model: type[BaseModel], prefix: str = ""):
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from _leaf_fields(annotation, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", field


def _section_prefixes(model: type[BaseModel], prefix: str = ""):
    for name, field in model.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            yield f"{prefix}{name}."
            yield from _section_prefixes(field.annotation, f"{prefix}{name}.")


@pytest.mark.parametrize("model", STAGE_CONFIGS, ids=lambda m: m.__name__)
def test_stage_config_defaults_construct(model):
    assert isinstance(model(), StageConfig)
    assert load_config(model) == model()


@pytest.mark.parametrize("model", STAGE_CONFIGS, ids=lambda m: m.__name__)
def test_stage_config_fields_are_documented(model):
    undocumented = [name for name, f in _leaf_fields(model) if not (f.description or "").strip()]
    assert undocumented == []


@pytest.mark.parametrize("model", STAGE_CONFIGS, ids=lambda m: m.__name__)
def test_stage_config_rejects_unknown_keys(model):
    # top level and inside every nested section (grpo's `loss.`, rollout's `sampling.`, ...)
    prefixes = ["", *_section_prefixes(model)]
    for prefix in prefixes:
        with pytest.raises(UserError, match=f"unknown key '{prefix}no_such_key'"):
            load_config(model, None, [f"{prefix}no_such_key=1"])
    if model in (GrpoConfig, RolloutConfig, EvalConfig):
        assert len(prefixes) > 1  # the sections were really visited


# ---------------------------------------------------------------- recipes

STAGE_MODELS = {
    "prep": PrepConfig,
    "sft": SftConfig,
    "rollout": RolloutConfig,
    "grpo": GrpoConfig,
    "eval": EvalConfig,
}


def test_packaged_recipes_validate_for_every_stage():
    from proactive_rl.shared.config import recipe_names

    assert "qwen3-8b" in recipe_names()
    for name in recipe_names():
        for stage, model in STAGE_MODELS.items():
            load_config(model, recipe=name, stage=stage)


def test_qwen3_8b_recipe_is_the_seed_pipeline():
    """The numbers of seed-pipeline.md's Qwen3-8B run (the users' veRL scripts)."""
    grpo = load_config(GrpoConfig, recipe="qwen3-8b", stage="grpo")
    assert (grpo.prompts_per_step, grpo.n, grpo.epochs) == (256, 16, 10)
    # lr 1e-6, min lr 1e-7: a cosine floor of 0.1 x the peak
    assert (grpo.learning_rate, grpo.lr_scheduler, grpo.min_lr_ratio) == (1e-6, "cosine", 0.1)
    assert grpo.mini_batch_prompts == 64
    assert (grpo.loss.kl_type, grpo.loss.kl_coef, grpo.loss.clip_eps_low) == (
        "low_var_kl",
        0.001,
        0.2,
    )
    rollout = load_config(RolloutConfig, recipe="qwen3-8b", stage="rollout")
    assert (rollout.sampling.max_prompt_tokens, rollout.sampling.max_new_tokens) == (1024, 1024)
    assert rollout.reward_kwargs == {"beta": 0.5} and rollout.backend == "vllm"
    sft = load_config(SftConfig, recipe="qwen3-8b", stage="sft")
    assert (sft.epochs, sft.learning_rate, sft.precision) == (2, 1e-5, "bf16")
    assert load_config(PrepConfig, recipe="qwen3-8b", stage="prep").num_sft_samples == 50


def test_recipe_is_lowest_then_file_then_overrides(tmp_path):
    recipe = tmp_path / "mine.toml"
    recipe.write_text(
        "[grpo]\nn = 4\nepochs = 3\nlearning_rate = 1e-5\n[grpo.loss]\nkl_coef = 0.1\n"
    )
    config_file = tmp_path / "grpo.toml"
    config_file.write_text("epochs = 5\n[loss]\nentropy_coef = 0.01\n")
    config = load_config(GrpoConfig, config_file, ["n=8"], str(recipe), "grpo")
    assert (config.n, config.epochs, config.learning_rate) == (8, 5, 1e-5)
    # nested tables merge key by key: the file's [loss] keeps the recipe's kl_coef
    assert (config.loss.kl_coef, config.loss.entropy_coef) == (0.1, 0.01)
    # a stage without a table in the recipe gets its defaults
    assert load_config(SftConfig, recipe=str(recipe), stage="sft") == SftConfig()


@pytest.mark.parametrize(
    "recipe, message",
    [
        ("no-such-recipe", "unknown recipe 'no-such-recipe'"),
        ("missing.toml", "missing.toml does not exist"),
    ],
)
def test_recipe_errors(recipe, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=message):
        load_config(GrpoConfig, recipe=recipe, stage="grpo")


def test_recipe_with_a_bad_key_names_it(tmp_path):
    recipe = tmp_path / "bad.toml"
    recipe.write_text("[grpo]\nprompts_per_stepp = 4\n")
    with pytest.raises(UserError, match="unknown key 'prompts_per_stepp'"):
        load_config(GrpoConfig, recipe=str(recipe), stage="grpo")


@pytest.mark.parametrize("model", [RolloutConfig, EvalConfig])
def test_a_dotted_reward_kwarg_keeps_the_other_defaults(model):
    """--set reward_kwargs.scale=2 edits one key; beta stays 0.5 (it used to vanish, leaving
    the reward function's own default). A whole value replaces the dict, as written."""
    edited = load_config(model, overrides=["reward_kwargs.scale=2"])
    assert edited.reward_kwargs == {"beta": 0.5, "scale": 2}
    replaced = load_config(model, overrides=['reward_kwargs={"scale": 2}'])
    assert replaced.reward_kwargs == {"scale": 2}
    both = load_config(model, overrides=["reward_kwargs.beta=0.3", "reward_kwargs.scale=2"])
    assert both.reward_kwargs == {"beta": 0.3, "scale": 2}


def test_a_group_of_one_is_refused():
    """n=1: every advantage is zero, so a run would spend its hours learning nothing."""
    with pytest.raises(UserError, match=r"n: Input should be greater than or equal to 2"):
        load_config(GrpoConfig, overrides=["n=1"])
    assert load_config(GrpoConfig, overrides=["n=2"]).n == 2


STAGE_CONFIGS = [PrepConfig, SftConfig, RolloutConfig, GrpoConfig, EvalConfig]


@pytest.mark.parametrize("model", STAGE_CONFIGS, ids=lambda m: m.__name__)
def test_the_pipeline_seed_reaches_every_stage(
    model: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    default = load_config(model).seed
    monkeypatch.setenv("PROACTIVE_SEED", str(default + 5))
    assert load_config(model).seed == default + 5
    assert load_config(model, overrides=["seed=3"]).seed == 3  # --set wins over the knob
    monkeypatch.setenv("PROACTIVE_SEED", "")
    assert load_config(model).seed == default  # empty: the stage's own default


def test_a_pipeline_seed_that_is_not_a_number_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROACTIVE_SEED", "abc")
    with pytest.raises(UserError, match="PROACTIVE_SEED='abc' is not an integer"):
        load_config(PrepConfig)

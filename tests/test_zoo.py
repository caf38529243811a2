"""Tests of backdoorlab.zoo: stacked models, training plans, grouped training, filtering."""

from __future__ import annotations

import pytest
import torch

from backdoorlab import cache as cache_module
from backdoorlab import train as train_module
from backdoorlab import triggers as triggers_module
from backdoorlab.zoo import (
    BlendSpec,
    ModelConfig,
    ModelStack,
    PatchSpec,
    ZooCNN,
    evaluate_zoo,
    random_patch_triggers,
    train_stack,
    train_zoo,
    training_plan,
    zoo_spec,
)

TRIGGER = PatchSpec(size=3, row=23, col=23, bits=(1, 1, 1, 1, 0, 1, 1, 1, 1))


def test_stacked_models_equal_each_model_alone():
    models = [ZooCNN() for _ in range(5)]
    stack = ModelStack.from_models(models)
    shared = torch.rand(7, 1, 28, 28)
    each = torch.rand(5, 7, 1, 28, 28)
    with torch.no_grad():
        out_shared, out_each = stack(shared), stack(each)
        for k, model in enumerate(models):
            assert torch.allclose(out_shared[k], model(shared), atol=1e-5)
            assert torch.allclose(out_each[k], model(each[k]), atol=1e-5)
            assert torch.allclose(stack.forward_one(k, shared), model(shared), atol=1e-5)
            assert torch.allclose(stack.member(k)(shared), model(shared), atol=1e-6)


def test_stack_rejects_mixed_architectures_and_empty_lists():
    with pytest.raises(ValueError, match="different architectures"):
        ModelStack.from_models([ZooCNN(), ZooCNN(channels=(4, 8))])
    with pytest.raises(ValueError, match="empty"):
        ModelStack.from_models([])
    with pytest.raises(TypeError, match="ZooCNN"):
        ModelStack.from_models([torch.nn.Linear(2, 2)])
    with pytest.raises(ValueError, match="shape"):
        ModelStack.initial([0, 1])(torch.rand(3, 2, 1, 28, 28))


def test_select_and_concatenate_keep_the_models():
    stack = ModelStack.initial([0, 1, 2, 3])
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        full = stack(x)
        again = ModelStack.concatenate([stack.select([0, 1]), stack.select([2, 3])])(x)
        picked = stack.select([3, 1])(x)
    assert torch.equal(full, again)
    assert torch.equal(picked, full[[3, 1]])


def test_random_triggers_are_distinct_visible_and_reproducible():
    specs = random_patch_triggers(30, seed=4)
    assert len(set(specs)) == 30
    assert all(sum(s.bits) >= 0.5 * s.size ** 2 for s in specs)
    assert all(0 <= s.row <= 28 - s.size and 0 <= s.col <= 28 - s.size for s in specs)
    assert specs == random_patch_triggers(30, seed=4)
    assert specs != random_patch_triggers(30, seed=5)
    corners = random_patch_triggers(40, seed=1, sizes=(4, 5), placement="corners", margin=2)
    for spec in corners:
        assert min(spec.row, 28 - spec.size - spec.row) <= 2 and min(spec.col, 28 - spec.size - spec.col) <= 2
    assert {(s.row < 14, s.col < 14) for s in corners} == {(True, True), (True, False), (False, True), (False, False)}
    with pytest.raises(ValueError, match="placement"):
        random_patch_triggers(3, seed=0, placement="centre")


def test_model_config_rejects_inconsistent_attacks():
    with pytest.raises(ValueError, match="attack must be one of"):
        ModelConfig(0, "blend")
    with pytest.raises(ValueError, match="needs a trigger"):
        ModelConfig(0, "all_to_one")
    with pytest.raises(ValueError, match="source class"):
        ModelConfig(0, "one_source", TRIGGER, 1, None, 0.5)
    with pytest.raises(ValueError, match="rate"):
        ModelConfig(0, "all_to_one", TRIGGER, 1, None, 0.0)
    with pytest.raises(ValueError, match="differ"):
        ModelConfig(0, "one_source", TRIGGER, 1, 1, 0.5)
    with pytest.raises(ValueError, match="bits"):
        PatchSpec(size=2, row=0, col=0, bits=(1, 0, 1))


def test_zoo_spec_counts_kinds_and_seeds():
    triggers = random_patch_triggers(4, seed=0)
    spec = zoo_spec(num_clean=10, num_poisoned=12, triggers=triggers, seed=2)
    kinds = [c.attack for c in spec]
    assert kinds.count("clean") == 10
    assert kinds.count("one_source") == 6 and kinds.count("all_to_one") == 6
    assert len({c.seed for c in spec}) == 22
    assert {c.trigger for c in spec if c.poisoned} == set(triggers)
    other = zoo_spec(num_clean=10, num_poisoned=12, triggers=triggers, seed=3)
    assert not {c.seed for c in spec} & {c.seed for c in other}


def test_training_plan_poisons_the_right_images(tiny_set):
    configs = [
        ModelConfig(1),
        ModelConfig(2, "all_to_one", TRIGGER, 3, None, 0.2),
        ModelConfig(3, "one_source", TRIGGER, 3, 5, 0.5),
    ]
    plan = training_plan(configs, tiny_set, subset_size=400)
    labels = tiny_set.labels[plan.indices]
    assert plan.indices.shape == (3, 400) and len(set(plan.indices[1].tolist())) == 400
    assert not plan.poisoned[0].any()
    assert int(plan.poisoned[1].sum()) == round(0.2 * int((labels[1] != 3).sum()))
    assert not (labels[1][plan.poisoned[1]] == 3).any()
    assert int(plan.poisoned[2].sum()) == round(0.5 * int((labels[2] == 5).sum()))
    assert (labels[2][plan.poisoned[2]] == 5).all()
    again = training_plan(configs, tiny_set, subset_size=400)
    assert torch.equal(plan.indices, again.indices) and torch.equal(plan.poisoned, again.poisoned)
    with pytest.raises(ValueError, match="empty"):
        training_plan([], tiny_set, subset_size=10)
    with pytest.raises(ValueError, match="subset_size"):
        training_plan(configs, tiny_set, subset_size=10_000)
    with pytest.raises(ValueError, match="target"):
        training_plan([ModelConfig(2, "all_to_one", TRIGGER, 12, None, 0.2)], tiny_set, subset_size=50)


def test_grouped_training_equals_training_each_model_alone(tiny_set):
    configs = [
        ModelConfig(11),
        ModelConfig(12, "all_to_one", TRIGGER, 0, None, 0.2),
        ModelConfig(13, "one_source", TRIGGER, 2, 7, 0.5),
    ]
    options = dict(subset_size=128, epochs=2, batch_size=16)
    grouped = train_stack(configs, tiny_set, method="grouped", **options)
    looped = train_stack(configs, tiny_set, method="loop", **options)
    initial = ModelStack.initial([c.seed for c in configs])
    for name, value in grouped.parameter_dict().items():
        other = looped.parameter_dict()[name]
        assert torch.allclose(value, other, atol=2e-4, rtol=1e-3), name
        assert not torch.allclose(value, initial.parameter_dict()[name]), f"{name} did not train"
    alone = train_stack(configs[1:2], tiny_set, method="grouped", **options)
    assert torch.allclose(alone.parameter_dict()["fc.weight"][0], grouped.parameter_dict()["fc.weight"][1],
                          atol=2e-4, rtol=1e-3)


def test_evaluation_matches_the_single_model_measures(tiny_set):
    configs = [ModelConfig(21), ModelConfig(22, "all_to_one", TRIGGER, 0, None, 0.3),
               ModelConfig(23, "one_source", TRIGGER, 4, 6, 0.5)]
    stack = train_stack(configs, tiny_set, subset_size=500, epochs=3, batch_size=32)
    accuracy, success = evaluate_zoo(stack, configs, tiny_set, batch_size=128)
    trigger = TRIGGER.trigger()
    for k, config in enumerate(configs):
        model = stack.member(k)
        assert accuracy[k].item() == pytest.approx(train_module.accuracy(model, tiny_set), abs=1e-6)
        if config.poisoned:
            expected = triggers_module.attack_success_rate(model, tiny_set, trigger, target=config.target,
                                                           source=config.source)
            assert success[k].item() == pytest.approx(expected, abs=1e-6)
        else:
            assert torch.isnan(success[k])
    # the synthetic task and the backdoor are both learnable
    assert accuracy.min() > 0.85 and success[1:].min() > 0.7


def test_train_zoo_filters_reports_and_caches(tiny_set, tmp_path):
    configs = [ModelConfig(31), ModelConfig(32, "all_to_one", TRIGGER, 0, None, 0.3), ModelConfig(33)]
    options = dict(subset_size=300, epochs=2, batch_size=32, group_size=2)
    store = cache_module.ArtifactCache(tmp_path / "cache")
    zoo = train_zoo(configs, tiny_set, tiny_set, min_accuracy=0.5, min_attack_success=0.5, cache=store, **options)
    assert len(zoo) + len(zoo.rejected) == 3
    assert zoo.labels.tolist() == [int(c.poisoned) for c in zoo.configs]
    assert zoo.seconds > 0 and zoo.groups_built == 2
    again = train_zoo(configs, tiny_set, tiny_set, min_accuracy=0.5, min_attack_success=0.5, cache=store, **options)
    assert again.groups_built == 0 and again.seconds == pytest.approx(zoo.seconds)
    assert torch.equal(again.stack.parameter_dict()["fc.weight"], zoo.stack.parameter_dict()["fc.weight"])
    with pytest.raises(ValueError, match="every one"):
        train_zoo(configs, tiny_set, tiny_set, min_accuracy=1.01, cache=store, **options)
    unattainable = train_zoo(configs, tiny_set, tiny_set, min_accuracy=0.0, min_attack_success=1.01,
                             cache=store, **options)
    assert [c.seed for c, _ in unattainable.rejected] == [32]
    assert "attack success" in unattainable.rejected[0][1]
    with pytest.raises(ValueError, match="empty"):
        train_zoo([], tiny_set, tiny_set)


def test_blend_spec_stamps_the_blend_formula_and_keys_apart_from_patches():
    spec = BlendSpec(alpha=0.25, seed=4)
    trigger = spec.trigger((1, 28, 28))
    noise = torch.rand(1, 28, 28, generator=torch.Generator().manual_seed(4))
    images = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(trigger.apply(images), 0.75 * images + 0.25 * noise)
    assert torch.equal(spec.trigger().pattern, BlendSpec(alpha=0.5, seed=4).trigger().pattern)
    config = ModelConfig(1, "all_to_one", spec, 3, None, 0.1)
    record = config.as_dict()["trigger"]
    assert record == {"kind": "blend", "alpha": 0.25, "seed": 4}
    assert ModelConfig(1, "all_to_one", TRIGGER, 3, None, 0.1).as_dict()["trigger"]["bits"] == list(TRIGGER.bits)
    for bad, error in (({"alpha": 0.0, "seed": 0}, ValueError), ({"alpha": 1.5, "seed": 0}, ValueError),
                       ({"alpha": 0.1, "seed": 1.5}, TypeError)):
        with pytest.raises(error):
            BlendSpec(**bad)
    with pytest.raises(TypeError, match="trigger"):
        ModelConfig(1, "all_to_one", "blend", 3, None, 0.1)


def test_blended_backdoor_is_learned_and_evaluated(tiny_set):
    spec = BlendSpec(alpha=0.2, seed=1)
    configs = [ModelConfig(7, "all_to_one", spec, 3, None, 0.3), ModelConfig(8)]
    plan = training_plan(configs, tiny_set, subset_size=400)
    assert torch.allclose(plan.masks[0], torch.full((1, 28, 28), 0.2)) and not plan.masks[1].any()
    stack = train_stack(configs, tiny_set, subset_size=600, epochs=6, batch_size=32)
    accuracy, success = evaluate_zoo(stack, configs, tiny_set)
    expected = triggers_module.attack_success_rate(stack.member(0), tiny_set, spec.trigger(), target=3)
    assert float(success[0]) == pytest.approx(expected, abs=1e-6)
    assert success[0] > 0.8 and torch.isnan(success[1])

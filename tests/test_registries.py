"""The task, dataset and model registries: one entry per name, each with a one-line
description; every task owns its datasets and models."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from harness import config
from harness.tasks import base as tasks
from harness.tasks.classify import data as classify_data
from harness.tasks.classify import models as classify_models
from methods.base import UserError


def test_every_dataset_has_one_entry_with_a_one_line_description():
    described = classify_data.describe_datasets()
    assert list(described) == list(classify_data.DATASETS)
    assert set(described) == {"digits", "cifar10", "cifar100", "mnist", "fashion-mnist",
                              "imagefolder"}
    for name, text in described.items():
        assert classify_data.DATASETS[name].name == name
        assert text and "\n" not in text and len(text) <= 100, name
        assert classify_data.DATASETS[name].data_root in ("required", "optional", "unused"), name


def test_dataset_defaults_read_from_the_registry():
    photos = [n for n in classify_data.DATASETS if classify_data.default_augment(n)]
    assert photos == ["cifar10", "cifar100", "imagefolder"]
    assert not classify_data.default_augment("svhn")
    debian = classify_data.FASHION_MNIST_DEBIAN
    assert classify_data.DATASETS["fashion-mnist"].default_root == debian
    with pytest.raises(UserError, match="unknown dataset 'svhn'") as e:
        classify_data.check_name("svhn")
    assert e.value.field == "data.name"
    # digits reads no root
    classify_data.check_root(config.DataConfig(name="digits", root="/nonexistent"))


def test_every_model_has_one_entry_with_a_one_line_description():
    per_task = {name: card.runtime().models for name, card in tasks.load_all().items()}
    assert {t: set(m) for t, m in per_task.items()} == {
        "classify": {"resnet20", "vgg_small", "resnet18", "bireal_resnet18", "small_cnn"},
        "sr": {"edsr_baseline", "srresnet"}}
    for registry in per_task.values():
        for name, entry in registry.items():
            assert entry.name == name
            text = entry.description
            assert text and "\n" not in text and len(text) <= 100, name


def test_every_task_card_declares_its_records():
    for name, card in tasks.load_all().items():
        assert card.name == name and card.description and card.runtime().card is card
        head = card.headline()
        assert head.column in card.columns and {"epoch", "train_loss", "test_loss", "lr",
                                                "epoch_time_s", "samples_per_s"} <= set(
            card.columns)


@pytest.mark.parametrize("name", ["resnet20", "vgg_small", "small_cnn", "bireal_resnet18"])
def test_model_entries_build_their_network(name):
    model = classify_models.MODELS[name](10, 3, (32, 32), 0.25, nn.ReLU)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)

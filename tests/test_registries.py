"""The dataset and model registries: one entry per name, each with a one-line description."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from harness import config as C
from harness.tasks import models as M
from harness.tasks.classify import data as D
from methods.base import UserError


def test_every_dataset_has_one_entry_with_a_one_line_description():
    described = D.describe_datasets()
    assert list(described) == list(D.DATASETS)
    assert set(described) == {"digits", "cifar10", "cifar100", "mnist", "fashion-mnist",
                              "imagefolder"}
    for name, text in described.items():
        assert D.DATASETS[name].name == name
        assert text and "\n" not in text and len(text) <= 100, name
        assert D.DATASETS[name].data_root in ("required", "optional", "unused"), name


def test_dataset_defaults_read_from_the_registry():
    assert [n for n in D.DATASETS if D.default_augment(n)] == ["cifar10", "cifar100",
                                                               "imagefolder"]
    assert not D.default_augment("svhn")
    assert D.DATASETS["fashion-mnist"].default_root == D.FASHION_MNIST_DEBIAN
    with pytest.raises(UserError, match="unknown dataset 'svhn'") as e:
        D.check_name("svhn")
    assert e.value.field == "data.name"
    D.check_root(C.DataConfig(name="digits", root="/nonexistent"))  # digits reads no root


def test_every_model_has_one_entry_with_a_one_line_description():
    described = M.describe_models()
    assert list(described) == list(M.MODELS)
    assert set(described) == {"resnet20", "vgg_small", "resnet18", "bireal_resnet18",
                              "small_cnn", "edsr_baseline", "srresnet"}
    for name, text in described.items():
        assert M.MODELS[name].name == name
        assert text and "\n" not in text and len(text) <= 100, name


@pytest.mark.parametrize("name", ["resnet20", "vgg_small", "small_cnn", "bireal_resnet18"])
def test_model_entries_build_their_network(name):
    model = M.MODELS[name](10, 3, (32, 32), 0.25, nn.ReLU)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)

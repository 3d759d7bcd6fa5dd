"""The evaluation loop: same predictions as a plain loop, top-5, layout/mode restored, progress."""


import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from riembench.data.tasks import NetworkTask
from riembench.harness.evaluate import (
    Evaluator,
    autocast_dtype,
    classification_metrics,
    predict,
    topk_accuracy,
)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 7))


def _data(n: int = 21) -> TensorDataset:
    g = torch.Generator().manual_seed(1)
    return TensorDataset(torch.randn(n, 3, 12, 12, generator=g), torch.randint(0, 7, (n,), generator=g))


def test_topk_accuracy_by_hand():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.3], [0.2, 0.3, 0.5]])
    labels = torch.tensor([1, 2, 0])
    assert topk_accuracy(logits, labels, 1) == pytest.approx(100 / 3)
    assert topk_accuracy(logits, labels, 2) == pytest.approx(200 / 3)  # row 1: 2 is second
    assert topk_accuracy(logits, labels, 5) == 100.0  # k capped at 3 classes
    assert classification_metrics(logits, labels) == {"acc": pytest.approx(100 / 3), "top5": 100.0}


def test_predict_matches_a_plain_loop_and_restores_the_model():
    model, data = _net(), _data()
    model.train()
    logits, labels = predict(model, data, batch_size=8)
    assert model.training  # mode restored
    assert model[0].weight.is_contiguous()  # layout restored after channels_last
    model.eval()
    with torch.no_grad():
        plain = model(data.tensors[0])
    assert torch.equal(labels, data.tensors[1])
    torch.testing.assert_close(logits, plain, rtol=1e-5, atol=1e-5)
    assert logits.dtype == torch.float32


def test_autocast_only_on_cuda():
    assert autocast_dtype(torch.device("cpu")) is None
    cuda = torch.device("cuda")
    assert autocast_dtype(cuda, False) is None and autocast_dtype(cuda, "off") is None
    assert autocast_dtype(cuda, "fp16") is torch.float16
    assert autocast_dtype(cuda, torch.bfloat16) is torch.bfloat16


def test_progress_bar_counts_batches(capsys):
    predict(_net(), _data(), batch_size=8, progress=True, desc="eval dev")
    err = capsys.readouterr().err
    assert "eval dev" in err and "/3 [" in err and "batch" in err  # 21 images, 8 a batch
    predict(_net(), _data(), batch_size=8, progress=False)
    assert capsys.readouterr().err == ""


class _Task(NetworkTask):
    name, num_classes, in_channels, image_size, dev_note = "t", 3, 1, 4, ""

    def __init__(self, data):
        self.data = data

    def split(self, name):
        return self.data


def test_evaluator_reports_top1_top5_and_agreement_with_the_original():
    model, data = _net(), _data()
    evaluator = Evaluator(_Task(data), model, torch.device("cpu"), 8, 0)
    metrics = evaluator.split(model, "dev")
    assert set(metrics) == {"acc", "top5", "agree", "out_rel_err"}
    assert metrics["top5"] >= metrics["acc"] and metrics["agree"] == 100.0
    assert evaluator.score(model, "dev") == metrics["acc"]

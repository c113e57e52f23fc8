"""Models whose forward returns more than a logits tensor: torchvision's GoogLeNet and
Inception v3 (a named tuple with auxiliary logits in train mode), Hugging Face-style models (a
mapping with ``logits``). Unlearning trains in train mode, so these broke with an
AttributeError before ``run_unlearning`` ran both models behind ``LogitsOnly``."""

from __future__ import annotations

import collections

import pytest
import torch
import torchvision
from torch import nn

import delete
from delete.errors import UnsupportedOutputError
from delete.metrics.predict import predict
from tests.unit._tiny import TinyNet, loader_of, tiny_data

Outputs = collections.namedtuple("Outputs", "logits aux")


class AuxNet(TinyNet):
    """TinyNet with an auxiliary head: a named tuple in train mode, logits in eval mode."""

    def __init__(self) -> None:
        super().__init__()
        self.aux = nn.Linear(4 * 8 * 8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor | Outputs:  # type: ignore[override]
        feats = torch.relu(self.bn(self.conv(x))).flatten(1)
        logits = self.head(feats)
        return Outputs(logits, self.aux(feats)) if self.training else logits


class MappingNet(TinyNet):
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:  # type: ignore[override]
        return {"hidden": x, "logits": super().forward(x)}


class TextNet(TinyNet):
    def forward(self, x: torch.Tensor) -> str:  # type: ignore[override]
        return "no logits here"


def _forget_loader() -> torch.utils.data.DataLoader:
    images, labels = tiny_data()
    return loader_of(images[labels == 1], labels[labels == 1])


@pytest.mark.parametrize("pinned", [{}, {"lr": 0.05, "epochs": 5}], ids=["defaults", "fixed"])
def test_a_model_with_an_auxiliary_head_is_unlearned_and_handed_back(pinned: dict) -> None:
    torch.manual_seed(0)
    model = AuxNet()
    aux_before = model.aux.weight.detach().clone()
    out = delete.unlearn(model, _forget_loader(), [1], device="cpu", progress=False, **pinned)
    assert type(out) is AuxNet  # the caller's own module, not a wrapper
    logits, _ = predict(out, _forget_loader(), device="cpu")
    assert (logits.argmax(1) != 1).all()  # forgotten
    # Only the head the model predicts with is distilled: the auxiliary one gets no gradient.
    assert torch.equal(out.aux.weight, aux_before)


def test_a_model_returning_a_mapping_is_unlearned_and_predicted() -> None:
    torch.manual_seed(0)
    out = delete.unlearn(
        MappingNet(), _forget_loader(), [1], device="cpu", progress=False, lr=0.05, epochs=5
    )
    assert isinstance(out, MappingNet)
    logits, labels = predict(out, _forget_loader(), device="cpu")
    assert logits.shape == (len(labels), 4)
    assert (logits.argmax(1) != 1).all()


class SoftmaxNet(TinyNet):
    """TinyNet ending in ``nn.Softmax``: it returns probabilities, as Keras-style heads do."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x).softmax(1)


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.state_dict().items()}


@pytest.mark.parametrize("pinned", [{}, {"lr": 0.05, "epochs": 5}], ids=["defaults", "fixed"])
def test_a_model_returning_probabilities_unlearns_as_its_logits_twin(pinned: dict) -> None:
    """log(softmax(z)) has the softmax of z, so DELETE's loss and every gradient are the same:
    the two models must end with the same weights. Distilled raw, the probabilities' softmax is
    near uniform and the run differs."""
    torch.manual_seed(0)
    twin = TinyNet()
    probs = SoftmaxNet()
    probs.load_state_dict(twin.state_dict())

    logits_run = delete.run_unlearning(
        twin, _forget_loader(), [1], "delete", "cpu", progress=False, **pinned
    )
    probs_run = delete.run_unlearning(
        probs, _forget_loader(), [1], "delete", "cpu", progress=False, **pinned
    )

    a, b = _weights(logits_run.model), _weights(probs_run.model)
    assert all(torch.allclose(a[n], b[n], atol=1e-4) for n in a), [
        n for n in a if not torch.allclose(a[n], b[n], atol=1e-4)
    ]
    assert probs_run.runtime["outputs"].startswith("probabilities")
    assert "outputs" not in logits_run.runtime
    assert type(probs_run.model) is SoftmaxNet


def test_probabilities_are_predicted_as_their_log() -> None:
    torch.manual_seed(0)
    model = SoftmaxNet().eval()
    images, _ = tiny_data()
    logits, _ = predict(model, loader_of(images, torch.zeros(len(images), dtype=torch.long)), "cpu")
    with torch.no_grad():
        expected = model(images).log()
    assert torch.allclose(logits, expected, atol=1e-5)


def test_an_output_without_logits_is_refused_in_one_line() -> None:
    with pytest.raises(UnsupportedOutputError) as info:
        delete.unlearn(TextNet(), _forget_loader(), [1], device="cpu", progress=False)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("the model returned str, not logits")


def test_torchvision_googlenet_with_its_auxiliary_heads() -> None:
    torch.manual_seed(0)
    model = torchvision.models.googlenet(num_classes=4, aux_logits=True, init_weights=True)
    images = torch.rand(8, 3, 64, 64)
    loader = loader_of(images, torch.full((8,), 2), batch_size=4)
    out = delete.unlearn(model.eval(), loader, [2], device="cpu", progress=False, lr=0.01, epochs=1)
    assert type(out) is torchvision.models.GoogLeNet
    assert out(images).shape == (8, 4)  # eval mode: plain logits, as before

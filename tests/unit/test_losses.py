"""DELETE loss: definition, the paper's decomposition, spatial logits."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from delete.losses import delete_loss, mask_logits


def _reference_kl(
    student: torch.Tensor, teacher: torch.Tensor, forget: list[int], t: float
) -> torch.Tensor:
    masked = teacher.clone()
    masked[:, forget] = float("-inf")
    target = F.softmax(masked / t, dim=1)
    log_s = F.log_softmax(student / t, dim=1)
    keep = target > 0
    per_sample = torch.where(
        keep, target * (torch.log(target.clamp_min(1e-30)) - log_s), torch.zeros_like(target)
    )
    return per_sample.sum(1).mean() * t * t


@pytest.mark.parametrize("forget", [[0], [2, 5]])
def test_decomposition_into_forgetting_and_retention_terms(forget: list[int]) -> None:
    torch.manual_seed(0)
    student = torch.randn(16, 7, dtype=torch.float64)
    teacher = torch.randn(16, 7, dtype=torch.float64)
    loss = delete_loss(student, teacher, forget)

    p = F.softmax(student, dim=1)
    retain = [c for c in range(7) if c not in forget]
    p_forget = p[:, forget].sum(1)
    forgetting_term = -torch.log1p(-p_forget)
    p_hat = p[:, retain] / p[:, retain].sum(1, keepdim=True)
    t_hat = F.softmax(teacher[:, retain], dim=1)
    retention_term = (t_hat * (t_hat.log() - p_hat.log())).sum(1)
    expected = (forgetting_term + retention_term).mean()

    assert torch.allclose(loss.double(), expected, atol=1e-5)
    assert float(forgetting_term.mean()) > 0


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_matches_masked_kl_definition_with_t_squared_scaling(temperature: float) -> None:
    torch.manual_seed(1)
    student, teacher = torch.randn(8, 5), torch.randn(8, 5)
    got = delete_loss(student, teacher, [3], temperature)
    assert torch.allclose(got, _reference_kl(student, teacher, [3], temperature), atol=1e-5)


def test_zero_when_student_already_matches_masked_teacher() -> None:
    teacher = torch.randn(4, 6)
    student = mask_logits(teacher, [1]).nan_to_num(neginf=-1e4)
    assert float(delete_loss(student, teacher, [1])) == pytest.approx(0.0, abs=1e-5)


def test_spatial_logits_average_kl_over_pixels() -> None:
    torch.manual_seed(2)
    student, teacher = torch.randn(2, 4, 3, 5), torch.randn(2, 4, 3, 5)
    flat_s = student.permute(0, 2, 3, 1).reshape(-1, 4)
    flat_t = teacher.permute(0, 2, 3, 1).reshape(-1, 4)
    assert torch.allclose(
        delete_loss(student, teacher, [0]), _reference_kl(flat_s, flat_t, [0], 1.0), atol=1e-5
    )


def test_gradient_pushes_forget_probability_down() -> None:
    student = torch.zeros(1, 3, requires_grad=True)
    delete_loss(student, torch.tensor([[5.0, 1.0, 1.0]]), [0]).backward()
    assert student.grad is not None and student.grad[0, 0] > 0  # descent lowers the forget logit


def test_shape_mismatch_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        delete_loss(torch.zeros(2, 3), torch.zeros(2, 4), [0])

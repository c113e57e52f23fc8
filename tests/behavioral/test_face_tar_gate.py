"""The face verification gate rejects what identity accuracy hides: a person who still verifies.

The "unlearned" model is the trained original with one change: the forgotten identity's centre
in the cosine head is turned around, so the classifier never names that identity again
(identity accuracy falls to 0), while the embedding network, which a face system verifies
with, is untouched. By construction the forgotten identity verifies exactly as before, so the
shipped face gates must reject it on ``max_tar_forget`` and on nothing else. The verdict is
fixed by this setup, not recomputed with the gate function.
"""

from __future__ import annotations

import copy

import torch

from delete.applications.face import evaluate_face, face_model_spec, load_face_data
from delete.data import load_digits
from delete.models import build_model
from delete.training import TrainConfig, train_classifier
from tasks.evaluation import check_gates, load_gates

FORGET = (3,)


def _turned_away(model: torch.nn.Module, identity: int) -> torch.nn.Module:
    out = copy.deepcopy(model)
    with torch.no_grad():
        out.head.weight[identity] *= -1.0  # type: ignore[index, operator, union-attr]
    return out.eval()


def test_an_identity_that_still_verifies_is_rejected_by_the_tar_gate() -> None:
    data = load_face_data(bundle=load_digits(seed=0, augment=False))
    torch.manual_seed(0)
    model = build_model(face_model_spec(data))
    train_classifier(model, data.train, TrainConfig(epochs=8, lr=0.05, seed=0), device="cpu")
    model.eval()
    fooled = _turned_away(model, FORGET[0])

    before = evaluate_face(model, data, FORGET)
    after = evaluate_face(fooled, data, FORGET)
    # the setup did what it says: not identified any more, verified as before
    assert before["acc_forget"] > 80.0 and after["acc_forget"] == 0.0
    assert after["tar_forget"] == before["tar_forget"] > 10.0

    gates = load_gates(None, "face")  # the shipped face gates
    forgotten = [data.class_names[c] for c in FORGET]
    verdict = check_gates("face", before, after, gates, forgotten)
    assert not verdict.passed
    assert [c.name for c in verdict.checks if not c.passed] == ["max_tar_forget"]

"""An embedding network with a cosine identity head (CosFace / ArcFace style).

The head holds one L2-normalised centre per identity; its logits are ``s * cos(theta)``
between the L2-normalised embedding and each centre. The forward pass always returns these
plain scaled cosines, so the model is an ordinary classifier to :func:`delete.unlearn` and
DELETE masks forgotten identities' logits like any class. The additive margin of CosFace /
ArcFace is applied only by the training loss
(:class:`~delete.applications.face.loss.CosineMarginLoss`), against the true label, never at
inference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from delete.data import DatasetBundle
from delete.models import ModelSpec, register_model
from delete.models.small_cnn import conv_stack

__all__ = ["CosineFaceNet", "CosineHead", "face_model_spec"]


class CosineHead(nn.Module):
    """Scaled cosine similarity to learned, L2-normalised identity centres.

    Args:
        embedding_dim: Width of the embeddings.
        num_classes: Number of identities.
        scale: ``s``, the logit scale (cosines live in ``[-1, 1]``).

    Example:
        >>> head = CosineHead(4, 3, scale=10.0)
        >>> bool(head(torch.randn(2, 4)).abs().max() <= 10.0 + 1e-5)
        True
    """

    def __init__(self, embedding_dim: int, num_classes: int, scale: float = 10.0) -> None:
        super().__init__()
        self.scale = float(scale)
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform centres (used at construction and by re-initialising baselines)."""
        nn.init.xavier_uniform_(self.weight)

    def cosines(self, embeddings: Tensor) -> Tensor:
        """``cos(theta)`` between each embedding and each identity centre, ``(N, K)``."""
        return F.linear(F.normalize(embeddings, dim=1), F.normalize(self.weight, dim=1))

    def forward(self, embeddings: Tensor) -> Tensor:
        return self.scale * self.cosines(embeddings)


class CosineFaceNet(nn.Module):
    """Convolutional embedding network plus :class:`CosineHead`; ``forward`` returns logits.

    Args:
        num_classes: Number of identities.
        in_channels: Image channels (1 for grayscale, 3 for RGB faces).
        embedding_dim: Width of the identity embedding.
        width: Channels of the second conv block (the first has half, the third double).
        scale: Logit scale ``s`` of the cosine head.

    Example:
        >>> net = CosineFaceNet(num_classes=5, in_channels=1).eval()
        >>> net(torch.zeros(2, 1, 28, 28)).shape, net.embed(torch.zeros(2, 1, 28, 28)).shape
        (torch.Size([2, 5]), torch.Size([2, 64]))
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        embedding_dim: int = 64,
        width: int = 32,
        scale: float = 10.0,
    ) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *conv_stack(in_channels, width),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        # The BatchNorm after the projection is the usual face-recognition "BN-neck".
        self.projection = nn.Sequential(
            nn.Linear(2 * width, embedding_dim, bias=False), nn.BatchNorm1d(embedding_dim)
        )
        self.head = CosineHead(embedding_dim, num_classes, scale)

    def embed(self, x: Tensor) -> Tensor:
        """L2-normalised identity embeddings ``(N, embedding_dim)`` (used for verification)."""
        return F.normalize(self.projection(self.features(x)), dim=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.projection(self.features(x)))


register_model("face_cosine")(CosineFaceNet)


def face_model_spec(data: DatasetBundle) -> ModelSpec:
    """A :class:`CosineFaceNet` sized for ``data`` (64-d embeddings, logit scale 10).

    Scale 10 rather than the 30-64 of large face models: with ten identities it trains as well,
    and its softer teacher distribution is what DELETE distils (at 16, the retained identities
    lost 5-10 accuracy points in our sweep; at 10, under 1).

    Example:
        >>> from delete.data import ImageTensorDataset
        >>> ds = ImageTensorDataset(torch.zeros(2, 3, 32, 32), torch.tensor([0, 1]))
        >>> face_model_spec(DatasetBundle("f", ds, ds, ["a", "b"])).arch
        'face_cosine'
    """
    c, h, _ = data.image_shape
    return ModelSpec("face_cosine", data.num_classes, c, h, {"embedding_dim": 64, "scale": 10.0})

"""Model cards: how a team describes its own trained model and dataset to ``unlearn register``.

A card is a small YAML (or JSON) file::

    name: faces-resnet18
    architecture: torchvision:resnet18          # or a built-in name, or package.module:callable
    architecture_kwargs: {num_classes: 40}
    weights: incoming/faces-resnet18.safetensors  # or a state_dict .pt/.pth (weights only)
    dataset: datasets/faces                       # ImageFolder: train/<class>/*, test/<class>/*
    preprocess: {channels: 3, size: 112, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]}
    task: classification

It is parsed as defensively as a deletion request (size cap, UTF-8, no YAML aliases or duplicate
keys) into the frozen :class:`ModelCard`; unknown keys are refused, and every problem is one
:class:`CardError` line naming the file and the key.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from tasks._common import PipelineError
from tasks.requests import MODEL_NAME_PATTERN, RequestError, _StrictSafeLoader, read_capped

__all__ = ["CardError", "Preprocess", "ModelCard", "parse_card", "load_card", "CARD_KEYS"]

_MAX_CARD_BYTES = 65536
_SUFFIXES = {".yaml", ".yml", ".json"}


class CardError(PipelineError):
    """A model card is malformed, invalid, or names something that cannot be registered."""


class Preprocess(BaseModel):
    """What the model expects as input: channels, size, per-channel normalisation.

    Images are converted to ``channels`` (grayscale <-> RGB), resized to ``size`` (an int is a
    square, ``[h, w]`` otherwise), scaled to ``[0, 1]`` and then normalised with ``mean`` and
    ``std`` (both or neither; one value per channel).

    Example:
        >>> Preprocess(channels=1, size=[24, 32]).hw
        (24, 32)
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    channels: Literal[1, 3]
    size: int | tuple[int, int]
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    @field_validator("size")
    @classmethod
    def _check_size(cls, value: int | tuple[int, int]) -> int | tuple[int, int]:
        sides = (value,) if isinstance(value, int) else value
        if min(sides) < 1 or max(sides) > 4096:
            raise ValueError(f"must be a side in 1..4096 or [height, width], got {value!r}")
        return value

    @model_validator(mode="after")
    def _check_normalisation(self) -> Preprocess:
        if (self.mean is None) != (self.std is None):
            raise ValueError("mean and std go together: give both or neither")
        for key, values in (("mean", self.mean), ("std", self.std)):
            if values is not None and len(values) != self.channels:
                raise ValueError(
                    f"{key} needs {self.channels} value(s), one per channel, got {len(values)}"
                )
        if self.std is not None and min(self.std) <= 0:
            raise ValueError(f"std values must be positive, got {list(self.std)}")
        return self

    @property
    def hw(self) -> tuple[int, int]:
        """``(height, width)`` of the model input."""
        if isinstance(self.size, int):
            return self.size, self.size
        return int(self.size[0]), int(self.size[1])

    def to_json(self) -> str:
        """Canonical JSON (the ``preprocess`` tag of a registered version)."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True)


_Name = Annotated[str, StringConstraints(pattern=MODEL_NAME_PATTERN)]
_Text = Annotated[str, StringConstraints(min_length=1, max_length=1024)]


class ModelCard(BaseModel):
    """A parsed model card (see the module docstring; paths are still as written)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: _Name
    architecture: _Text
    architecture_kwargs: dict[str, Any] = Field(default_factory=dict)
    weights: _Text
    dataset: _Text
    preprocess: Preprocess
    task: str = "classification"
    task_options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("architecture_kwargs")
    @classmethod
    def _check_kwargs(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:  # they are stored as a JSON tag and rebuilt from it, so they must survive JSON
            if json.loads(json.dumps(value)) != value:
                raise ValueError
        except (TypeError, ValueError):
            raise ValueError("must be plain JSON values (numbers, strings, lists, maps)") from None
        return value


#: The card's keys, in the order the README's reference table lists them.
CARD_KEYS: tuple[str, ...] = tuple(ModelCard.model_fields)


def _format(source: str, exc: ValidationError) -> str:
    first = exc.errors(include_url=False)[0]
    loc = ".".join(str(part) for part in first["loc"] if not isinstance(part, int)) or "card"
    msg = str(first["msg"]).removeprefix("Value error, ")
    if first["type"] == "missing":
        text = f"missing required key '{loc}'"
    elif first["type"] == "extra_forbidden":
        text = f"unknown key '{loc}' (allowed: {', '.join(CARD_KEYS)})"
    else:
        text = f"key '{loc}': {msg[:1].lower() + msg[1:]}"
    return " ".join(f"{source}: {text}".split())[:400]


def parse_card(data: object, source: str = "card") -> ModelCard:
    """Validate an already-parsed mapping.

    Raises:
        CardError: One line naming ``source`` and the first problem.

    Example:
        >>> parse_card({"name": "m", "architecture": "small_cnn", "weights": "w.pt"})
        Traceback (most recent call last):
        ...
        tasks.model_card.CardError: card: missing required key 'dataset'
    """
    if not isinstance(data, dict):
        kind = "empty" if data is None else type(data).__name__
        raise CardError(f"{source}: expected a mapping of keys at the top level, got {kind}")
    try:
        return ModelCard.model_validate(data)
    except ValidationError as exc:
        raise CardError(_format(source, exc)) from None


def load_card(path: str | Path) -> ModelCard:
    """Read and validate a card file (YAML or JSON, at most 64 KiB).

    Raises:
        CardError: Unreadable, malformed or invalid card (one line).
    """
    target = Path(path)
    name = target.name
    if target.suffix.lower() not in _SUFFIXES:
        raise CardError(f"{name}: unsupported file type {target.suffix!r}; use .yaml, .yml, .json")
    try:
        raw = read_capped(target, _MAX_CARD_BYTES)
    except RequestError as exc:
        raise CardError(str(exc)) from None
    try:
        text = raw.decode("utf-8-sig")
        data = yaml.load(text, Loader=_StrictSafeLoader)  # noqa: S506 - a SafeLoader subclass
    except UnicodeDecodeError:
        raise CardError(f"{name}: file is not UTF-8 text") from None
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc)
        raise CardError(" ".join(f"{name}: malformed YAML: {problem}".split())) from None
    return parse_card(data, source=name)

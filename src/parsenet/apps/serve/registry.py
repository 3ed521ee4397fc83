"""The models the page can pick from: each choice is one model or a pair shown side by side.

Serve starts with one choice loaded (the ``--model`` or ``--checkpoint`` asked for, else the
default); the others (every released pair, and the demo's when ``make demo`` has run) load
on first use, so a picker over all of them costs nothing until a user picks one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from parsenet.apps.serve.examples import Examples, examples_for
from parsenet.apps.serve.models import ServedModel, load_served_models
from parsenet.errors import UsageError
from parsenet.models.released import Release

__all__ = ["ModelChoice", "ModelRegistry"]

Source = tuple[str | None, Any]  # (title or None, checkpoint path or Release)


@dataclass(frozen=True)
class ModelChoice:
    """One entry of the picker: ``key`` (used in URLs) and the (title, source) pairs."""

    key: str
    sources: tuple[Source, ...]

    def dataset(self) -> str | None:
        """The dataset named by a released model's card, if any."""
        for _, source in self.sources:
            if isinstance(source, Release):
                return source.meta.get("dataset")
        return None


def _source_title(title: str | None, source: Any) -> str:
    return title or (source.name if isinstance(source, Release) else Path(source).name)


class ModelRegistry:
    """The picker's choices, their models loaded once on first use (thread-safe)."""

    def __init__(self, choices: Sequence[ModelChoice], *,
                 loader: Callable[[Sequence[Source]], list[ServedModel]] = load_served_models
                 ) -> None:
        if not choices:
            raise UsageError("serve needs at least one model")
        keys = [c.key for c in choices]
        if len(set(keys)) != len(keys):
            raise UsageError(f"serve: two model choices share a key ({', '.join(keys)})")
        self.choices = list(choices)
        self._by_key = {c.key: c for c in choices}
        self._loader = loader
        self._models: dict[str, list[ServedModel]] = {}
        self._examples: dict[str, Examples] = {}
        self._lock = threading.Lock()

    @classmethod
    def of_models(cls, models: Sequence[ServedModel], key: str = "models") -> ModelRegistry:
        """A registry of one choice whose models are already loaded."""
        registry = cls([ModelChoice(key, tuple((m.name, m.checkpoint) for m in models))])
        registry._models[key] = list(models)
        return registry

    @property
    def default_key(self) -> str:
        return self.choices[0].key

    def choice(self, key: str | None) -> ModelChoice:
        """The choice ``key`` (None: the default); UsageError for an unknown key."""
        key = self.default_key if key is None else key
        if key not in self._by_key:
            raise UsageError(f"model choice {key!r}: not served here (choices: "
                             f"{', '.join(self._by_key)})")
        return self._by_key[key]

    def models(self, key: str | None = None) -> list[ServedModel]:
        """The choice's loaded models (loading them the first time)."""
        choice = self.choice(key)
        with self._lock:  # two first requests for one choice load it once
            if choice.key not in self._models:
                self._models[choice.key] = self._loader(choice.sources)
            return self._models[choice.key]

    def examples(self, key: str | None = None) -> Examples:
        """Images from the domain of the choice's models (see :mod:`.examples`)."""
        choice = self.choice(key)
        models = self.models(choice.key)
        with self._lock:
            if choice.key not in self._examples:
                self._examples[choice.key] = examples_for(models[-1].data)
            return self._examples[choice.key]

    def title(self, key: str | None = None) -> str:
        """What the picker shows: the dataset, then the model names ("a vs b")."""
        choice = self.choice(key)
        loaded = self._models.get(choice.key)
        names = ([m.name for m in loaded] if loaded is not None
                 else [_source_title(t, s) for t, s in choice.sources])
        dataset = choice.dataset()
        return f"{dataset}: {' vs '.join(names)}" if dataset else " vs ".join(names)

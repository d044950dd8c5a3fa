"""One folder format for every trained torch model (reward head, CTR backbones, TIGER and
OneRec, SASRec): a JSON file of configs and training history, a state-dict file, and any
arrays the model needs (``<name>.npy``), written together as one folder (``atomic_folder``:
a temp folder, then one rename). Loading names the file at fault and raises
:class:`ModelFileError` when a file is missing, unreadable, corrupt or does not match the
config beside it.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lgsid_pipeline.atomic import atomic_folder

if TYPE_CHECKING:
    from torch import nn

# what reading a damaged file raises, whatever the reader (json, numpy, torch)
READ_ERRORS = (
    OSError,
    KeyError,
    TypeError,
    ValueError,
    RuntimeError,
    EOFError,
    pickle.UnpicklingError,
)


class ModelFileError(Exception):
    """A saved model's file is missing, unreadable, corrupt or does not match its config."""


@dataclass(frozen=True)
class ModelFiles:
    """The file names of one kind of saved model, and how to write and read them."""

    label: str  # "CTR model", "generative model", ... (in error messages)
    meta_file: str
    weights_file: str

    def save(
        self,
        folder: Path | str,
        model: nn.Module,
        meta: Mapping[str, Any],
        arrays: Mapping[str, np.ndarray] | None = None,
    ) -> Path:
        """Write ``meta`` (JSON), ``model``'s state dict and ``arrays`` as one folder."""
        import torch

        folder = Path(folder)
        with atomic_folder(folder) as tmp:
            torch.save(model.state_dict(), tmp / self.weights_file)
            for name, array in (arrays or {}).items():
                np.save(tmp / f"{name}.npy", array)
            (tmp / self.meta_file).write_text(json.dumps(dict(meta), indent=2))
        return folder

    @contextmanager
    def reading(self, path: Path, what: str = "") -> Iterator[None]:
        """Turn any error while reading ``path`` (or building from it) into a
        :class:`ModelFileError` that names it."""
        if not path.is_file():
            raise ModelFileError(f"{self.label} file {path} is missing")
        try:
            yield
        except READ_ERRORS as exc:
            raise ModelFileError(f"{self.label} file {path} is corrupt{what}: {exc}") from exc

    def read_meta(self, folder: Path | str) -> dict[str, Any]:
        """The JSON file of configs and history."""
        path = Path(folder) / self.meta_file
        with self.reading(path):
            meta = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(meta, dict):
                raise ValueError("not a JSON object")
        return meta

    def read_array(self, folder: Path | str, name: str) -> np.ndarray:
        """The array saved as ``name``."""
        path = Path(folder) / f"{name}.npy"
        with self.reading(path):
            return np.load(path, allow_pickle=False)

    def load_weights(self, folder: Path | str, model: nn.Module) -> nn.Module:
        """Load the saved state dict into ``model`` (built from the config), in eval mode."""
        import torch

        path = Path(folder) / self.weights_file
        with self.reading(path, f" or does not match {self.meta_file}"):
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return model.eval()

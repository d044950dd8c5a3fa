"""Settings shared by every tokenizer (codebook sizes, training, primary-feature weights)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TokenizerConfig:
    """Codebook sizes per level and the knobs of fitting (METHOD section 4).

    ``codebook_sizes`` has one entry per level; for LGSID the first is the number of primary
    (geographic) clusters and the rest are residual codebooks. The four ``w_*`` weights scale
    the blocks of the primary features (admin areas, city-relative coordinates, category,
    brand); baselines ignore them.
    """

    codebook_sizes: list[int] = field(default_factory=lambda: [64, 64, 64])
    w_admin: float = 1.0
    w_geo: float = 2.0
    w_cat: float = 0.5
    w_brand: float = 0.5
    city_balance: float = 1.0  # primary k-means weight per item ~ n_city^-balance (0: none)
    max_vocab: int = 256  # categories and brands kept as one-hot columns (most frequent)
    epochs: int = 30
    batch_size: int = 1024
    lr: float = 2e-3
    warm_start_lr_scale: float = 0.02  # a retrain starting from the previous codebooks fine-tunes
    commitment: float = 0.25
    entropy_weight: float = 0.05  # KL-to-uniform regulariser on residual levels >= 2
    temperature: float = 0.05  # of softmax(-||r - C||^2 / T) in that regulariser
    latent_dim: int = 32  # RQ-VAE latent size
    hidden_dim: int = 256  # RQ-VAE encoder/decoder width
    seed: int = 0

    def __post_init__(self) -> None:
        sizes = list(self.codebook_sizes)
        if not sizes or any(not isinstance(k, int) or k < 2 for k in sizes):
            raise ValueError(f"codebook_sizes must be integers >= 2, got {self.codebook_sizes!r}")
        self.codebook_sizes = sizes
        for name in (
            "w_admin",
            "w_geo",
            "w_cat",
            "w_brand",
            "commitment",
            "entropy_weight",
            "city_balance",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("epochs", "batch_size", "max_vocab", "latent_dim", "hidden_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.warm_start_lr_scale <= 1:
            raise ValueError("warm_start_lr_scale must lie in (0, 1]")
        if self.lr <= 0 or self.temperature <= 0:
            raise ValueError("lr and temperature must be positive")


@dataclass(frozen=True)
class CodeCheckLimits:
    """Limits of the semantic-ID tables' warning checks."""

    max_churn: float = 0.2  # warn when more than this share of codes changed in one run
    min_utilisation: float = 0.5  # warn when a level uses less of its codebook

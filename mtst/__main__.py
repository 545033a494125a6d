"""Command line: ``python -m mtst train | evaluate | rescore | export | predict | encode | serve | notebooks |
report``."""

import argparse
import json
import logging
import sys
from pathlib import Path


def _train(args) -> None:
    from .config import load_configs
    from .experiment import run_experiment

    model_cfg, data_cfg, train_cfg = load_configs(args.profile, args.config, args.set)
    name = args.name or args.profile or "run"
    metrics = run_experiment(model_cfg, data_cfg, train_cfg, name, args.runs_dir, args.record_dir,
                             args.cache_dir, args.resume, args.profile, reuse=args.reuse)
    if metrics.get("interrupted"):  # train.stop_after_steps: the state is saved, nothing was tested
        print(f"interrupted at step {metrics['step']} (train.stop_after_steps); the training state is in "
              f"{Path(args.runs_dir) / name / 'last.pt'}. Resume with the same command plus --resume, and "
              "train.stop_after_steps raised or removed.")
    elif metrics:  # empty on ranks other than 0
        print(json.dumps({k: metrics[k] for k in ("name", "wall_seconds", "best_epoch")} | {
            "ag_news_test_accuracy": metrics["test"].get("cls", {}).get("accuracy"),
            "conll_test_entity_f1": metrics["test"].get("ner", {}).get("entity_f1"),
            "conll_test_token_accuracy": metrics["test"].get("ner", {}).get("token_accuracy")}, indent=2))


def _evaluate(args) -> None:
    from .config import load_configs
    from .distributed import resolve_device
    from .experiment import build_task_data
    from .model import MultiTaskSentenceTransformer
    from .train import evaluate

    _, data_cfg, train_cfg = load_configs(args.profile, args.config, args.set)
    model = MultiTaskSentenceTransformer.from_pretrained(args.checkpoint).to(resolve_device(train_cfg.device))
    data, _ = build_task_data(model, data_cfg)
    split = {t: getattr(d, args.split) for t, d in data.items()}
    scores = evaluate(model, split, train_cfg.eval_batch_size, train_cfg.precision)
    if args.out:  # a results file: what was scored, on what, with which code and machine
        from .runs import environment

        record = {"command": " ".join(sys.argv), "checkpoint": args.checkpoint, "split": args.split,
                  "environment": environment(train_cfg.device), **scores}
        Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(scores, indent=2))


def _rescore(args) -> None:
    from .config import load_configs
    from .experiment import rescore

    model_cfg, data_cfg, train_cfg = load_configs(args.profile, args.config, args.set)
    metrics = rescore(model_cfg, data_cfg, train_cfg, args.name, args.runs_dir, args.record_dir, args.cache_dir)
    print(json.dumps({"name": args.name, "test_entity_f1": metrics["test"]["ner"]["entity_f1"],
                      "previous_test_entity_f1": metrics["rescored"]["previous_test"]["ner"]["entity_f1"]}))


def _export(args) -> None:
    from .model import MultiTaskSentenceTransformer

    MultiTaskSentenceTransformer.from_pretrained(args.checkpoint).save_pretrained(args.out)
    print(f"{args.out}: load it with sentence_transformers.SentenceTransformer({str(args.out)!r})")


def _predict(args) -> None:
    from .predict import Predictor

    texts = args.text or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    print(json.dumps(Predictor.from_pretrained(args.checkpoint).predict(texts), indent=2, ensure_ascii=False))


def _encode(args) -> None:
    from .encoder import SentenceTransformer

    texts = args.text or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    model = SentenceTransformer.from_pretrained(args.model, pooling=args.pooling, normalize=args.normalize)
    emb = model.encode(texts, convert_to="list")
    print(json.dumps({"model": args.model, "pooling": model.pooling, "normalized": model.normalize,
                      "dim": len(emb[0]), "embeddings": emb}))


def _serve(args) -> None:
    from .demo.app import run_server

    run_server(args.checkpoint, args.host, args.port, args.device)


def _notebooks(args) -> None:
    from .experiment import NOTEBOOKS, execute_all
    from .report import write_report

    execute_all(args.profile, only=tuple(args.only), since=args.since)
    if args.profile != "smoke":  # smoke runs leave the committed results alone
        write_report(NOTEBOOKS.parent)


def _report(args) -> None:
    from .report import write_report

    summary = write_report(args.root)
    print(json.dumps({"headline": summary["headline"], "runs": sorted(summary["runs"])}, indent=2))


def main(argv=None) -> None:
    """Parse the command line and run one command; a bad input file exits with a one-line error."""
    parser = argparse.ArgumentParser(prog="mtst", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def config_args(p):
        p.add_argument("--profile", choices=["smoke", "cpu", "gpu"], help="named configuration")
        p.add_argument("--config", help="JSON file with model / data / train sections")
        p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                       help="override one field, e.g. --set train.epochs=3 (repeatable)")

    p = sub.add_parser("train", help="train and test one configuration, leaving a run record")
    config_args(p)
    p.add_argument("--name", help="run name (default: the profile)")
    p.add_argument("--runs-dir", default="runs", help="checkpoints go to RUNS_DIR/NAME")
    p.add_argument("--record-dir", help="where the record goes (default: the checkpoint folder)")
    p.add_argument("--cache-dir", default="cache", help="tiny model and cached features")
    p.add_argument("--resume", action="store_true", help="continue from RUNS_DIR/NAME/last.pt")
    p.add_argument("--reuse", action="store_true",
                   help="return a finished run with the same config, resume an interrupted one, else train")
    p.set_defaults(func=_train)

    p = sub.add_parser("evaluate", help="score a saved model on a split")
    config_args(p)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--split", choices=["val", "test"], default="test")
    p.add_argument("--out", help="also write the scores, with the command and machine, to this JSON file")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("rescore", help="score a finished run's best checkpoint again with this version's evaluate()")
    config_args(p)
    p.add_argument("--name", required=True)
    p.add_argument("--runs-dir", default="runs")
    p.add_argument("--record-dir", help="where its metrics.json is (default: the checkpoint folder)")
    p.add_argument("--cache-dir", default="cache")
    p.set_defaults(func=_rescore)

    p = sub.add_parser("export", help="a saved model's encoder as a sentence-transformers folder")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=_export)

    p = sub.add_parser("predict", help="topic and entities of texts (arguments or stdin lines)")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("text", nargs="*")
    p.set_defaults(func=_predict)

    p = sub.add_parser("encode", help="sentence embeddings as JSON (Task 1)")
    p.add_argument("--model", default=None, help="hub id or folder (default: $MTST_MODEL or all-mpnet-base-v2)")
    p.add_argument("--pooling", choices=["mean", "cls", "max"])
    p.add_argument("--normalize", action=argparse.BooleanOptionalAction,
                   help="L2-normalise (default: as the model folder says, like sentence-transformers)")
    p.add_argument("text", nargs="*")
    p.set_defaults(func=_encode)

    p = sub.add_parser("serve", help="the web demo")
    p.add_argument("--checkpoint", help="trained model folder (default: base model, untrained heads)")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.set_defaults(func=_serve)

    p = sub.add_parser("notebooks", help="re-execute every notebook in place")
    p.add_argument("--profile", choices=["auto", "smoke", "cpu", "gpu"], default="auto",
                   help="auto: gpu when CUDA is present, else cpu")
    p.add_argument("--only", nargs="*", default=[], metavar="PREFIX", help="only these notebooks, e.g. 03 04")
    p.add_argument("--since", type=float, metavar="UNIX_SECONDS",
                   help="when the whole run began (make run: before setup); writes results/make-run-<profile>.json")
    p.set_defaults(func=_notebooks)

    p = sub.add_parser("report", help="results/summary.json, writeup.md tables and loss_plot.png from the records")
    p.add_argument("--root", default=".", help="the project folder")
    p.set_defaults(func=_report)

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        args.func(args)
    except Exception as err:
        from .assets import AssetError
        from .checkpoint import CheckpointError
        from .data import DataFormatError

        # A bad input file or folder: its message names it and says what to do; a traceback would bury it.
        if not isinstance(err, (AssetError, CheckpointError, DataFormatError, FileNotFoundError)):
            raise
        parser.exit(1, f"mtst {args.command}: error: {err}\n")


if __name__ == "__main__":
    main()

"""The benchmarks: their ``--tiny`` runs write complete, self-consistent records, and the committed
records in ``results/bench`` hold exactly the keys today's ``bench/*.py`` write and agree with themselves
and with ``summary.json``.
"""

import copy
import importlib.util
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from pytest import approx

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "results" / "bench"
FIXTURES = ROOT / "tests" / "fixtures" / "bench"
RECORDS = sorted(p.name for p in COMMITTED.glob("*.json") if p.name.startswith(("encode-", "train-")))


def run_bench(script: str, out: Path, *args: str) -> None:
    # One thread: these are smoke runs, and a busy machine makes OpenMP spin-waits very slow.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    subprocess.run([sys.executable, str(ROOT / "bench" / script), *args, "--out", str(out)], check=True, env=env,
                   cwd=ROOT, timeout=300, capture_output=True)


def load_bench_module(script: str):
    """``bench/<script>.py`` as a module (bench/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"bench_{script}", ROOT / "bench" / f"{script}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_summary_module():
    return load_bench_module("summary")


def key_paths(value, at: str = "") -> set[str]:
    """Every key of a JSON value as a path: ``settings.n``, ``results[].epoch_seconds`` (list items merged)."""
    if isinstance(value, dict):
        paths = set()
        for key, item in value.items():
            path = f"{at}.{key}" if at else key
            paths |= {path} | key_paths(item, path)
        return paths
    if isinstance(value, list):
        return set().union(*(key_paths(item, f"{at}[]") for item in value))
    return set()


def encode_modes(record: dict) -> list[str]:
    """Our modes in a record (not the baseline, not the peer backends)."""
    return [m for m, res in record["results"].items() if m != record["baseline"] and res.get("kind", "ours") == "ours"]


def check_encode(record: dict) -> None:
    """Rates are n / median seconds, speedups are ratios of those rates, exact modes match ST, the targets
    follow from the results. Peers (sentence-transformers' ONNX / OpenVINO backends) may be far from ST: int8."""
    results, n = record["results"], record["settings"]["n"]
    base = results[record["baseline"]]
    for name, res in results.items():
        assert len(res["seconds"]) == record["settings"]["repeats"], name
        assert res["sentences_per_s"] == approx(n / statistics.median(res["seconds"]), rel=1e-9), name
        if name == record["baseline"]:
            continue
        assert res["speedup_vs_st"] == approx(res["sentences_per_s"] / base["sentences_per_s"], rel=1e-9), name
        if res["exact"]:  # fp32 throughout; the default path ("exact") is documented to 1e-5
            assert res["max_abs_diff"] <= (1e-5 if name == "exact" else 1e-4), name
        floor = 0.99 if res.get("kind", "ours") == "ours" else 0
        assert floor < res["min_cosine"] <= res["mean_cosine"] <= 1 + 1e-9, name
    if "targets" not in record:  # records written before the peers
        return
    st = {k: v for k, v in results.items() if v["kind"] != "ours"}
    best = max(st, key=lambda k: st[k]["sentences_per_s"])
    targets, limits = record["targets"], record["targets"]["thresholds"]
    assert targets["best_st_backend"] == best
    for name, res in results.items():
        assert res["speedup_vs_best_st"] == approx(res["sentences_per_s"] / st[best]["sentences_per_s"]), name
        down = res["downstream"]
        assert down is None or (res["kind"] == "ours" and res["weights"] == "float32"), name
        if down and "exact" in results:
            ref = results["exact"]["downstream"]
            assert down["ag_news_accuracy_delta_points"] == approx(
                100 * (down["ag_news_accuracy"] - ref["ag_news_accuracy"])), name
            assert down["conll_entity_f1_delta_points"] == approx(
                100 * (down["conll_entity_f1"] - ref["conll_entity_f1"])), name
    if "fast" in targets:
        fast = results[targets["fast"]["mode"]]
        assert targets["fast"]["vs_best_st"] == approx(fast["speedup_vs_best_st"])
        down = fast["downstream"]  # None: not scored (--downstream none), so the target cannot be met
        worst = None if down is None else \
            max(abs(down["ag_news_accuracy_delta_points"]), abs(down["conll_entity_f1_delta_points"]))
        assert targets["fast"]["worst_downstream_delta_points"] == (None if worst is None else approx(worst))
        assert targets["fast"]["met"] == (fast["speedup_vs_best_st"] >= limits["fast_vs_best_st"]
                                          and fast["min_cosine"] >= limits["fast_min_cosine"]
                                          and worst is not None and worst <= limits["fast_downstream_points"])
    if "exact" in targets:
        exact = results["exact"]
        assert targets["exact"]["met"] == (exact["speedup_vs_st"] >= limits["exact_vs_st"]
                                           and exact["max_abs_diff"] <= limits["exact_max_abs_diff"])


def check_train(record: dict) -> None:
    """Epoch seconds, padding, TFLOP/s and speedups follow from the measured token rates."""
    rows = record["results"]
    reference = [r for r in rows if r["design"] == "reference"]
    ours = [r for r in rows if r["design"] == "mtst"]
    assert ours and len(reference) <= 1
    for row in rows:
        name = row["name"]
        assert row["epoch_seconds"] == approx(row["epoch_processed_tokens"] / row["processed_tokens_per_s"]), name
        assert row["padding_fraction"] == approx(1 - row["real_tokens_per_s"] / row["processed_tokens_per_s"]), name
        assert 0 <= row["padding_fraction"] < 1, name
        assert row["model_tflops"] == approx(6 * row["non_embedding_params"] * row["processed_tokens_per_s"] / 1e12)
        assert row["mfu"] == "n/a" if record["peak_bf16_tflops"] == "n/a" else 0 < row["mfu"] < 1
    for row in ours:
        if reference:
            assert row["speedup_vs_reference"] == approx(reference[0]["epoch_seconds"] / row["epoch_seconds"])
            assert reference[0]["padding_fraction"] > row["padding_fraction"]  # CoNLL padded to 128
        else:
            assert "speedup_vs_reference" not in row


def check_train_real(record: dict) -> None:
    """Measured, not projected: each timed row ran its steps and then scored the validation sets;
    the profile row is one real epoch; every ratio follows from the rows."""
    rows, settings = record["results"], record["settings"]
    reference = next(r for r in rows if r["design"] == "reference")
    epoch = next(r for r in rows if "profile" in r)
    assert [r["precision"] for r in rows if r["design"] == "mtst" and "profile" not in r] == ["fp32", "bfloat16"]
    assert record["tiny"] or settings["steps"] >= 200
    for row in rows:
        assert 0 <= row["val"]["ag_news_accuracy"] <= 1 and 0 <= row["val"]["conll_coarse_token_accuracy"] <= 1
        if row is epoch:
            assert row["val"]["after_steps"] == row["steps"]
            assert row["samples_per_s"] == approx(sum(row["examples"].values()) / row["epoch_seconds"])
        else:
            assert row["steps"] == settings["steps"] and row["val"]["after_steps"] == settings["steps"] + \
                settings["warmup"]
            assert row["epoch_seconds"] == approx(row["epoch_processed_tokens"] / row["processed_tokens_per_s"])
        if row is not reference:
            assert row["speedup_vs_reference"] == approx(reference["epoch_seconds"] / row["epoch_seconds"])
    assert epoch["speedup_vs_reference_with_caching"] == approx(
        reference["epoch_seconds"] / (epoch["epoch_seconds"] + epoch["prefix_seconds"]))


CHECKS = {"encode": check_encode, "train": check_train, "train-real": check_train_real}


def check_keys(committed: dict, written: dict) -> None:
    """``committed`` has the keys a fresh run of the same script writes, no more and no fewer."""
    if committed["bench"] == "encode":  # every contender, ours or a peer, carries the same keys
        # artifact_sha256 maps the artifact's file names (data, not keys) to checksums; a tiny run has no artifact
        committed, written = ({**r, "results": list(r["results"].values()),
                               "settings": {**r["settings"], "artifact_sha256": None}} for r in (committed, written))
    expected = key_paths(written)
    if committed["bench"] == "encode" and committed["settings"].get("downstream", "") is None:  # --downstream none
        expected = {k for k in expected if not k.startswith("results[].downstream.")}
    unknown, missing = key_paths(committed) - expected, expected - key_paths(committed)
    assert not unknown and not missing, f"keys bench/{committed['bench']}.py never writes: {sorted(unknown)}; " \
                                        f"keys it writes that are missing: {sorted(missing)}"


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> dict:
    """What today's bench scripts write, from their --tiny runs (every mode the committed records use)."""
    out = tmp_path_factory.mktemp("bench")
    modes = {m for name in RECORDS if name.startswith("encode-")
             for m in encode_modes(json.loads((COMMITTED / name).read_text()))}
    run_bench("encode.py", out, "--tiny", "--device", "cpu", "--modes", ",".join(sorted(modes | {"exact", "bf16"})))
    run_bench("train.py", out, "--tiny", "--device", "cpu")
    run_bench("train.py", out, "--tiny", "--real", "--device", "cpu")
    subprocess.run([sys.executable, str(ROOT / "bench" / "summary.py"), "--dir", str(out), "--tiny"],
                   check=True, cwd=ROOT, capture_output=True, timeout=60)
    return {**{kind: json.loads((out / f"{kind}-tiny{'' if kind == 'summary' else '-cpu'}.json").read_text())
               for kind in ("encode", "train", "train-real", "summary")},
            "markdown": (out / "summary-tiny.md").read_text()}


@pytest.mark.slow
def test_tiny_runs_write_consistent_records(written):
    encode, train, summary = written["encode"], written["train"], written["summary"]
    assert encode["tiny"] and encode["settings"]["batch_size"] == 32 and encode["environment"]["packages"]["torch"]
    check_encode(encode)
    check_train(train)
    check_train_real(written["train-real"])
    epoch = next(r for r in written["train-real"]["results"] if "profile" in r)
    assert summary["train_measured_speedup_vs_reference_cpu"] == epoch["speedup_vs_reference"]
    assert summary["train_measured_epoch_seconds_cpu"] == epoch["epoch_seconds"]
    ours = next(r for r in train["results"] if r["design"] == "mtst")
    assert summary["encode_exact_speedup_vs_st_cpu"] == encode["results"]["exact"]["speedup_vs_st"]
    fast = encode["results"][encode["fast_mode"]]
    assert summary["encode_fast_mode_cpu"] == encode["fast_mode"] and summary["encode_speedup_vs_st_cpu"] == \
        fast["speedup_vs_st"]
    assert summary["encode_best_st_backend_cpu"] == encode["targets"]["best_st_backend"]
    assert summary["encode_fast_vs_best_st_backend_cpu"] == approx(encode["targets"]["fast"]["vs_best_st"])
    assert summary["encode_fast_downstream_delta_points_cpu"] == \
        approx(encode["targets"]["fast"]["worst_downstream_delta_points"])
    assert summary["encode_hardware_cpu"]["bf16"] in (True, False) and summary["encode_speedup_vs_st_gpu"] is None
    assert summary["train_speedup_vs_reference_cpu"] == ours["speedup_vs_reference"]
    assert summary["epoch_seconds_cpu"] == ours["epoch_seconds"]
    assert summary["train_speedup_vs_reference_gpu"] is None and "no GPU" in summary["notes"]["gpu"]


@pytest.mark.slow
@pytest.mark.parametrize("name", RECORDS)
def test_committed_record_has_the_keys_the_code_writes(written, name):
    committed = json.loads((COMMITTED / name).read_text())
    check_keys(committed, written[committed["bench"]])


@pytest.mark.parametrize("name", RECORDS)
def test_committed_record_is_consistent(name):
    record = json.loads((COMMITTED / name).read_text())
    assert not record["tiny"] and record["device"] in name
    CHECKS[record["bench"]](record)


def test_committed_summary_is_what_summary_py_computes():
    assert json.loads((COMMITTED / "summary.json").read_text()) == load_summary_module().summarise(COMMITTED)


def block(markdown: str, title: str) -> list[str]:
    """The lines of ``markdown`` from the one that starts with ``title`` up to the next bold title."""
    lines = markdown.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith(title))
    return lines[first:next((i for i in range(first + 1, len(lines)) if lines[i].startswith("**")), len(lines))]


def speed_section_agrees(markdown: str, encode: dict, real: dict | None, title: str = "**Encoding on") -> None:
    """Each contender's row carries its record's rate, ratios and min cosine; each target says met as the record does;
    the fast mode is also set against the fastest peer that keeps its quality bar, found here by a plain loop.
    ``title`` starts the record's block (the main record's, or a side run's)."""
    lines = block(markdown, title)
    rows = {line.split("`")[1]: line for line in lines if line.startswith("| `")}
    assert set(rows) == set(encode["results"])
    for name, r in encode["results"].items():
        cells = [c.strip() for c in rows[name].split("|")[1:-1]]
        assert cells[2:5] == [f"{r['sentences_per_s']:.2f}", f"{min(r['seconds']):.1f}–{max(r['seconds']):.1f}",
                              f"{r['speedup_vs_st']:.2f}"] and cells[6] == f"{r['min_cosine']:.4f}"
    fast, bar = encode["targets"]["fast"], encode["targets"]["thresholds"]["fast_min_cosine"]
    fast_line = next(line for line in lines if line.startswith("Fast mode"))
    assert fast_line.split(": ")[2].startswith("met" if fast["met"] else "not met")
    best, rate = None, 0.0
    for name, r in encode["results"].items():
        if r["kind"] != "ours" and r["min_cosine"] >= bar and r["sentences_per_s"] > rate:
            best, rate = name, r["sentences_per_s"]
    ratio = encode["results"][fast["mode"]]["sentences_per_s"] / rate
    assert fast_line.endswith(f"(`{best}`): {ratio:.2f}×.")
    assert ("No sentence-transformers backend but plain torch ran" in "\n".join(lines)) == \
        all(r["kind"] != "peer" for r in encode["results"].values())
    if exact := encode["targets"].get("exact"):  # the median ratio, and the ratio in each round
        exact_line = next(line for line in lines if line.startswith("Exact mode"))
        st, ours = (encode["results"][name]["seconds"] for name in (encode["baseline"], "exact"))
        per_round = sorted(st[r] / ours[r] for r in range(len(st)))
        assert f"{exact['vs_st']:.2f}× plain sentence-transformers (per round {per_round[0]:.2f}–{per_round[-1]:.2f})" \
            in exact_line and exact_line.endswith(": met." if exact["met"] else ": not met.")
        near, rate = None, 0.0  # the fastest peer that gives the same vectors, by a plain loop
        for name, r in encode["results"].items():
            if r["kind"] == "peer" and r["min_cosine"] >= 0.99999 and r["sentences_per_s"] > rate:
                near, rate = name, r["sentences_per_s"]
        against = [line for line in lines if line.startswith("Against the fastest sentence-transformers backend at")]
        ratio = encode["results"]["exact"]["sentences_per_s"] / rate if near else None
        assert against == ([] if near is None else [
            f"Against the fastest sentence-transformers backend at min cosine ≥ 0.99999 (`{near}`, max abs difference "
            f"{encode['results'][near]['max_abs_diff']:.1e}): {ratio:.2f}×."])
    for r in real["results"] if real else []:
        assert any(line.startswith(f"| {r['name']} | {r['steps']} | {r['samples_per_s']:.1f} |")
                   for line in markdown.splitlines())
    if real:
        epoch = next(r for r in real["results"] if "profile" in r)
        reference = next(r for r in real["results"] if r["design"] == "reference")
        target = next(line for line in markdown.splitlines() if "profile's epoch:" in line)
        assert f"{reference['epoch_seconds'] / epoch['epoch_seconds']:.2f}× the reference loop's" in target
        assert target.endswith(": met." if reference["epoch_seconds"] >= 5 * epoch["epoch_seconds"] else ": not met.")
    if real is None:
        assert "**Training speed (cpu)**: not measured yet" in markdown


@pytest.mark.slow
def test_the_speed_section_of_tiny_runs_shows_every_contender(written):
    speed_section_agrees(written["markdown"], written["encode"], written["train-real"])


def test_the_committed_speed_section_is_what_summary_py_writes():
    markdown = (COMMITTED / "summary.md").read_text()
    assert markdown == load_summary_module().markdown(COMMITTED)
    real = COMMITTED / "train-real-cpu.json"
    real = json.loads(real.read_text()) if real.is_file() else None
    speed_section_agrees(markdown, json.loads((COMMITTED / "encode-cpu.json").read_text()), real)
    for name in (n for n in RECORDS if n.startswith("encode-cpu-")):  # the side runs, each in its own block
        speed_section_agrees(markdown, json.loads((COMMITTED / name).read_text()), real,
                             f"**Side run `{name}`, not the figures above: encoding on")


@pytest.mark.slow
def test_a_side_run_gets_its_own_table_under_the_main_record(written, tmp_path):
    """A tagged record (``bench/encode.py --tag``, e.g. the bench on another CPU) is shown below the main record
    with its own figures, and says when it scored nothing downstream; every summary key but the list of sources
    still comes from the main record alone."""
    summary, encode = load_summary_module(), load_bench_module("encode")
    (tmp_path / "encode-tiny-cpu.json").write_text(json.dumps(written["encode"]))
    alone = summary.summarise(tmp_path, tiny=True)
    side = copy.deepcopy(written["encode"])  # twice as fast everywhere, nothing scored downstream
    for r in side["results"].values():
        r |= {"seconds": [x / 2 for x in r["seconds"]], "sentences_per_s": 2 * r["sentences_per_s"], "downstream": None}
    side["settings"]["downstream"] = None
    side["targets"] = encode.targets(side["results"], side["fast_mode"])
    check_encode(side)
    (tmp_path / "encode-tiny-cpu-avx2.json").write_text(json.dumps(side))
    markdown = summary.markdown(tmp_path, tiny=True)
    speed_section_agrees(markdown, written["encode"], None)
    title = "**Side run `encode-tiny-cpu-avx2.json`, not the figures above: encoding on"
    speed_section_agrees(markdown, side, None, title)
    assert "AG / F1 change: not scored in this run (`--downstream none`)." in block(markdown, title)
    both = summary.summarise(tmp_path, tiny=True)
    assert both.pop("sources") == ["encode-tiny-cpu-avx2.json", "encode-tiny-cpu.json"]
    assert both == {k: v for k, v in alone.items() if k != "sources"}


def test_the_checks_catch_wrong_records():
    """Each check fails on a record with one wrong value or one unknown key (on earlier CPU records,
    kept as fixtures after they were withdrawn from results/ as out of date)."""
    encode = json.loads((FIXTURES / "encode-cpu-attention.json").read_text())
    train = json.loads((FIXTURES / "train-cpu.json").read_text())
    check_keys(encode, encode)
    for edit in (lambda r: r["results"]["exact"].update(speedup_vs_st=r["results"]["exact"]["speedup_vs_st"] * 1.1),
                 lambda r: r["results"]["exact"].update(max_abs_diff=1e-3),
                 lambda r: r["results"]["exact-eager"]["seconds"].append(1.0)):
        wrong = copy.deepcopy(encode)
        edit(wrong)
        with pytest.raises(AssertionError):
            check_encode(wrong)
    wrong = copy.deepcopy(encode)
    wrong["settings"]["attention"] = "sdpa"
    with pytest.raises(AssertionError, match="never writes: \\['settings.attention'\\]"):
        check_keys(wrong, encode)
    for field, factor in (("speedup_vs_reference", 1.5), ("epoch_seconds", 0.5), ("padding_fraction", 0.5)):
        wrong = copy.deepcopy(train)
        wrong["results"][0][field] *= factor
        with pytest.raises(AssertionError):
            check_train(wrong)


@pytest.mark.slow
def test_the_measured_train_check_catches_wrong_records(written):
    record = written["train-real"]
    check_train_real(record)
    for edit in (lambda r: r["results"][-1].update(speedup_vs_reference=r["results"][-1]["speedup_vs_reference"] * 2),
                 lambda r: r["results"][0]["val"].update(after_steps=1),
                 lambda r: r["results"][-1].update(samples_per_s=r["results"][-1]["samples_per_s"] * 1.5),
                 lambda r: r.update(tiny=False)):  # a real record must time 200 steps or more
        wrong = copy.deepcopy(record)
        edit(wrong)
        with pytest.raises(AssertionError):
            check_train_real(wrong)


@pytest.mark.slow
def test_an_interrupted_measured_run_keeps_what_it_finished(written, tmp_path):
    record = written["train-real"]
    reference = next(r for r in record["results"] if r["design"] == "reference")
    kept = {**reference, "samples_per_s": 123.0, "epoch_seconds": 1000.0}  # as if measured before the stop
    partial = tmp_path / "train-real-tiny-cpu.partial.json"
    partial.write_text(json.dumps({"settings": record["settings"], "rows": {"reference": kept}}))
    run_bench("train.py", tmp_path, "--tiny", "--real", "--device", "cpu")
    again = json.loads((tmp_path / "train-real-tiny-cpu.json").read_text())
    rows = {r["name"]: r for r in again["results"]}
    assert rows[reference["name"]]["samples_per_s"] == 123.0 and not partial.exists()
    epoch = next(r for r in again["results"] if "profile" in r)
    assert epoch["speedup_vs_reference"] == approx(1000.0 / epoch["epoch_seconds"])


def test_the_speed_section_says_when_the_artifact_it_measured_has_changed(tmp_path):
    """The AG / F1 change column is of the artifact the record ran with: a record of another version says so."""
    from mtst.assets import folder_sha256

    summary = load_summary_module()
    art = tmp_path / "results" / "runs" / "cpu-s42" / "artifact"
    art.mkdir(parents=True)
    (art / "heads.safetensors").write_bytes(b"heads of the measured run")
    settings = {"artifact": "/another/machine/results/runs/cpu-s42/artifact", "artifact_sha256": folder_sha256(art)}
    assert summary.artifact_note(settings, tmp_path) == ""  # the same files here: nothing to say
    (art / "heads.safetensors").write_bytes(b"heads of a later run")
    assert summary.artifact_note(settings, tmp_path) == (
        " The artifact at `results/runs/cpu-s42/artifact` has changed since this record: re-run `bench/encode.py` "
        "to measure it.")
    assert "predates the checksums" in summary.artifact_note({**settings, "artifact_sha256": None}, tmp_path)
    assert summary.artifact_note({"artifact": None}, tmp_path) == ""  # tiny runs use no artifact


def test_peer_workers_of_one_backend_prepare_their_shared_folder_one_at_a_time(tmp_path):
    """Two variants start together on one work folder: each gets a whole copy of the model (no FileExistsError,
    no half-deleted copy), however slow the copy."""
    model = tmp_path / "model"
    (model / "1_Pooling").mkdir(parents=True)
    (model / "1_Pooling" / "config.json").write_text("{}")
    (model / "config.json").write_text("{}")
    work = tmp_path / "work"
    work.mkdir()
    script = (f"import sys, time, shutil; from pathlib import Path; sys.path.insert(0, {str(ROOT / 'bench')!r})\n"
              "import peer\n"
              "copy = shutil.copytree\n"
              "peer.shutil.copytree = lambda *a, **k: (time.sleep(1.0), copy(*a, **k))[1]  # a slow disk\n"
              f"with peer.exclusive(Path({str(work)!r})):\n"
              f"    folder = peer.model_copy({str(model)!r}, Path({str(work)!r}))\n"
              "assert (folder / '1_Pooling' / 'config.json').is_file() and (folder / '.copied').is_file()\n")
    workers = [subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True) for _ in range(2)]
    errors = [w.communicate(timeout=60)[1] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], errors


def test_a_peer_worker_replies_on_a_channel_nothing_else_writes_to():
    """Libraries print to stdout (an OpenVINO int8 export prints its progress, from native code too): the
    driver must still read the worker's JSON reply as its first line there."""
    script = (f"import os, sys; sys.path.insert(0, {str(ROOT / 'bench')!r})\n"
              "import peer\n"
              "channel = peer.protocol()\n"
              "print('Statistics collection: 100%')\n"
              "os.write(1, b'native progress\\n')\n"
              "peer.reply({'ready': True}, channel)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout == '{"ready": true}\n'
    assert "Statistics collection: 100%" in out.stderr and "native progress" in out.stderr


@pytest.mark.parametrize("capabilities, machine, config", [
    ({"avx2": True, "avx512_f": True, "avx512_vnni": True}, "x86_64", "avx512_vnni"),  # AMD Zen 4, Intel Xeon
    ({"avx2": True, "avx512_f": True, "avx512_vnni": False}, "x86_64", "avx512"),
    ({"avx2": True, "avx512_f": False, "avx512_vnni": False}, "x86_64", "avx2"),  # AMD EPYC family 23
    ({}, "aarch64", "arm64")])
def test_the_onnx_int8_peer_is_quantised_for_the_cpu_it_runs_on(capabilities, machine, config):
    """A user quantises with the config of their own CPU: avx512_vnni on an AVX2-only CPU is no baseline (its
    embeddings had cosine -0.11 to fp32 there)."""
    assert load_bench_module("peer").onnx_int8_config(capabilities, machine) == config


@pytest.mark.parametrize("output, error", [("Statistics collection: 10%", "where a JSON reply belongs"),
                                           ("", "worker exited with 3")])
def test_a_peer_that_does_not_reply_in_json_is_skipped_with_what_it_wrote(tmp_path, output, error):
    """The driver does not crash on a worker's stray line or silent exit: the peer gets an error that says
    what happened, and bench/encode.py skips it naming that error."""
    encode = load_bench_module("encode")
    worker = tmp_path / "python"  # stands in for a peer environment's interpreter
    worker.write_text(f"#!/bin/sh\n{'echo ' + repr(output) if output else ''}\nexit 3\n")
    worker.chmod(0o755)
    peer = encode.Peer("st-fake", worker, "openvino", "fp32", "model", tmp_path / "texts.json",
                       tmp_path / "calibration.json", 32, tmp_path, tmp_path / "st-fake.log")
    peer.wait_ready()
    peer.close()
    assert error in peer.error and output in peer.error and not peer.ready


def test_the_fast_mode_is_exact_where_the_cpu_has_no_native_bf16(monkeypatch):
    """What the demo serves: bf16 autocast where bf16 is native, else exact; the emulated bf16 modes (slower than
    fp32 on an AVX2-only CPU) are then not run unless asked for, and the speed section says why."""
    import torch

    import mtst.distributed

    encode = load_bench_module("encode")
    cpu = torch.device("cpu")
    for native, fast, modes in ((True, "bf16-autocast", "exact,bf16-autocast,bf16"), (False, "exact", "exact")):
        monkeypatch.setattr(mtst.distributed, "cpu_has_bf16", lambda native=native: native)
        assert (encode.fast_mode(cpu), encode.default_modes(cpu, encode.fast_mode(cpu))) == (fast, modes)
    record = json.loads((COMMITTED / "encode-cpu.json").read_text())
    record["results"] = {k: v for k, v in record["results"].items() if k in ("sentence-transformers", "exact")}
    record |= {"fast_mode": "exact", "fast_mode_note": encode.NO_BF16}
    record["targets"] = encode.targets(record["results"], "exact")
    summary = load_summary_module()
    keys = summary.encode_keys(record, "cpu")
    assert keys["encode_fast_mode_cpu"] == "exact"
    assert keys["encode_speedup_vs_st_cpu"] == record["results"]["exact"]["speedup_vs_st"]
    markdown = "\n".join(summary.encode_markdown(record))
    assert "Fast mode (`exact`)" in markdown and f"Why the fast mode is `exact` on this machine: {encode.NO_BF16}." \
        in markdown

"""The notebooks re-execute end to end (smoke profile: tiny model, fixture data) so they cannot rot."""

import pytest

from mtst.experiment import NOTEBOOKS, execute_all


@pytest.mark.slow
def test_notebooks_execute_on_smoke_profile(tmp_path):
    times = execute_all("smoke", out_dir=tmp_path)  # raises CellExecutionError on any failing cell
    assert sorted(times) == sorted(p.name for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    assert len(times) == 4


def test_a_whole_run_records_its_wall_time_from_before_setup(tmp_path):
    import json
    import time

    import nbformat

    folder = tmp_path / "notebooks"
    folder.mkdir()
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")]), folder / "01_one.ipynb")
    began = time.time() - 100  # as if setup had taken 100 s
    times = execute_all("cpu", folder=folder, since=began)
    record = json.loads((tmp_path / "results" / "make-run-cpu.json").read_text())
    assert record["notebooks"] == times and list(times) == ["01_one.ipynb"]
    assert 100 <= record["seconds_setup"] < 100 + 5
    assert record["seconds_total"] >= record["seconds_setup"] + times["01_one.ipynb"]
    assert record["environment"]["cpu"]
    execute_all("cpu", folder=folder, only=("01",))  # a partial rerun without since leaves the record alone
    assert json.loads((tmp_path / "results" / "make-run-cpu.json").read_text()) == record


def test_a_partial_rerun_keeps_earlier_timings_only_from_the_same_cpu(tmp_path):
    import json

    import nbformat

    folder, results = tmp_path / "notebooks", tmp_path / "results"
    folder.mkdir()
    for name in ("01_one.ipynb", "02_two.ipynb"):
        nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")]), folder / name)
    execute_all("cpu", folder=folder)
    record = json.loads((results / "notebooks-cpu.json").read_text())
    execute_all("cpu", folder=folder, only=("02",))  # same machine: 01's timing stays
    again = json.loads((results / "notebooks-cpu.json").read_text())
    assert again["seconds"]["01_one.ipynb"] == record["seconds"]["01_one.ipynb"] and "02_two.ipynb" in again["seconds"]
    record["environment"]["cpu"] = "another CPU"
    (results / "notebooks-cpu.json").write_text(json.dumps(record))
    execute_all("cpu", folder=folder, only=("02",))  # 01 was timed elsewhere: not kept under this CPU's name
    assert list(json.loads((results / "notebooks-cpu.json").read_text())["seconds"]) == ["02_two.ipynb"]

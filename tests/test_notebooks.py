"""The notebooks re-execute end to end (smoke profile: tiny model, fixture data) so they cannot rot."""

import pytest

from mtst.experiment import NOTEBOOKS, execute_all


@pytest.mark.slow
def test_notebooks_execute_on_smoke_profile(tmp_path):
    times = execute_all("smoke", out_dir=tmp_path)  # raises CellExecutionError on any failing cell
    assert sorted(times) == sorted(p.name for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    assert len(times) == 4

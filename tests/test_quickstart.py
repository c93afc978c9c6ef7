"""`make quickstart` twice must not overwrite or mix an earlier run (the second start says what to do)."""
import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "quickstart.py"


def test_an_earlier_run_is_kept_and_named(tmp_path):
    spec = importlib.util.spec_from_file_location("quickstart", SCRIPT)
    quickstart = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(quickstart)
    (tmp_path / "report.html").write_text("earlier")
    with pytest.raises(SystemExit, match=rf"holds an earlier run \(open {tmp_path / 'report.html'}\); remove it"):
        quickstart.main(["--out", str(tmp_path), "--tiny"])
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"] and (tmp_path / "report.html").read_text() == "earlier"

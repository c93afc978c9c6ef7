"""`pv survey check DIR`: a study folder is validated before launch, every problem listed at once."""
from __future__ import annotations

import json
import shutil

import pytest

from pv.cli import main as pv_main
from pv.survey.check import StudyCheckError, check_study


def test_a_built_study_passes_and_prints_preview_and_study_link(platform_study, capsys):
    assert pv_main(["survey", "check", str(platform_study), "--base-url", "https://study.example.org"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"OK: {platform_study.resolve()}") and "4 questions (2 correct, 2 incorrect), 1 attention checks" in out
    assert f"preview (researcher only, with the key): {(platform_study / 'preview.html').resolve().as_uri()}" in out
    assert "study link: https://study.example.org/?PROLIFIC_PID={{%PROLIFIC_PID%}}&STUDY_ID={{%STUDY_ID%}}&SESSION_ID={{%SESSION_ID%}}" in out
    assert "completion code: C0DE42" in out


def test_every_problem_of_a_broken_study_is_listed(platform_study, tmp_path, capsys):
    study = shutil.copytree(platform_study, tmp_path / "broken")
    manifest = json.loads((study / "manifest.json").read_text())
    (study / manifest["questions"][0]["images"]["pv"]).unlink()  # a missing image
    manifest["questions"][1]["options"][1]["label"] = manifest["questions"][1]["options"][0]["label"]  # an option twice
    manifest["questions"][2]["id"] = manifest["questions"][3]["id"]  # a duplicated question
    manifest["questions"][3]["image_id"] = manifest["questions"][0]["image_id"]  # the same image twice
    del manifest["attention_checks"][0]["answer"]  # a check without its instructed answer
    (study / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(StudyCheckError) as error:
        check_study(study)
    message = str(error.value)
    assert message.startswith("5 problem(s)")
    for expected in ("questions[0].images.pv", "names a missing file", "questions[1].options", "repeat a label",
                     "questions[3].id", "repeats", "questions[3].image_id", "attention_checks[0].answer", "is missing"):  # fmt: skip
        assert expected in message, expected
    assert pv_main(["survey", "check", str(study)]) == 2
    assert "pv survey: error: 5 problem(s)" in capsys.readouterr().err

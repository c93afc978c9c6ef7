"""Question selection and option construction (pure functions, seeded)."""
from __future__ import annotations

import random
from collections import Counter

import pytest
from survey_testdata import CLASSES, TABLE, write_predictions

from pv.survey.questions import (
    BUCKETS, CANT_TELL_ID, CANT_TELL_LABEL, Prediction, class_options, display_order, question_options, read_predictions, select_questions,
)  # fmt: skip


def row(labels, top, predicted=None, bucket="correct", image_id="x") -> Prediction:
    predicted = tuple(labels) if predicted is None else tuple(predicted)
    return Prediction(image_id, "", tuple(labels), predicted, top, 0.9, bucket)


def many_rows(n_correct=40, n_incorrect=30, n_partial=10) -> list[Prediction]:
    rows = [row(["cat"], "cat", image_id=f"c{i:03d}") for i in range(n_correct)]
    rows += [row(["dog"], "horse", ["horse"], "incorrect", f"i{i:03d}") for i in range(n_incorrect)]
    rows += [row(["dog", "cat"], "dog", ["dog"], "partial", f"p{i:03d}") for i in range(n_partial)]
    return rows


def test_prediction_among_labels_is_an_option_exactly_once_with_other_labels():
    options = class_options(row(["cat", "dog", "sofa"], "dog"), CLASSES, random.Random(0))
    assert {"cat", "dog", "sofa"} <= set(options)
    assert options.count("dog") == 1 and len(set(options)) == 4


def test_too_many_labels_keep_three_of_them_beside_the_prediction():
    labels = ["dog", "person", "sofa", "chair", "bottle", "cat"]
    for seed in range(20):
        options = class_options(row(labels, "person"), CLASSES, random.Random(seed))
        assert len(options) == len(set(options)) == 4
        assert "person" in options
        assert set(options) <= set(labels)  # extra labels dropped, no random filler needed


def test_too_few_labels_filled_with_other_dataset_classes_never_with_other_predictions_when_asked():
    r = row(["horse"], "cow", predicted=["cow", "sheep", "dog"], bucket="incorrect")
    seen = set()
    for seed in range(50):
        options = class_options(r, CLASSES, random.Random(seed), fillers="unpredicted")
        assert len(set(options)) == 4 and {"cow", "horse"} <= set(options)
        assert not {"sheep", "dog"} & set(options)
        assert set(options) <= set(CLASSES)
        seen |= set(options)
    assert len(seen) > 8  # the filler is random, not a fixed list


def test_fillers_are_drawn_from_all_classes_by_default_as_the_authors_did():
    """Issue 20.4: M's other predicted classes can be fillers, as often as any other class."""
    r = row(["horse"], "cow", predicted=["cow", "sheep", "dog"], bucket="incorrect")
    counts = {name: 0 for name in CLASSES}
    for seed in range(400):
        options = class_options(r, CLASSES, random.Random(seed))
        assert len(set(options)) == 4 and {"cow", "horse"} <= set(options)
        for name in options:
            counts[name] += 1
    others = [counts[name] for name in CLASSES if name not in ("cow", "horse")]  # 18 classes, 2 filler slots each time
    assert counts["sheep"] > 0 and counts["dog"] > 0
    assert min(others) > 400 * 2 / 18 / 2 and max(others) < 400 * 2 / 18 * 2  # about uniform, predicted ones included
    with pytest.raises(ValueError, match="--fillers"):
        class_options(r, CLASSES, random.Random(0), fillers="some")


def test_wrong_prediction_with_many_labels_keeps_the_prediction_and_three_labels():
    labels = ["tvmonitor", "chair", "sofa", "person", "pottedplant"]
    options = class_options(row(labels, "bicycle", ["bicycle"], "incorrect"), CLASSES, random.Random(1))
    assert "bicycle" in options and len(set(options) & set(labels)) == 3


def test_options_are_seeded():
    r = row(["cat", "dog"], "cat")
    assert class_options(r, CLASSES, random.Random(7)) == class_options(r, CLASSES, random.Random(7))
    orders = {tuple(class_options(r, CLASSES, random.Random(s))) for s in range(20)}
    assert len(orders) > 1


def test_question_options_add_cant_tell_last_and_key_the_top_prediction():
    options, answer = question_options(row(["pottedplant", "cat"], "pottedplant"), CLASSES, random.Random(0))
    assert [o["id"] for o in options][-1] == CANT_TELL_ID and options[-1]["label"] == CANT_TELL_LABEL
    assert len({o["id"] for o in options}) == 5
    key = next(o for o in options if o["id"] == answer)
    assert key["class"] == "pottedplant" and key["label"] == "potted plant"


def test_unknown_classes_and_tiny_label_spaces_are_errors():
    with pytest.raises(ValueError, match="top_class 'zebra'"):
        class_options(row(["cat"], "zebra"), CLASSES, random.Random(0))
    with pytest.raises(ValueError, match="label"):
        class_options(row(["zebra"], "cat"), CLASSES, random.Random(0))
    with pytest.raises(ValueError, match="at least 4 classes"):
        class_options(row(["a"], "a"), ["a", "b", "c"], random.Random(0))


def test_default_selection_is_16_correct_and_14_incorrect_and_seeded():
    rows = many_rows()
    chosen = select_questions(rows, seed=5)
    assert Counter(r.bucket for r in chosen) == {"correct": 16, "incorrect": 14}
    assert len({r.id for r in chosen}) == 30
    assert [r.id for r in select_questions(rows, seed=5)] == [r.id for r in chosen]
    assert [r.id for r in select_questions(rows, seed=6)] != [r.id for r in chosen]
    assert [r.id for r in select_questions(list(reversed(rows)), seed=5)] == [r.id for r in chosen]  # table order does not matter
    buckets = [r.bucket for r in chosen]
    assert buckets != sorted(buckets)  # both subsets are interleaved


def test_selection_counts_are_configurable_and_checked():
    chosen = select_questions(many_rows(), n_correct=3, n_incorrect=5, seed=0)
    assert Counter(r.bucket for r in chosen) == {"correct": 3, "incorrect": 5}
    with pytest.raises(ValueError, match="has 40 correctly and 30 wrongly classified images, but 1 correct and 31 incorrect"):
        select_questions(many_rows(), n_correct=1, n_incorrect=31)
    with pytest.warns(UserWarning, match="no incorrectly classified questions"):
        assert len(select_questions(many_rows(), n_correct=2, n_incorrect=0)) == 2


def test_display_order_shuffles_classes_and_keeps_cant_tell_last():
    options = [{"id": f"o{i}"} for i in range(1, 5)] + [{"id": CANT_TELL_ID}]
    orders = {tuple(display_order(options, random.Random(s))) for s in range(30)}
    assert all(order[-1] == CANT_TELL_ID and sorted(order[:-1]) == ["o1", "o2", "o3", "o4"] for order in orders)
    assert len(orders) > 5


def test_read_predictions_parses_the_analysis_table(tmp_path):
    write_predictions(tmp_path / "predictions.csv", TABLE)
    rows, classes = read_predictions(tmp_path)
    assert classes == CLASSES
    assert rows[1].labels == ("dog", "person", "sofa", "chair", "bottle") and rows[1].top_class == "person"
    assert rows[7].predicted == () and rows[7].bucket == "empty"


def test_read_predictions_names_file_line_and_field(tmp_path):
    path = write_predictions(tmp_path / "p.csv", [("a", ["cat"], ["cat"], "cat", "sure")])
    with pytest.raises(ValueError, match=r"p\.csv:2: field 'bucket'"):
        read_predictions(path)
    (tmp_path / "q.csv").write_text("id,path,labels\nx,y,z\n")
    with pytest.raises(ValueError, match=r"q\.csv: missing column\(s\) predicted, top_class, top_prob, bucket"):
        read_predictions(tmp_path / "q.csv")
    with pytest.raises(FileNotFoundError, match="nothing"):
        read_predictions(tmp_path / "nothing")


def test_reads_the_table_pv_analyze_writes(tmp_path):
    import torch

    from pv import analysis

    assert set(analysis.BUCKETS) == set(BUCKETS)
    labels = torch.zeros(3, len(CLASSES))
    labels[0, [CLASSES.index("cat")]] = 1
    labels[1, [CLASSES.index("dog"), CLASSES.index("sofa")]] = 1
    labels[2, [CLASSES.index("horse")]] = 1
    probs = torch.full((3, len(CLASSES)), 0.1, dtype=torch.float64)
    probs[0, CLASSES.index("cat")] = 0.9  # correct
    probs[1, CLASSES.index("sofa")] = 0.8  # partial: dog missed
    probs[2, CLASSES.index("cow")] = 0.7  # incorrect
    paths = [str(tmp_path / f"{name}.jpg") for name in ("a", "b", "c")]
    analysis.write_outputs(tmp_path, analysis.make_rows(paths, probs, labels, CLASSES, 0.5), {})
    rows, classes = read_predictions(tmp_path)
    assert classes == CLASSES
    assert [(r.id, r.bucket, r.top_class, r.labels, r.predicted) for r in rows] == [
        ("a", "correct", "cat", ("cat",), ("cat",)),
        ("b", "partial", "sofa", ("dog", "sofa"), ("sofa",)),
        ("c", "incorrect", "cow", ("horse",), ("cow",)),
    ]
    assert [r.path for r in rows] == paths and rows[0].top_prob == 0.9


def test_survey_command_line_is_light_and_help_shows_defaults_once():
    """`pv survey serve` must not load torch; --help shows each default once (None defaults are explained in the text)."""
    import subprocess
    import sys

    code = "import sys, pv.survey.cli; assert 'torch' not in sys.modules, 'torch loaded'"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0
    from pv.survey.cli import parser

    text = parser("build").format_help() + "".join(
        action.choices["build"].format_help() for action in parser("build")._actions if getattr(action, "choices", None) and "build" in action.choices
    )
    assert "(default: None)" not in text and "(default: from its checkpoint) (default" not in text

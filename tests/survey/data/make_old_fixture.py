"""Make tests/survey/data/old_study + old_responses.db (a SQLite file; *.sqlite is git-ignored) with the survey code of commit bec6d17 (before issues 10 and 16).

Run once, from a checkout of that code: `mkdir -p /tmp/oldsurvey && git archive bec6d17 survey | tar -x -C /tmp/oldsurvey`,
then `python tests/survey/data/make_old_fixture.py`. Not a test: the files it wrote are the fixture.
"""
import random, sys, json
from contextlib import closing
from pathlib import Path
import numpy as np
from PIL import Image
sys.path.insert(0, "/tmp/oldsurvey")
from survey import db
from survey.manifest import write_manifest, FORMAT
from survey.questions import display_order

out = Path("/work/main/tests/survey/data/old_study")
rng = np.random.default_rng(0)
questions = []
for i, (subset, top, others) in enumerate([("correct", "cat", ["dog", "sofa", "bird"]), ("incorrect", "cow", ["horse", "sheep", "boat"]),
                                             ("correct", "bus", ["car", "train", "person"]), ("incorrect", "bicycle", ["chair", "tvmonitor", "bottle"])]):
    qid = f"q{i + 1}"
    paths = {}
    for arm in ("pv", "gradcam"):
        paths[arm] = f"images/{arm}/{qid}.png"
        (out / paths[arm]).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, size=(16, 34, 3), dtype=np.uint8)).save(out / paths[arm])
    names = [top, *others]
    options = [{"id": f"o{k + 1}", "class": n, "label": n} for k, n in enumerate(names)] + [{"id": "cant_tell", "class": None, "label": "I just can't tell"}]
    questions.append({"id": qid, "image_id": f"img{i}", "image_path": f"/nowhere/img{i}.jpg", "subset": subset, "labels": [top] if subset == "correct" else others[:1],
                      "predicted": [top], "top_class": top, "top_prob": 0.9, "images": paths, "options": options, "answer": "o1"})
manifest = {"format": FORMAT, "name": "old-study", "seed": 0, "question_text": "What is the model's prediction?", "arm_order": ["pv", "gradcam"],
            "arms": {"pv": {"title": "Perception Visualization", "introduction": ["PV intro."]}, "gradcam": {"title": "Grad-CAM", "introduction": ["Grad-CAM intro."]}},
            "questions": questions, "source": {"made_by": "survey code of commit bec6d17"}}
write_manifest(manifest, out)
path = Path("/work/main/tests/survey/data/old_responses.db")
path.unlink(missing_ok=True)
db.init_db(path, manifest)
order = [q["id"] for q in questions]
with closing(db.connect(path)) as conn:
    def options(seq):
        r = random.Random(f"0:{seq}")
        return {q["id"]: display_order(q["options"], r) for q in questions}
    done = db.create_participant(conn, manifest["arm_order"], options, "start-a")
    for q in questions:
        db.record_answer(conn, done.id, order, q["id"], "o1" if q["subset"] == "correct" else "o2", 0)
    half = db.create_participant(conn, manifest["arm_order"], options, "start-b")
    db.record_answer(conn, half.id, order, "q1", "o1", 0)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("PRAGMA journal_mode = DELETE")
print(done.id, half.id)

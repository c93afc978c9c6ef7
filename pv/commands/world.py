"""`pv world`: write the generated world (VOC layout + ground truth) to a folder."""
from __future__ import annotations

import time

from pv.commands.common import CommandParser, non_negative_int


def parser() -> CommandParser:
    from pv.data.world import DEFAULT_COUNTS

    p = CommandParser("pv world", "Generate the world with planted misperceptions (see pv/data/world.py): "
                      "OUT/VOCdevkit/VOC2007 (train biased; val unbiased; test unbiased + shortcut, look-alike and "
                      "texture-swap images), OUT/observer/VOCdevkit/VOC2007 (unbiased, for `pv survey simulate`), "
                      "OUT/truth.csv, OUT/truth.json and OUT/world.json.")  # fmt: skip
    p.add_argument("--out", required=True, help="folder to write (the data root for configs/data/world.yaml)")
    p.add_argument("--seed", type=int, default=0, help="world seed: the same seed gives the same images")
    for key, value in DEFAULT_COUNTS.items():
        p.add_argument(f"--{key.replace('_', '-')}", type=non_negative_int, default=value, help=f"number of {key.replace('_', ' ')} images")
    return p


def main(argv: list[str] | None = None) -> int:
    from pv.data.world import DEFAULT_COUNTS, write_world

    args = parser().parse_args(argv)
    counts = {key: getattr(args, key) for key in DEFAULT_COUNTS}
    start = time.perf_counter()
    design = write_world(args.out, seed=args.seed, counts=counts)
    total = sum(counts[k] for k in counts if k != "test_per_cause") + 3 * counts["test_per_cause"]
    print(f"Wrote {total} images of world seed {design['seed']} to {args.out} in {time.perf_counter() - start:.1f} s "
          f"(classes: {', '.join(design['class_names'])}; truth in {args.out}/truth.csv)")  # fmt: skip
    return 0

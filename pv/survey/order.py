"""What each participant is shown, in which order: questions, attention checks and options (seeded per arrival).

By default (`question_order: "random"`) every participant gets their own question order; attention checks
go to their fixed 1-based `position`, or a random one when it is null. Options are shuffled per participant
with "I just can't tell" last. Both orders are stored with the participant, so analysis can test order effects.
"""
from __future__ import annotations

import random
from typing import Any

from pv.survey.manifest import attention_checks, fingerprint, question_order
from pv.survey.questions import display_order


def default_order(manifest: dict[str, Any]) -> list[str]:
    """The manifest's order (questions, checks at their positions): participants stored without an order of their own."""
    return place_checks([q["id"] for q in manifest["questions"]], attention_checks(manifest), random.Random(0))


def place_checks(order: list[str], checks: list[dict[str, Any]], rng: random.Random) -> list[str]:
    """Insert the checks: random ones anywhere but first, then fixed ones at exactly their positions."""
    order = list(order)
    for check in checks:
        if check.get("position") is None:
            order.insert(rng.randint(1, len(order)), check["id"])
    for check in sorted((c for c in checks if c.get("position") is not None), key=lambda c: c["position"]):
        order.insert(min(check["position"] - 1, len(order)), check["id"])
    return order


class Layouts:
    """arrival number -> (item order, option order per item) for one study."""

    def __init__(self, manifest: dict[str, Any]):
        self.manifest = manifest
        self.seed = f"{manifest.get('seed', 0)}:{fingerprint(manifest)}"
        self.items = [*manifest["questions"], *attention_checks(manifest)]

    def __call__(self, seq: int) -> tuple[list[str], dict[str, list[str]]]:
        rng = random.Random(f"{self.seed}:{seq}")  # seeded by study and arrival number: reproducible, different per participant
        options = {item["id"]: display_order(item["options"], rng) for item in self.items}
        ids = [q["id"] for q in self.manifest["questions"]]
        order_rng = random.Random(f"{self.seed}:{seq}:order")
        if question_order(self.manifest) == "random":
            order_rng.shuffle(ids)
        return place_checks(ids, attention_checks(self.manifest), order_rng), options

#!/usr/bin/env python3
"""Writes the preference-tuning task of examples/dpo-sums: two-digit additions whose chosen answer
is the right sum and whose rejected answer is a plausible wrong one (off by one to nine, off by
ten, or the digits swapped). Seeded, so every run writes the same files.

    tools/make_preference_task.py OUT_DIR [--pairs N] [--held-out M] [--seed S]

writes OUT_DIR/train.jsonl and OUT_DIR/held_out.jsonl, one {"prompt", "chosen", "rejected"} per
line; no held-out question appears in the training file.
"""
import argparse
import json
import os
import random


def wrong_answer(rng, right):
    while True:
        kind = rng.randrange(3)
        if kind == 0:
            wrong = right + rng.choice([-1, 1]) * rng.randint(1, 9)
        elif kind == 1:
            wrong = right + rng.choice([-10, 10])
        else:
            digits = str(right)
            wrong = int(digits[::-1]) if len(digits) > 1 else right + 1
        if wrong != right and wrong >= 0:
            return wrong


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--pairs", type=int, default=800)
    ap.add_argument("--held-out", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    questions = set()
    while len(questions) < args.pairs + args.held_out:
        questions.add((rng.randint(10, 99), rng.randint(10, 99)))
    questions = sorted(questions)
    rng.shuffle(questions)
    os.makedirs(args.out_dir, exist_ok=True)
    splits = {"held_out.jsonl": questions[: args.held_out], "train.jsonl": questions[args.held_out :]}
    for name, part in splits.items():
        with open(os.path.join(args.out_dir, name), "w") as f:
            for a, b in part:
                right = a + b
                f.write(json.dumps({"prompt": f"Question: {a} + {b} = ?\nAnswer:",
                                    "chosen": f" {right}",
                                    "rejected": f" {wrong_answer(rng, right)}"}) + "\n")
    print(f"wrote {len(splits['train.jsonl'])} training and {len(splits['held_out.jsonl'])} "
          f"held-out pairs to {args.out_dir}")


if __name__ == "__main__":
    main()

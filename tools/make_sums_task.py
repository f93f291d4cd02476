#!/usr/bin/env python3
"""Writes the additions task of examples/dpo-sums and examples/grpo-sums. Seeded, so every run
writes the same files; no held-out question appears in the training file.

    tools/make_sums_task.py OUT_DIR --form pairs|answers [--count N] [--held-out M]
                            [--low A] [--high B] [--seed S]

pairs (DPO): {"prompt": "Question: a + b = ?\\nAnswer:", "chosen": " <sum>", "rejected": " <wrong>"},
the wrong answer plausible (off by one to nine, off by ten, or the digits swapped).
answers (GRPO): {"prompt": "<two worked examples>\\na + b =", "completion": " <sum>"}, the
completion being the exact-match reward's reference; the answer ends at a newline.
Writes OUT_DIR/train.jsonl and OUT_DIR/held_out.jsonl.
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


def line(form, rng, a, b):
    right = a + b
    if form == "pairs":
        return {"prompt": f"Question: {a} + {b} = ?\nAnswer:", "chosen": f" {right}",
                "rejected": f" {wrong_answer(rng, right)}"}
    return {"prompt": f"3 + 4 = 7\n12 + 5 = 17\n{a} + {b} =", "completion": f" {right}"}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--form", choices=["pairs", "answers"], required=True)
    ap.add_argument("--count", type=int, default=800)
    ap.add_argument("--held-out", type=int, default=100)
    ap.add_argument("--low", type=int, default=10)
    ap.add_argument("--high", type=int, default=99)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    space = (args.high - args.low + 1) ** 2
    if args.count + args.held_out > space:
        ap.error(f"only {space} distinct questions between {args.low} and {args.high}")
    questions = set()
    while len(questions) < args.count + args.held_out:
        questions.add((rng.randint(args.low, args.high), rng.randint(args.low, args.high)))
    questions = sorted(questions)
    rng.shuffle(questions)
    os.makedirs(args.out_dir, exist_ok=True)
    splits = {"held_out.jsonl": questions[: args.held_out], "train.jsonl": questions[args.held_out :]}
    for name, part in splits.items():
        with open(os.path.join(args.out_dir, name), "w") as f:
            for a, b in part:
                f.write(json.dumps(line(args.form, rng, a, b)) + "\n")
    print(f"wrote {len(splits['train.jsonl'])} training and {len(splits['held_out.jsonl'])} "
          f"held-out {args.form} to {args.out_dir}")


if __name__ == "__main__":
    main()

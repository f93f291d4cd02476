#!/usr/bin/env python3
"""Writes the date-normalisation fine-tuning task of examples/finetune-dates: prompts that spell
a date in one of several English forms ("March 5, 2021", "5 Mar 2021", "the 5th of March 2021")
and completions in ISO 8601 ("2021-03-05"). Seeded, so every run writes the same files.

    tools/make_date_task.py OUT_DIR [--examples N] [--seed S]

writes OUT_DIR/train.jsonl and OUT_DIR/held_out.jsonl (one {"prompt", "completion"} per line;
the held-out dates never appear in the training file).
"""
import argparse
import calendar
import datetime
import json
import os
import random

MONTHS = list(calendar.month_name)[1:]
SHORT = list(calendar.month_abbr)[1:]


def ordinal(n):
    if 10 <= n % 100 <= 20:
        return f"{n}th"
    return f"{n}{ {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th') }"


def spell(d, form):
    if form == 0:
        return f"{MONTHS[d.month - 1]} {d.day}, {d.year}"
    if form == 1:
        return f"{d.day} {SHORT[d.month - 1]} {d.year}"
    if form == 2:
        return f"the {ordinal(d.day)} of {MONTHS[d.month - 1]} {d.year}"
    return f"{SHORT[d.month - 1]}. {d.day} {d.year}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--examples", type=int, default=800)
    ap.add_argument("--held-out", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    start = datetime.date(1950, 1, 1).toordinal()
    end = datetime.date(2049, 12, 31).toordinal()
    dates = set()
    while len(dates) < args.examples + args.held_out:
        dates.add(datetime.date.fromordinal(rng.randint(start, end)))
    dates = sorted(dates)
    rng.shuffle(dates)
    os.makedirs(args.out_dir, exist_ok=True)
    for name, part in (("held_out.jsonl", dates[: args.held_out]),
                       ("train.jsonl", dates[args.held_out:])):
        with open(os.path.join(args.out_dir, name), "w") as f:
            for d in part:
                prompt = f"Date: {spell(d, rng.randrange(4))}\nISO 8601:"
                f.write(json.dumps({"prompt": prompt, "completion": " " + d.isoformat()}) + "\n")


if __name__ == "__main__":
    main()

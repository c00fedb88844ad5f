"""A toy "trainer" for command sweeps (examples/command/toy.toml): pure Python, no hyperp, no numpy.

Its final validation loss is 1 + (ln lr - ln lr_opt(width))^2 + noise, with lr_opt(width) = 0.05 * 128 / width
(so the optimum is known) and a normal noise of SD --noise fixed by (seed, lr). It writes what a command of a
sweep writes: `<out>/result.json` (val_loss and the other results) and `<out>/curves.jsonl` (one line per step).

    python toy_train.py --lr 0.1 --width 64 --seed 0 --out /tmp/run
"""

import argparse
import json
import math
import os
import random


def lr_opt(width: int) -> float:
    return 0.05 * 128 / width


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lr", type=float, required=True)
    p.add_argument("--width", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--noise", type=float, default=0.01)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    final = 1.0 + (math.log(a.lr) - math.log(lr_opt(a.width))) ** 2
    final += a.noise * random.Random(f"{a.seed}:{a.lr!r}").gauss(0.0, 1.0)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "curves.jsonl"), "w") as f:
        for step in range(1, a.steps + 1):  # a loss decaying from ln(256) to the final value
            loss = final + (math.log(256) - final) * math.exp(-5 * step / a.steps)
            f.write(json.dumps({"step": step, "train_loss": loss}) + "\n")
    result = {"val_loss": final, "train_loss": final, "steps": a.steps, "lr_opt": lr_opt(a.width)}
    tmp = os.path.join(a.out, "result.json.tmp")
    with open(tmp, "w") as f:
        json.dump(result, f)
    os.replace(tmp, os.path.join(a.out, "result.json"))  # atomic: a half-written result is never read


if __name__ == "__main__":
    main()

"""The gate on this very machine, as a user runs it: real sweeps, real verdicts.

Six sweeps of one plan into a fresh store (the quick plan plus a small CNN of one's own, `net`,
given as .keras; each cell `repetitions` launches):

1-3. the plan as it is, three times (identical artifacts from the cache);
4.   `net` replaced by the same network with one more layer under the same name (10-15 % slower);
5.   the plan as it is, swept while two CPU hogs share this 2-core machine;
6.   `net` retrained: the same architecture with other weights (other bytes, the same speed), as a
     nightly build of an unchanged model is.

Then: runs 1-3 gated pairwise at `--threshold 0.02`, first pass alone and with `--confirm` (all
must exit 0 with --confirm); run 4 against run 3 with --confirm (must exit 1 on `net`'s cells,
confirmed); run 5 against run 3 without --confirm (exit 1) and with it (device changed, exit 0);
run 6 against run 3 with --confirm (its `net` cells confirmed unchanged, exit 0).
Prints each gate's exit status, verdict counts, what decided them and the confirmation's device
seconds; the store stays in `--work` for `benchmarks/gate_power.py --db`.

    .venv/bin/python benchmarks/gate_real.py [--work results/gate-real] [--plan plans/quick.yaml]"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HARNESS = [sys.executable, "-m", "harness"]
NET = """
import sys
from harness.tfenv import import_tf
tf, keras = import_tf()
for name, extra, seed in (("base", 0, 1), ("slower", 1, 1), ("retrained", 0, 2)):
    keras.utils.set_random_seed(seed)
    layers = [keras.layers.InputLayer(input_shape=(32, 32, 3)), keras.layers.Conv2D(16, 3, activation="relu"),
              keras.layers.Conv2D(32, 3, strides=2, activation="relu"), keras.layers.Conv2D(32, 3, activation="relu")]
    if extra:
        layers.append(keras.layers.Conv2D(64, 1, activation="relu"))
    layers += [keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10)]
    keras.Sequential(layers).save(f"{sys.argv[1]}/{name}.keras")
"""


def sweep(work: Path, plan: Path, db: Path, hogs: int = 0) -> tuple[str, float]:
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(hogs)]
    started = time.monotonic()
    try:
        result = subprocess.run([*HARNESS, "sweep", "--plan", str(plan), "--db", str(db), "-q"], cwd=ROOT,
                                capture_output=True, text=True, stdin=subprocess.DEVNULL)
    finally:
        for hog in busy:
            hog.kill()
            hog.wait()
    if result.returncode != 0:
        sys.exit(f"sweep failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result.stdout.strip().splitlines()[-1], time.monotonic() - started


def sweeps(work: Path, plan: str, db: Path) -> tuple[list[str], list[float]]:
    """The six sweeps into a fresh store; their run ids and wall seconds."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    subprocess.run([sys.executable, "-c", NET, str(work)], check=True, cwd=ROOT, capture_output=True)
    text = (ROOT / plan).read_text()
    plans = {}
    for model in ("base", "slower", "retrained"):
        plans[model] = work / f"plan-{model}.yaml"
        plans[model].write_text(text.replace("models:\n", f"models:\n  - path: {model}.keras\n    name: net\n"
                                                          "    variants: [fp32]\n", 1))
    ids, walls = [], []
    for n, (model, hogs) in enumerate((("base", 0), ("base", 0), ("base", 0), ("slower", 0), ("base", 2),
                                       ("retrained", 0)), 1):
        run_id, wall = sweep(work, plans[model], db, hogs)
        ids.append(run_id)
        walls.append(wall)
        print(f"sweep {n}: {model}{' beside 2 CPU hogs' if hogs else ''}: run {run_id} in {wall:.0f} s", flush=True)
    return ids, walls


def gate(db: Path, work: Path, base: str, cand: str, confirm: bool, name: str) -> dict:
    args = [*HARNESS, "gate", "--baseline", base, "--candidate", cand, "--threshold", "0.02", "--db", str(db),
            "--markdown", str(work / f"gate-{name}.md")] + (["--confirm"] if confirm else [])
    started = time.monotonic()
    result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    rows = [line.split(" | ") for line in result.stdout.splitlines() if line.startswith("| ") and " | " in line
            and not line.startswith("| device ") and not line.startswith("|---")]
    verdicts = Counter(r[12].strip("*") for r in rows)
    decided = Counter(re.sub(r"\d+", "N", r[13]) for r in rows)
    spent = re.search(r"(\d+) device seconds", result.stdout)
    net = sorted({r[12].strip("*") for r in rows if r[1] == "net"})
    return {"name": name, "exit": result.returncode, "verdicts": dict(verdicts), "decided": dict(decided),
            "confirm_s": int(spent.group(1)) if spent else 0, "seconds": time.monotonic() - started, "net": net}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="results/gate-real", help="where the store, plans and tables go")
    parser.add_argument("--plan", default="plans/quick.yaml", help="the plan to sweep (plus `net`)")
    parser.add_argument("--gates-only", action="store_true",
                        help="gate the six runs already in --work's store again (after a change to the gate)")
    args = parser.parse_args()
    work = (ROOT / args.work).resolve()
    db = work / "gate.sqlite"
    if args.gates_only:
        import sqlite3

        with sqlite3.connect(db) as con:
            ids = [r[0] for r in con.execute("SELECT id FROM runs ORDER BY started_at, rowid")][-6:]
        walls = []
    else:
        ids, walls = sweeps(work, args.plan, db)
    results = []
    for a, b in ((0, 1), (1, 2), (0, 2)):
        for confirm in (False, True):
            results.append(gate(db, work, ids[a], ids[b], confirm, f"same-{a + 1}-{b + 1}{'-confirm' * confirm}"))
    results.append(gate(db, work, ids[2], ids[3], True, "slower-confirm"))
    results.append(gate(db, work, ids[2], ids[4], False, "hogs"))
    results.append(gate(db, work, ids[2], ids[4], True, "hogs-confirm"))
    results.append(gate(db, work, ids[2], ids[5], True, "retrained-confirm"))
    print("\n| gate | exit | verdicts | decided by | net's cells | confirmation device s | gate wall s |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['name']} | {r['exit']} | {r['verdicts']} | {r['decided']} | {', '.join(r['net'])} | "
              f"{r['confirm_s']} | {r['seconds']:.0f} |")
    same = [r for r in results if r["name"].startswith("same") and r["name"].endswith("confirm")]
    by_name = {r["name"]: r for r in results}
    took = f"; sweeps took {', '.join(f'{w:.0f}' for w in walls)} s" if walls else ""
    print(f"\nstore: {db} (runs {', '.join(ids)}){took}")
    print(f"identical_confirm_exits={[r['exit'] for r in same]} slower_exit={by_name['slower-confirm']['exit']} "
          f"hogs_exit={by_name['hogs']['exit']} hogs_confirm_exit={by_name['hogs-confirm']['exit']} "
          f"retrained_confirm_exit={by_name['retrained-confirm']['exit']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The lr-transfer study: where Muon's and AdamW's best learning rates sit across width, horizon and batch.

    nohup python bench/lr_transfer.py > bench/results/lr_transfer/study.log 2>&1 &   # resumable: rerun to continue
    python bench/lr_transfer.py --report            # tables, fitted rule and plots from the runs made so far
    python bench/lr_transfer.py --dry_run           # the runs it would launch next, with their lrs

Every run is one ``mamba-train`` process launched by ``bench/convergence.py``'s ``train_run`` (the same flags,
reuse check, pruning and machine record as the convergence bench), on reduced-depth proxies of the named sizes
(``bench/lr_transfer/proxies.yaml``: the named size's heads, state and expansion at its real width, 3 layers,
the bundled tokenizer and math data). Muon's lr is the Muon-side lr under ``adjust_lr=original`` (and, as a
variant, ``match_rms_adamw``); its AdamW side (embeddings, norms, SSM scalars) takes AdamW's best lr at the same
width and condition.

Stages, in priority order (two runs at a time, one torch thread each; a stage's grid can depend on earlier results):
1. widths 192 and 512, both families: AdamW and Muon over a 2x grid (extended past an edge best).
2. width 1,024: three points of a 2x grid centred on the lr the 192/512 fit predicts (the rule under test).
3. a second seed at 1,024 at the presets' rule's lrs: Muon's steps to AdamW's final loss (the issue's 0.65 target).
4. held-out width 640 at the lr the 192/512 fit predicts and one grid step either side (the rule where it was
   not fitted).
5. ``match_rms_adamw`` at 192 and 512 (3 points each); Muon's AdamW side at half and twice AdamW's best at 512.
6. horizon and batch at width 192: 1,200 steps (3 points), batch 16 (3 points); it needs only width 192's best,
   so it starts beside stages 1-5 and takes a slot only when none of theirs waits (only stage 7 waits for it).
7. horizon 2,400 steps at 192, one seed, 2 points around the 1,200-step best.
8. horizon 4,800 steps at 192 for the hybrid's Muon only (``LONGER``: the side whose 2,400-step best bounds the
   Muon presets), one seed, 2 points around the 2,400-step best.

Base condition ("s300_b4"): 300 optimizer steps of 4 x 256 tokens, warmup 10%, cosine decay to 0 (the demo
presets scaled to the run), eval on 96 held-out examples every 30 steps. Chosen so the whole study fits ~8 hours
of a 2-core CPU: a 1,024-wide 3-layer hybrid step of 8 x 256 tokens took 12 s on one core, so the batch is halved.
Results: ``<out>/<condition>/<size>/<run>/`` (pruned: metrics, run files), ``study.json`` (each finished run's
final loss), and with ``--report`` ``summary.md``, ``rule.json`` and the plots.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import json
import math
import os
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
PROXIES = ROOT / "bench" / "lr_transfer" / "proxies.yaml"

import convergence  # noqa: E402  (bench/convergence.py)

FAMILIES = ("hybrid", "mamba")
FIT_WIDTHS = (192, 512)
BASE = {"steps": 300, "batch": 4, "seq_len": 256, "eval_every": 30, "eval_examples": 96}
#: lrs lie on 2x grids through these anchors
ANCHOR = {"adamw": 1e-3, "muon": 1e-2}
START_GRID = {"adamw": (-1, 0, 1, 2, 3), "muon": (-1, 0, 1, 2, 3)}  # exponents: 5e-4..8e-3 and 5e-3..8e-2
MAX_EXTEND = 2
#: stage 8: family -> the optimizers run at 4,800 steps. The hybrid's Muon: its 2,400-step best bounds the Muon
#: presets (Mamba2's bound sits ~5x above them; AdamW's best rose with batch, so it bounds nothing)
LONGER = {"hybrid": ("muon",)}
#: the slots stay closed at start for HOLD_SECONDS, and until QUIET_SECONDS pass with no finished run reused (they
#: take no slot) and no new run queued; a resumed study then starts its runs in stage order (walking ~80 finished
#: runs took 6 s, 5 of them importing)
HOLD_SECONDS, QUIET_SECONDS = 10.0, 5.0


def grid_lr(kind: str, k: int) -> float:
    """The k-th point of ``kind``'s 2x grid: ``grid_lr("adamw", 2) == 0.004``."""
    return float(f"{ANCHOR[kind] * 2.0 ** k:.6g}")


def grid_index(kind: str, lr: float) -> int:
    return round(math.log2(lr / ANCHOR[kind]))


def condition_name(steps: int, batch: int) -> str:
    return f"s{steps}_b{batch}"


def size_name(family: str, width: int) -> str:
    return f"proxy-{family}-{width}"


def best_lr(results: dict[float, float]) -> tuple[float | None, float | None]:
    """(grid best, refined best): the refined one is the vertex of a parabola through the best point and its two
    neighbours in log2(lr), kept within them (the grid best where the best sits on an edge). None when nothing
    finite.

    >>> [round(x, 6) for x in best_lr({1e-3: 3.0, 2e-3: 2.0, 4e-3: 3.0})]
    [0.002, 0.002]
    >>> round(best_lr({1e-3: 2.5, 2e-3: 2.0, 4e-3: 3.0})[1], 6)  # 2e-3 * 2 ** -(1/6): the vertex leans to 1e-3
    0.001782
    """
    finite = {lr: v for lr, v in results.items() if math.isfinite(v)}
    if not finite:
        return None, None
    lrs = sorted(results)
    best = min(finite, key=finite.get)
    i = lrs.index(best)
    if i == 0 or i == len(lrs) - 1 or not all(math.isfinite(results[lrs[j]]) for j in (i - 1, i + 1)):
        return best, best
    x = [math.log2(lrs[j]) for j in (i - 1, i, i + 1)]
    y = [results[lrs[j]] for j in (i - 1, i, i + 1)]
    denom = (x[0] - x[1]) * (x[0] - x[2]) * (x[1] - x[2])
    a = (x[2] * (y[1] - y[0]) + x[1] * (y[0] - y[2]) + x[0] * (y[2] - y[1])) / denom
    b = (x[2] ** 2 * (y[0] - y[1]) + x[1] ** 2 * (y[2] - y[0]) + x[0] ** 2 * (y[1] - y[2])) / denom
    vertex = -b / (2 * a) if a > 0 else x[1]
    return best, 2.0 ** min(max(vertex, x[0]), x[2])


def inside(results: dict[float, float], grid: float) -> bool:
    """Whether the best lr ``grid`` lies inside the swept lrs (not on an edge: a minimum, not a bound)."""
    return min(results) < grid < max(results)


def fit_power(points: dict[int, float]) -> tuple[float, float]:
    """Least-squares fit of lr = c * (width / 192) ** alpha in log space: (c, alpha); alpha 0 for one width.

    >>> c, a = fit_power({192: 0.01, 768: 0.0025}); round(c, 6), round(a, 6)
    (0.01, -1.0)
    """
    xs = [math.log(w / 192) for w in points]
    ys = [math.log(v) for v in points.values()]
    if len(points) < 2:
        return math.exp(ys[0]), 0.0
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    alpha = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return math.exp(my - alpha * mx), alpha


def architecture(family: str) -> str:
    """configs/lr_rule.py's architecture name for a study family: ``architecture("hybrid") == "zamba2"``."""
    from configs.lr_rule import STUDY_FAMILIES

    return next(a for a, f in STUDY_FAMILIES.items() if f == family)


def rule_fit_widths(family: str, kind: str) -> tuple[int, ...]:
    """The widths configs/lr_rule.py's exponent for (family, kind) was fitted through: the rule the presets follow."""
    from configs.lr_rule import FIT_WIDTHS as RULE_FIT_WIDTHS

    return tuple(RULE_FIT_WIDTHS[(architecture(family), kind)])


def preset_rule_lr(family: str, kind: str, bests: dict[int, float], width: int) -> float:
    """The lr the presets' rule gives at ``width`` in the study's condition: ``bests`` (width -> best lr) fitted
    through `rule_fit_widths`."""
    c, alpha = fit_power({w: bests[w] for w in rule_fit_widths(family, kind) if w in bests})
    return c * (width / 192) ** alpha


class Slots:
    """At most ``n`` runs at a time; waiting runs start in priority order (lower first; any comparable value),
    then arrival order. The first run starts only after ``hold`` seconds and once nothing has arrived (a waiting
    run, or a finished one reused: `touch`) for ``quiet`` seconds: a resumed study first walks through its
    finished runs, and every stage must reach its first unfinished run before any starts, or a later stage's run
    takes a slot just because its thread got there first. A freed slot waits ``quiet`` seconds too, for the same
    reason: the thread whose run just ended queues its next (often an earlier stage's) a moment later."""

    def __init__(self, n: int, hold: float = 0.0, quiet: float = 0.0):
        self.free, self.waiting, self.cond, self.count = n, [], threading.Condition(), itertools.count()
        self.open_at, self.quiet, self.last = time.monotonic() + hold, quiet, time.monotonic()
        self.opened = hold <= 0 and quiet <= 0

    def touch(self) -> None:
        with self.cond:
            self.last = time.monotonic()

    def _closed_for(self) -> float:
        """Seconds until the first run may start (0 once one has)."""
        if self.opened:
            return 0.0
        wait = max(self.open_at, self.last + self.quiet) - time.monotonic()
        self.opened = wait <= 0
        return max(wait, 0.0)

    def __enter__(self):
        return self

    def run(self, priority: int, fn, *args):
        with self.cond:
            ticket = (priority, next(self.count))
            heapq.heappush(self.waiting, ticket)
            self.last = time.monotonic()
            while (closed := self._closed_for()) or self.free == 0 or self.waiting[0] != ticket:
                self.cond.wait(closed or None)
            heapq.heappop(self.waiting)
            self.free -= 1
            self.cond.notify_all()
        try:
            return fn(*args)
        finally:
            with self.cond:
                self.free += 1
                self.last, self.opened = time.monotonic(), self.quiet <= 0
                self.cond.notify_all()

    def __exit__(self, *exc):
        return False


class Study:
    def __init__(self, args):
        os.environ["MAMBA_TRAINER_PRESETS"] = str(PROXIES)  # the proxies are sizes for every run and reuse check
        self.args = args
        self.out = Path(args.out)
        self.slots = Slots(args.workers, hold=HOLD_SECONDS, quiet=QUIET_SECONDS)
        self.lock = threading.Lock()
        self.results: dict[str, dict] = {}
        self.dry = args.dry_run

    # ---- one run ----
    def cfg(self, steps: int, batch: int, variant: str = "", extra: str = "") -> SimpleNamespace:
        return SimpleNamespace(out=str(self.out / condition_name(steps, batch)), steps=steps, batch=batch,
                               seq_len=BASE["seq_len"], eval_every=max(BASE["eval_every"] * steps // BASE["steps"], 1),
                               eval_examples=BASE["eval_examples"], variant=variant, extra=extra,
                               threads=self.args.threads, keep_weights=False, resumable=True)

    def run(self, priority: int, size: str, kind: str, lr: float, seed: int, cfg, adamw_lr=None) -> float:
        run_dir = Path(cfg.out) / size / convergence.run_name(kind, lr, seed, cfg.variant)
        key = f"{Path(cfg.out).name}/{size}/{run_dir.name}"
        done = convergence.is_complete(run_dir)
        if self.dry:
            if done:
                return convergence.summarize_run(convergence.read_metrics(run_dir))["final"]
            print(f"would run {key} (AdamW side {adamw_lr})")
            return math.nan
        # narrow runs first within a stage: they are minutes each, and both families' fits need them
        order = (priority, int(size.rsplit("-", 1)[1]) * cfg.steps * cfg.batch)
        if done:
            self.slots.touch()
            r = convergence.train_run(size, kind, lr, seed, cfg, adamw_lr)  # reused: no slot needed
        else:
            r = self.slots.run(order, convergence.train_run, size, kind, lr, seed, cfg, adamw_lr)
        with self.lock:
            self.results[key] = {k: r[k] for k in ("size", "kind", "lr", "seed", "adamw_lr", "final", "status",
                                                   "steps", "train_seconds", "machine", "fused_blocks")}
            self.results[key].update(condition=Path(cfg.out).name, variant=cfg.variant)
            (self.out / "study.json").write_text(json.dumps(self.results, indent=1, sort_keys=True) + "\n")
        return r["final"]

    def tune(self, priority, size, kind, indices, cfg, adamw_lr=None, seed=0) -> dict[float, float]:
        """Runs at grid points ``indices`` (in parallel), then up to MAX_EXTEND more past an edge best."""
        with ThreadPoolExecutor(len(indices)) as pool:
            finals = list(pool.map(lambda k: self.run(priority, size, kind, grid_lr(kind, k), seed, cfg, adamw_lr),
                                   indices))
        results = dict(zip((grid_lr(kind, k) for k in indices), finals))
        for _ in range(MAX_EXTEND):
            if any(math.isnan(v) for v in results.values()):  # a dry run follows finished extensions, then stops
                break
            lr = convergence.next_lr(results, 2.0) if len(results) > 1 else None
            if lr is None:
                break
            results[lr] = self.run(priority, size, kind, lr, seed, cfg, adamw_lr)
        return results

    def horizon_and_batch(self, family: str, fitted192) -> None:
        """Stage 6: horizon and batch at 192, around the base condition's best (run beside stages 1-5)."""
        size = size_name(family, 192)
        g_a, g_m = fitted192
        for steps, batch, shifts in ((1200, 4, (-2, -1, 0)), (300, 16, (-1, 0, 1))):
            cfg = self.cfg(steps, batch)
            res_a = self.tune(6, size, "adamw", [grid_index("adamw", g_a) + s for s in shifts], cfg)
            side = best_lr(res_a)[0]
            self.tune(6, size, "muon", [grid_index("muon", g_m) + s for s in shifts], cfg, adamw_lr=side)

    # ---- stages ----
    def family(self, family: str) -> None:
        base = self.cfg(BASE["steps"], BASE["batch"])
        best = {"adamw": {}, "muon": {}}  # width -> refined best lr

        def tune_width(width, priority, indices_of, after_adamw=None):
            size = size_name(family, width)
            res_a = self.tune(priority, size, "adamw", indices_of("adamw"), base)
            grid_a, fine_a = best_lr(res_a)
            if grid_a is None:
                return
            best["adamw"][width] = fine_a
            if after_adamw is not None:
                after_adamw()
            res_m = self.tune(priority, size, "muon", indices_of("muon"), base, adamw_lr=grid_a)
            grid_m, fine_m = best_lr(res_m)
            if grid_m is not None:
                best["muon"][width] = fine_m
            return grid_a, grid_m

        # stage 6 needs only width 192's best: it runs beside everything after it (stages 1-5 keep the slots
        # first, by priority); only stage 7 waits for it
        fitted = {FIT_WIDTHS[0]: tune_width(FIT_WIDTHS[0], 1, START_GRID.get)}
        with ThreadPoolExecutor(1) as pool:
            horizon = pool.submit(self.horizon_and_batch, family, fitted[FIT_WIDTHS[0]]) \
                if fitted[FIT_WIDTHS[0]] is not None else None
            fitted.update({w: tune_width(w, 1, START_GRID.get) for w in FIT_WIDTHS[1:]})
            if any(v is None for v in fitted.values()):
                print(f"{family}: stage 1 not finished; later stages wait for it")
                return
            self.after_fit(family, base, best, fitted, tune_width)
            if horizon is not None:
                horizon.result()
        self.longest_horizon(family)
        self.longer_horizon(family)

    def after_fit(self, family, base, best, fitted, tune_width) -> None:
        """Stages 2-5: everything that needs the 192/512 fit."""
        rule = {kind: fit_power(best[kind]) for kind in ("adamw", "muon")}

        def predicted(kind, width):
            c, alpha = rule[kind]
            return grid_index(kind, c * (width / 192) ** alpha)

        # stage 2: width 1,024 around the prediction; stage 3: a second seed at 1,024 at the lrs the presets'
        # rule gives there (configs/lr_rule.py fits each side through FIT_WIDTHS: 192/512, or 192/512/1,024 where
        # it was refitted), Muon's AdamW side as seed 0's. AdamW's second seed needs only AdamW's sweep, so it
        # starts as soon as that is done, beside Muon's sweep; Muon's waits for Muon's sweep.
        size = size_name(family, 1024)

        def rule_point(kind):
            return grid_lr(kind, grid_index(kind, preset_rule_lr(family, kind, best[kind], 1024)))

        with ThreadPoolExecutor(1) as second_seed:
            adamw_seed1 = []
            grids = tune_width(1024, 2, lambda kind: (predicted(kind, 1024) - 1, predicted(kind, 1024),
                                                      predicted(kind, 1024) + 1),
                               after_adamw=lambda: adamw_seed1.append(second_seed.submit(
                                   self.run, 3, size, "adamw", rule_point("adamw"), 1, base)))
            if grids is not None and grids[1] is not None:
                self.run(3, size, "muon", rule_point("muon"), 1, base, grids[0])
            for future in adamw_seed1:
                future.result()

        # stage 4: held-out width 640 at the lrs the 192/512 fit predicts and one step either side; Muon's AdamW
        # side is the predicted AdamW lr, so both sweeps are queued at once
        size = size_name(family, 640)
        with ThreadPoolExecutor(2) as pool:
            sweeps = [pool.submit(self.tune, 4, size, "adamw", [predicted("adamw", 640) + s for s in (-1, 0, 1)], base),
                      pool.submit(self.tune, 4, size, "muon", [predicted("muon", 640) + s for s in (-1, 0, 1)], base,
                                  grid_lr("adamw", predicted("adamw", 640)))]
            for sweep in sweeps:
                sweep.result()

        # stage 5: match_rms_adamw at the fit widths (that scale is made for AdamW's lr: centre on AdamW's best),
        # and Muon's AdamW side at half and twice AdamW's best at 512 (is "AdamW's own best" right for it?)
        rms = self.cfg(BASE["steps"], BASE["batch"], variant="rms", extra="--adjust_lr match_rms_adamw")
        for width in FIT_WIDTHS:
            g_a, _ = fitted[width]
            k = grid_index("muon", g_a)
            self.tune(5, size_name(family, width), "muon", (k - 1, k, k + 1), rms, adamw_lr=g_a)
        g_a, g_m = fitted[512]
        for factor in (0.5, 2.0):
            side = self.cfg(BASE["steps"], BASE["batch"], variant=f"side_x{factor:g}")
            self.run(5, size_name(family, 512), "muon", g_m, 0, side, g_a * factor)

    def finished_at_192(self, family: str, kind: str, steps: int) -> dict[float, float]:
        """{lr: final loss} of the plain seed-0 runs at width 192, ``steps`` steps of batch ``BASE`` (this process's)."""
        cond = condition_name(steps, BASE["batch"])
        return {r["lr"]: r["final"] for r in self.results.values()
                if r["size"] == size_name(family, 192) and r["kind"] == kind and r["condition"] == cond
                and r["variant"] == "" and r["seed"] == 0}

    def longest_horizon(self, family: str) -> None:
        """Stage 7: horizon 2,400 at 192, one seed, the 1,200-step best and half of it."""
        side = None
        for kind in ("adamw", "muon"):
            done = self.finished_at_192(family, kind, 1200)
            best12 = best_lr(done)[0]
            if best12 is None:
                continue
            k = grid_index(kind, best12)
            res = self.tune(7, size_name(family, 192), kind, (k - 1, k), self.cfg(2400, 4),
                            adamw_lr=side if kind == "muon" else None)
            if kind == "adamw":
                side = best_lr(res)[0]

    def longer_horizon(self, family: str) -> None:
        """Stage 8: 4,800 steps at 192 for the sides in ``LONGER`` (the 2,400-step best and half of it; Muon's AdamW
        side at AdamW's 2,400-step best): does the best lr keep falling past the horizon that bounds the presets?"""
        for kind in LONGER.get(family, ()):
            best = best_lr(self.finished_at_192(family, kind, 2400))[0]
            side = best_lr(self.finished_at_192(family, "adamw", 2400))[0] if kind == "muon" else None
            if best is None or (kind == "muon" and side is None):
                continue
            k = grid_index(kind, best)
            self.tune(8, size_name(family, 192), kind, (k - 1, k), self.cfg(4800, 4), adamw_lr=side)

    def main(self) -> int:
        self.out.mkdir(parents=True, exist_ok=True)
        if (self.out / "study.json").is_file():
            self.results = json.loads((self.out / "study.json").read_text())
        convergence.log(f"lr-transfer study in {self.out}, {self.args.workers} runs at a time")
        errors = []

        def guarded(family):
            try:
                self.family(family)
            except Exception:  # one family's failure must not stop the other's runs
                errors.append(family)
                traceback.print_exc()

        with ThreadPoolExecutor(len(FAMILIES)) as pool:
            list(pool.map(guarded, [f for f in FAMILIES if f in self.args.families.split(",")]))
        convergence.log("study finished" + (f" with errors in {errors}" if errors else ""))
        return 1 if errors else 0


def parse(argv=None):
    p = argparse.ArgumentParser(description="Muon/AdamW lr transfer across width, horizon and batch (CPU proxies).")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "lr_transfer"))
    p.add_argument("--families", default=",".join(FAMILIES))
    p.add_argument("--workers", type=int, default=2, help="runs at a time")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--dry_run", action="store_true", help="list the runs it would launch now; launch nothing")
    p.add_argument("--report", action="store_true", help="write the summary and plots from the runs made so far")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    if args.report:
        from lr_transfer_report import report  # noqa: PLC0415  (bench/lr_transfer_report.py)

        return report(Path(args.out))
    return Study(args).main()


if __name__ == "__main__":
    sys.exit(main())

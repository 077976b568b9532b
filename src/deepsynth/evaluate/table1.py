"""The paper's Table 1 (L2 strength, layers, channels -> train and validation CE, nats; one row per
named preset, deepsynth.model.presets) and the table a sweep's run folders make beside it.

`tabulate(sweep_dir)` reads every run folder in SWEEP_DIR (config.json, metrics.csv and the
sweep's throughput.json), one row per run (preset and seed), and compares them

  - at equal steps: S = the fewest steps any run took; train CE is the mean logged train CE over
    the last tenth of the S steps, val CE the best validation CE up to step S (the paper keeps
    the best model);
  - at equal training time: T = the shortest training time (validation excluded) of any run;
    val CE is the last validation within T;

checks the paper's three claims on the seed means at equal steps, the spread between seeds of
one preset being the noise, and writes SWEEP_DIR/table1.md, table1.json and table1.png
(validation CE against steps and against training time, every run). table1.md also lists the
sweep commands run on SWEEP_DIR (commands.txt) and, when there, SWEEP_DIR/notes.md (a reading of
the figures written by hand).
"""

from __future__ import annotations

import json
import math
import os
import statistics
from dataclasses import dataclass
from pathlib import Path

from deepsynth.atomic import atomic_write_text


@dataclass(frozen=True)
class PaperRow:
    preset: str
    l2: float
    layers: int
    channels: int
    train_ce: float
    val_ce: float


PAPER_TABLE1 = (
    PaperRow("paper-15x128-l2e-2", 1e-2, 15, 128, 2.23, 2.87),
    PaperRow("paper-15x128", 1e-4, 15, 128, 1.87, 2.35),
    PaperRow("paper-15x128-l2e-5", 1e-5, 15, 128, 1.65, 2.46),
    PaperRow("paper-20x128", 1e-4, 20, 128, 1.51, 2.26),
    PaperRow("paper-27x128", 1e-4, 27, 128, 1.21, 2.18),
    PaperRow("paper-27x256", 1e-4, 27, 256, 1.16, 2.15),
    PaperRow("paper-27x512", 1e-4, 27, 512, 1.14, 2.16),
)

TABLE_MD, TABLE_JSON, TABLE_PNG = "table1.md", "table1.json", "table1.png"
THROUGHPUT_JSON = "throughput.json"  # written by the sweep into each run folder
COMMANDS_TXT = "commands.txt"  # the sweep commands run on SWEEP_DIR, one a line
NOTES_MD = "notes.md"  # optional: a reading of the figures, by hand, put into table1.md


def paper_row(preset: str | None) -> PaperRow | None:
    return next((r for r in PAPER_TABLE1 if r.preset == preset), None)


def standin_of(row: PaperRow, divisor: int) -> str:
    """The CPU stand-in's name of a Table 1 row: cpu-15x16-l2e-2 for paper-15x128-l2e-2."""
    name = f"cpu-{row.layers}x{row.channels // divisor}"
    return name + row.preset.removeprefix(f"paper-{row.layers}x{row.channels}")


def _paper_for(preset: str) -> tuple[int, PaperRow | None]:
    """(place in Table 1, the paper's row) of a paper preset or its CPU stand-in."""
    from deepsynth.model.presets import CPU_CHANNEL_DIVISOR

    for i, r in enumerate(PAPER_TABLE1):
        if preset in (r.preset, standin_of(r, CPU_CHANNEL_DIVISOR)):
            return i, r
    return len(PAPER_TABLE1), None


# --- one run folder -------------------------------------------------------------------------


def read_run(folder: str | os.PathLike) -> dict | None:
    """A run folder's figures: its preset, seed, sizes and the logged rows; None when it is not
    a run folder (no config.json or metrics.csv)."""
    from deepsynth.evaluate.plots import read_metrics_csv

    folder = Path(folder)
    if not (folder / "config.json").is_file() or not (folder / "metrics.csv").is_file():
        return None
    cfg = json.loads((folder / "config.json").read_text())
    rows = [r for r in read_metrics_csv(folder / "metrics.csv") if r.get("step") is not None]
    if not rows:
        return None
    thr = folder / THROUGHPUT_JSON
    order, paper = _paper_for(cfg["preset"])
    decoder = cfg["model"]["decoder"]
    return {
        "preset": cfg["preset"], "stands_for": paper.preset if paper else None,
        "standin": paper is not None and paper.preset != cfg["preset"], "order": order,
        "seed": cfg["train"]["seed"], "l2": cfg["train"]["l2"], "layers": decoder["layers"],
        "channels": decoder["residual_channels"], "device": cfg.get("device"),
        "data": cfg.get("data"), "steps_per_epoch": cfg.get("steps_per_epoch"),
        "run": str(folder), "rows": rows,
        "throughput": json.loads(thr.read_text()) if thr.is_file() else None,
        "paper_train_ce": paper.train_ce if paper else None,
        "paper_val_ce": paper.val_ce if paper else None,
    }


def _train_ce(rows: list[dict], steps: int) -> float | None:
    """Mean logged train CE over the last tenth of the first `steps` steps (at least the last
    logged row)."""
    logged = [r for r in rows if r.get("train_ce") is not None and r["step"] <= steps]
    if not logged:
        return None
    since = steps - max(steps // 10, 1)
    tail = [r["train_ce"] for r in logged if r["step"] > since] or [logged[-1]["train_ce"]]
    return sum(tail) / len(tail)


def _vals(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r.get("val_ce") is not None and math.isfinite(r["val_ce"])]


def at_steps(run: dict, steps: int) -> dict:
    """The run's figures over its first `steps` steps."""
    vals = [r for r in _vals(run["rows"]) if r["step"] <= steps]
    best = min(vals, key=lambda r: r["val_ce"]) if vals else None
    upto = [r for r in run["rows"] if r["step"] <= steps]
    return {"steps": min(steps, run["rows"][-1]["step"]), "train_ce": _train_ce(run["rows"], steps),
            "val_ce": best["val_ce"] if best else None,
            "best_step": int(best["step"]) if best else None,
            "last_val_ce": vals[-1]["val_ce"] if vals else None,
            "minutes": (upto[-1].get("time_s") or 0.0) / 60 if upto else 0.0}


def at_minutes(run: dict, minutes: float) -> dict:
    """The run's figures after `minutes` of training time: its last validation within them."""
    limit = 60 * minutes + 1e-6
    within = [r for r in run["rows"] if (r.get("time_s") or 0.0) <= limit]
    steps = int(within[-1]["step"]) if within else 0
    vals = [r for r in _vals(within)]
    return {"minutes": minutes, "steps": steps,
            "train_ce": _train_ce(run["rows"], steps) if steps else None,
            "val_step": int(vals[-1]["step"]) if vals else None,
            "val_ce": vals[-1]["val_ce"] if vals else None}


# --- the table ------------------------------------------------------------------------------


def tabulate(sweep_dir: str | os.PathLike, write: bool = True) -> dict:
    """The table of every run folder in `sweep_dir` (see the module doc); with `write`,
    table1.md, table1.json and table1.png are rewritten there."""
    sweep_dir = Path(sweep_dir)
    runs = [r for r in (read_run(d) for d in sorted(sweep_dir.iterdir()) if d.is_dir())
            if r is not None] if sweep_dir.is_dir() else []
    runs.sort(key=lambda r: (r["order"], r["preset"], r["seed"]))
    result: dict = {"format": "deepsynth-sweep", "table": "table1", "rows": []}
    if runs:
        steps = min(int(r["rows"][-1]["step"]) for r in runs)
        minutes = min((r["rows"][-1].get("time_s") or 0.0) for r in runs) / 60
        result |= {"equal_steps": steps, "equal_minutes": minutes,
                   "data": sorted({str(r["data"]) for r in runs}),
                   "devices": sorted({str(r["device"]) for r in runs}),
                   "standins": any(r["standin"] for r in runs)}
        for r in runs:
            s = at_steps(r, steps)
            per_epoch = r["steps_per_epoch"]
            result["rows"].append({
                "preset": r["preset"], "stands_for": r["stands_for"], "seed": r["seed"],
                "l2": r["l2"], "layers": r["layers"], "channels": r["channels"],
                "steps": s["steps"], "epochs": s["steps"] / per_epoch if per_epoch else None,
                "minutes": s["minutes"], "train_ce": s["train_ce"], "val_ce": s["val_ce"],
                "best_step": s["best_step"], "last_val_ce": s["last_val_ce"],
                "total_steps": int(r["rows"][-1]["step"]),
                "at_equal_minutes": at_minutes(r, minutes),
                "samples_per_s": (r["throughput"] or {}).get("samples_per_s"),
                "mfu": (r["throughput"] or {}).get("mfu"),
                "achieved_tflops": _achieved(r["throughput"]),
                "paper_train_ce": r["paper_train_ce"], "paper_val_ce": r["paper_val_ce"],
                "run": r["run"],
            })
        result["claims"] = check_claims(result["rows"])
    result["table_markdown"] = render_table(result)
    if write and sweep_dir.is_dir():
        commands = sweep_dir / COMMANDS_TXT
        result["commands"] = commands.read_text().splitlines() if commands.is_file() else []
        notes = sweep_dir / NOTES_MD
        result["notes"] = notes.read_text() if notes.is_file() else None
        if runs:
            figure(runs, sweep_dir / TABLE_PNG)
        atomic_write_text(sweep_dir / TABLE_MD, render_markdown(result, bool(runs)))
        atomic_write_text(sweep_dir / TABLE_JSON, json.dumps(result, indent=1) + "\n")
    return result


def _achieved(throughput: dict | None) -> float | None:
    """Model TFLOP/s over a run's training time, from its throughput.json."""
    t = throughput or {}
    if t.get("flops_per_step") is None or t.get("steps_per_s") is None:
        return None
    return t["flops_per_step"] * t["steps_per_s"] / 1e12


def _f(x, digits: int = 2) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f} %"


def render_table(result: dict) -> str:
    """The rows at equal steps, beside the paper's."""
    lines = [
        "| preset | stands for | L2 | layers | channels | steps | seed | train min | train CE | "
        "val CE | paper train CE | paper val CE |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['preset']} | {r['stands_for'] or '–'} | {r['l2']:g} | {r['layers']} | "
            f"{r['channels']} | {r['steps']} | {r['seed']} | {r['minutes']:.1f} | "
            f"{_f(r['train_ce'], 3)} | {_f(r['val_ce'], 3)} | {_f(r['paper_train_ce'])} | "
            f"{_f(r['paper_val_ce'])} |")
    return "\n".join(lines) + "\n"


def render_time_table(result: dict) -> str:
    """The rows at equal training time."""
    lines = ["| preset | seed | steps in that time | train CE | val CE (at step) |",
             "|---|---|---|---|---|"]
    for r in result["rows"]:
        t = r["at_equal_minutes"]
        at = f" ({t['val_step']})" if t["val_step"] is not None else ""
        lines.append(f"| {r['preset']} | {r['seed']} | {t['steps']} | {_f(t['train_ce'], 3)} | "
                     f"{_f(t['val_ce'], 3)}{at} |")
    return "\n".join(lines) + "\n"


# --- the paper's claims ---------------------------------------------------------------------


def _means(rows: list[dict]) -> dict[str, dict]:
    """Per preset: the mean train and val CE over its seeds and the spread of its val CE."""
    out: dict[str, dict] = {}
    for r in rows:
        m = out.setdefault(r["preset"], {"row": r, "val": [], "train": []})
        if r["val_ce"] is not None:
            m["val"].append(r["val_ce"])
        if r["train_ce"] is not None:
            m["train"].append(r["train_ce"])
    for m in out.values():
        m["val_ce"] = statistics.fmean(m["val"]) if m["val"] else None
        m["train_ce"] = statistics.fmean(m["train"]) if m["train"] else None
        m["spread"] = max(m["val"]) - min(m["val"]) if len(m["val"]) > 1 else None
    return out


def _by_paper(means: dict[str, dict]) -> dict[str, dict]:
    """The seed means keyed by the paper preset each run is or stands for."""
    return {m["row"]["stands_for"]: m for m in means.values() if m["row"]["stands_for"]}


def check_claims(rows: list[dict]) -> list[dict]:
    """The paper's three claims on the seed means at equal steps: each {claim, verdict
    ("holds", "holds in part", "does not hold", "within noise": no difference beyond the
    noise, "not measured"), detail}. A difference counts
    when it exceeds the noise: the largest val CE spread between seeds of one preset (0.01
    nats when no preset has two seeds)."""
    means = _means(rows)
    p = _by_paper(means)
    spreads = [m["spread"] for m in means.values() if m["spread"] is not None]
    noise = max(spreads) if spreads else 0.01
    seeds_note = (f"noise: the largest val CE spread between seeds of one preset, {noise:.3f}"
                  if spreads else "noise taken as 0.010 (no preset was run with two seeds)")

    def v(name, key="val_ce"):
        m = p.get(name)
        return None if m is None else m[key]

    def cmp(a: float, b: float) -> str:
        """How a compares with b beyond the noise: 'higher', 'lower' or 'level'."""
        return "higher" if a - b > noise else "lower" if b - a > noise else "level"

    def label(name):
        return p[name]["row"]["preset"]

    claims = []
    # 1. L2: 1e-2 underfits (higher train and val CE), 1e-5 overfits (lower train CE, higher val)
    names = ("paper-15x128-l2e-2", "paper-15x128", "paper-15x128-l2e-5")
    if all(v(n) is not None and v(n, "train_ce") is not None for n in names):
        hi, mid, lo = names
        under = cmp(v(hi, "train_ce"), v(mid, "train_ce")) == "higher" \
            and cmp(v(hi), v(mid)) == "higher"
        over = cmp(v(lo, "train_ce"), v(mid, "train_ce")) == "lower" \
            and cmp(v(lo), v(mid)) == "higher"
        gaps = {n: v(n) - v(n, "train_ce") for n in names}
        detail = (f"train / val CE: L2 1e-2 {v(hi, 'train_ce'):.3f} / {v(hi):.3f}, 1e-4 "
                  f"{v(mid, 'train_ce'):.3f} / {v(mid):.3f}, 1e-5 {v(lo, 'train_ce'):.3f} / "
                  f"{v(lo):.3f} (paper 2.23 / 2.87, 1.87 / 2.35, 1.65 / 2.46); val - train gap "
                  + ", ".join(f"{g:+.3f}" for g in gaps.values())
                  + " (paper +0.64, +0.48, +0.81). 1e-2 underfits: "
                  + ("yes" if under else "no") + "; 1e-5 overfits: " + ("yes" if over else "no"))
        level = all(abs(v(a, k) - v(b, k)) <= noise for k in ("val_ce", "train_ce")
                    for a in names for b in names)
        verdict = "holds" if under and over else "holds in part" if under or over \
            else "within noise" if level else "does not hold"
        claims.append({"claim": "L2 1e-2 underfits and 1e-5 overfits (1e-4 is best)",
                       "verdict": verdict, "underfits": under, "overfits": over,
                       "detail": detail})
    else:
        claims.append({"claim": "L2 1e-2 underfits and 1e-5 overfits (1e-4 is best)",
                       "verdict": "not measured", "detail": "needs the three 15-layer rows"})
    # 2. depth matters most: 15 -> 27 layers gains more than 128 -> 512 channels
    d15, d20, d27, c512 = "paper-15x128", "paper-20x128", "paper-27x128", "paper-27x512"
    if all(v(n) is not None for n in (d15, d27, c512)):
        depth, width = v(d15) - v(d27), v(d27) - v(c512)
        mid = f", {label(d20)} {v(d20):.3f}" if v(d20) is not None else ""
        verdict = "holds" if depth - width > noise and depth > noise else \
            "within noise" if abs(depth - width) <= noise else "does not hold"
        claims.append({
            "claim": "depth matters most", "verdict": verdict, "depth_gain": depth,
            "width_gain": width,
            "detail": f"val CE {label(d15)} {v(d15):.3f}{mid}, {label(d27)} {v(d27):.3f}: "
                      f"15 -> 27 layers gains {depth:+.3f}; 4x the channels at 27 layers "
                      f"({label(c512)} {v(c512):.3f}) gains {width:+.3f} (paper: 2.35 -> "
                      f"2.18, +0.17; 2.18 -> 2.16, +0.02)"})
    else:
        claims.append({"claim": "depth matters most", "verdict": "not measured",
                       "detail": "needs the 15- and 27-layer rows"})
    # 3. channels matter least; no gain past 256 (the stand-ins: past 32)
    c128, c256 = "paper-27x128", "paper-27x256"
    if all(v(n) is not None for n in (c128, c256, c512)):
        first, past = v(c128) - v(c256), v(c256) - v(c512)
        effects = {"channels": max(v(c128), v(c256), v(c512)) - min(v(c128), v(c256), v(c512))}
        if v(d15) is not None:
            effects["depth"] = abs(v(d15) - v(d27))
        if all(v(n) is not None for n in names):
            effects["L2"] = max(v(n) for n in names) - min(v(n) for n in names)
        least = min(effects, key=effects.get) == "channels"
        no_gain = past <= noise
        verdict = "holds" if least and no_gain else \
            "within noise" if max(effects.values()) <= noise else \
            "holds in part" if least or no_gain else "does not hold"
        claims.append({
            "claim": f"channels matter least, no gain past {label(c256).split('x')[-1]}",
            "verdict": verdict, "least": least, "no_gain_past": no_gain,
            "detail": f"val CE {label(c128)} {v(c128):.3f}, {label(c256)} {v(c256):.3f}, "
                      f"{label(c512)} {v(c512):.3f}: doubling gains {first:+.3f}, doubling "
                      f"again {past:+.3f} (paper 2.18, 2.15, 2.16: +0.03, -0.01); the range "
                      "each factor spans: " + ", ".join(f"{k} {e:.3f}" for k, e in
                                                        effects.items())})
    else:
        claims.append({"claim": "channels matter least, no gain past 256",
                       "verdict": "not measured", "detail": "needs the three 27-layer rows"})
    for c in claims:
        c["noise"] = seeds_note
    return claims


# --- the document and its figure ------------------------------------------------------------


def render_markdown(result: dict, any_runs: bool = True) -> str:
    """table1.md: both tables, the claims, the figure, throughput and the commands."""
    if not any_runs:
        return "# Table 1 sweep\n\nNo run folders yet.\n"
    rows = result["rows"]
    seeds = sorted({r["seed"] for r in rows})
    epochs = [r["epochs"] for r in rows if r["epochs"] is not None]
    out = ["# Table 1: L2 strength, layers and channels against train and validation CE", ""]
    out.append(f"Measured by `deepsynth sweep table1` on {', '.join(result['devices'])} from the "
               f"store {', '.join(f'`{d}`' for d in result['data'])}: {len(rows)} runs, seeds "
               f"{', '.join(map(str, seeds))}. CE in nats per sample; the paper's figures are "
               "its Table 1 (200 epochs on a GPU).")
    if result["standins"]:
        from deepsynth.model.presets import CPU_CHANNEL_DIVISOR

        out += ["", f"The `cpu-*` rows are CPU stand-ins: the paper's layers and L2 at 1/"
                f"{CPU_CHANNEL_DIVISOR} of its channels (128 -> 16, 256 -> 32, 512 -> 64), "
                "the paper's conditioning (frame CNN -> encoder) with small-paper's frame CNN."]
    ep = f" = {min(epochs):.2f} epochs" if epochs else ""
    out += ["", f"## At equal steps: {result['equal_steps']:,} steps{ep}", "",
            "Train CE: mean over the last tenth of the steps; val CE: best validation within "
            "them (the paper's 100 fixed segments unless the commands say otherwise); train "
            "min: training time, validation excluded.", "", result["table_markdown"]]
    out += [f"## At equal training time: {result['equal_minutes']:.1f} min", "",
            "The time the quickest run took for its steps; each run's figures within that much "
            "training time (val CE: its last validation within it). Runs shared the machine "
            "two at a time, so times are only roughly comparable.", "",
            render_time_table(result)]
    out += ["## The paper's claims", ""]
    for i, c in enumerate(result["claims"], 1):
        out.append(f"{i}. **{c['claim']}**: {c['verdict']}. {c['detail']}.")
    out += ["", f"A difference counts when it exceeds the noise ({result['claims'][0]['noise']})."]
    if epochs and max(epochs) < 1:
        out += ["", f"At {max(epochs):.2f} epochs no run has seen a training segment twice, so "
                "its train CE measures fresh data just as the val CE does (on other songs): "
                "overfitting, which the paper's L2 rows show after 200 epochs, cannot appear at "
                "this scale, and an L2 penalty can only slow the fit."]
    if result.get("notes"):
        out += ["", "## What this shows at this scale", "", "*(" + NOTES_MD + " in the sweep "
                "folder, written by hand from the figures above)*", "", result["notes"].strip()]
    out += ["", "## Validation CE against steps and training time", "", f"![]({TABLE_PNG})", ""]
    thr = [r for r in rows if r["samples_per_s"] is not None]
    if thr:
        out += ["## Throughput", "", "| preset | seed | samples/s | model GFLOP/s | MFU |",
                "|---|---|---|---|---|"]
        out += [f"| {r['preset']} | {r['seed']} | {r['samples_per_s']:,.0f} | "
                f"{_f(None if r['achieved_tflops'] is None else 1e3 * r['achieved_tflops'], 1)}"
                f" | {_pct(r['mfu'])} |" for r in thr]
        out += ["", "Samples/s: scored samples per second of training time (throughput.json in "
                "each run folder, with the FLOPs of a step; MFU when the sweep was given "
                "--peak-tflops)."]
    if result.get("commands"):
        out += ["", "## Commands", "", "```", *result["commands"], "```"]
    return "\n".join(out) + "\n"


def figure(runs: list[dict], path: str | os.PathLike) -> Path:
    """Validation CE against steps and against training minutes, one line per run (one colour
    per preset, one line style per seed)."""
    from deepsynth.evaluate.plots import _figure, _save

    fig = _figure(12, 4.8)
    by_steps, by_time = fig.subplots(1, 2, sharey=True)
    presets = list(dict.fromkeys(r["preset"] for r in runs))
    seeds = sorted({r["seed"] for r in runs})
    styles = ("-", "--", ":", "-.")
    colors = [f"C{i % 10}" for i in range(len(presets))]
    for r in runs:
        vals = _vals(r["rows"])
        if not vals:
            continue
        color = colors[presets.index(r["preset"])]
        style = styles[seeds.index(r["seed"]) % len(styles)]
        label = r["preset"] + (f" seed {r['seed']}" if len(seeds) > 1 else "")
        steps = [v["step"] for v in vals]
        ce = [v["val_ce"] for v in vals]
        by_steps.plot(steps, ce, style, color=color, lw=1.2, label=label)
        by_time.plot([(v.get("time_s") or 0.0) / 60 for v in vals], ce, style, color=color,
                     lw=1.2)
    by_steps.set_xlabel("step")
    by_time.set_xlabel("training minutes (validation excluded)")
    by_steps.set_ylabel("validation CE (nats)")
    for ax in (by_steps, by_time):
        ax.grid(alpha=0.3)
    by_steps.legend(fontsize=8)
    by_steps.set_title("validation CE against steps")
    by_time.set_title("against training time")
    return _save(fig, path)

"""The outputs of bench/compare_serving.py: serving.md (tables), serving.svg (ember's speed
over each peer's, per case) and serving.json (every sample), and the canned results its
--dry-run writes them from. Standard library only.

A result is a dict: "cases" [(model, batch, threads)], "samples" {case: {engine: [sample]}}
(a sample is {"img_per_s", "p50_ms", "p99_ms"}), "calls" {case: {engine: calls}}, "engines"
[ember first, then the peers], "setup" {peer: its set-up line}, "machine" {...}, "notes"
[lines for the header], "parity" [lines] and "rounds", "seconds", "quick", "command".
"""
import datetime
import json
import math
import statistics
from xml.sax.saxutils import escape

from compare import ratio_ticks, spread

NAMES = {"ember": "ember", "onnxruntime": "ONNX Runtime", "openvino": "OpenVINO"}
COLOURS = {"onnxruntime": "#1f77b4", "openvino": "#9c36b5"}


def medians(result, case, engine):
    samples = result["samples"][case][engine]
    return {key: statistics.median(s[key] for s in samples) for key in ("img_per_s", "p50_ms", "p99_ms")}


def faster_peer(result, case, key="img_per_s"):
    """The peer with the best median (highest img/s, or lowest latency) and that median."""
    peers = [e for e in result["engines"] if e != "ember"]
    pick = max if key == "img_per_s" else min
    best = pick(peers, key=lambda e: medians(result, case, e)[key])
    return best, medians(result, case, best)[key]


def markdown(result):
    peers = [e for e in result["engines"] if e != "ember"]
    machine = result["machine"]
    lines = ["# Serving: ember's InferenceSession vs " + " and ".join(NAMES[p] for p in peers), ""]
    if result.get("dry_run"):
        lines += ["**--dry-run: canned numbers, nothing was measured.**", ""]
    elif result["quick"]:
        lines += ["**--quick smoke run: too few, too short rounds for figures to mean anything.**", ""]
    lines += [f"- {result.get('date') or datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}, {machine['cpu']}, "
              f"{machine['cores']} cores; ember kernels {machine['isa']}"]
    lines += [f"- {line}" for line in machine.get("ember_info", [])]
    lines += [f"- {NAMES[p]} {result['setup'][p]['version']}" for p in peers]
    lines += [f"- {line}" for line in result["notes"]]
    lines += [f"- {result['rounds']} interleaved rounds (every case once in every engine per round, the engines' "
              f"order rotating), medians; about {result['seconds']:g} s per measurement; spread = (max - min) / median "
              "of the noisiest engine", f"- `{result['command']}`", ""]
    lines += ["## Throughput (img/s)", "",
              "| model | batch | threads | " + " | ".join(NAMES[e] for e in result["engines"]) +
              " | ember / faster peer | spread |",
              "|---|---:|---:|" + "---:|" * (len(result["engines"]) + 2)]
    for case in result["cases"]:
        cells = [f"{medians(result, case, e)['img_per_s']:.0f}" for e in result["engines"]]
        best, value = faster_peer(result, case)
        noise = max(spread([s["img_per_s"] for s in result["samples"][case][e]]) for e in result["engines"])
        ratio = medians(result, case, "ember")["img_per_s"] / value
        lines.append(f"| {case[0]} | {case[1]} | {case[2]} | " + " | ".join(cells) +
                     f" | {ratio:.2f}× ({NAMES[best]}) | {100 * noise:.0f}% |")
    lines.append("")
    latency_cases = [c for c in result["cases"] if c[1] == 1]
    if latency_cases:
        lines += ["## Latency at batch 1 (ms per call, p50 / p99)", "",
                  "| model | threads | " + " | ".join(NAMES[e] for e in result["engines"]) +
                  " | faster peer p50 / ember p50 |", "|---|---:|" + "---:|" * (len(result["engines"]) + 1)]
        for case in latency_cases:
            cells = [f"{medians(result, case, e)['p50_ms']:.3f} / {medians(result, case, e)['p99_ms']:.3f}"
                     for e in result["engines"]]
            best, value = faster_peer(result, case, "p50_ms")
            ratio = value / medians(result, case, "ember")["p50_ms"]
            lines.append(f"| {case[0]} | {case[2]} | " + " | ".join(cells) + f" | {ratio:.2f}× ({NAMES[best]}) |")
        lines.append("")
    lines += ["Above 1×: ember faster.", ""]
    if result["parity"]:
        lines += ["## Same input, same weights: do the outputs agree?", ""] + [f"- {p}" for p in result["parity"]] + [""]
    return "\n".join(lines)


def svg_chart(result):
    """Per case, one bar per peer on a log scale from the 1x line to ember's img/s over that peer's."""
    peers = [e for e in result["engines"] if e != "ember"]
    bars = [(case, peer, medians(result, case, "ember")["img_per_s"] / medians(result, case, peer)["img_per_s"])
            for case in result["cases"] for peer in peers]
    low = min([0.5] + [r / 1.25 for _, _, r in bars])
    high = max([2.0] + [r * 1.25 for _, _, r in bars])
    first, last = math.floor(math.log2(low)), math.ceil(math.log2(high))
    bar, gap, label_width, plot_width, top, bottom = 11, 6, 150, 560, 64, 34
    group = bar * len(peers) + gap
    height = top + group * len(result["cases"]) + bottom
    width = label_width + plot_width + 70

    def x(ratio):
        return label_width + plot_width * (math.log2(ratio) - first) / (last - first)

    note = " (--dry-run: canned)" if result.get("dry_run") else (" (--quick)" if result["quick"] else "")
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
             'font-family="sans-serif" font-size="11">',
             f'<rect width="{width}" height="{height}" fill="white"/>',
             f'<text x="{width / 2}" y="18" text-anchor="middle" font-size="14">ember / peer serving throughput '
             f'(img/s), median of {result["rounds"]} interleaved rounds{escape(note)}</text>',
             f'<text x="{width / 2}" y="34" text-anchor="middle" fill="#555">right of the line: ember faster; '
             'log scale</text>']
    for i, peer in enumerate(peers):
        left = label_width + i * 160
        parts.append(f'<rect x="{left}" y="44" width="12" height="10" fill="{COLOURS[peer]}"/>')
        parts.append(f'<text x="{left + 16}" y="53">ember / {escape(NAMES[peer])} '
                     f'{escape(result["setup"][peer]["version"].split("-")[0])}</text>')
    parts.extend(ratio_ticks(first, last, x, top, height - bottom))
    previous_model = None
    for index, case in enumerate(result["cases"]):
        y0 = top + index * group
        if case[0] != previous_model and index > 0:
            parts.append(f'<line x1="4" y1="{y0 - gap / 2:.1f}" x2="{width - 4}" y2="{y0 - gap / 2:.1f}" stroke="#999"/>')
        previous_model = case[0]
        label = f"{case[0]} b{case[1]} {case[2]}t"
        parts.append(f'<text x="{label_width - 6}" y="{y0 + group / 2 + 1:.1f}" text-anchor="end">{escape(label)}</text>')
        for i, peer in enumerate(peers):
            ratio = medians(result, case, "ember")["img_per_s"] / medians(result, case, peer)["img_per_s"]
            y = y0 + i * bar
            left, right = sorted((x(1.0), x(ratio)))
            parts.append(f'<rect x="{left:.1f}" y="{y}" width="{max(right - left, 1):.1f}" height="{bar - 1}" '
                         f'fill="{COLOURS[peer]}"><title>{escape(label)}, ember / {escape(NAMES[peer])}: '
                         f'{ratio:.2f}×</title></rect>')
            anchor, at = ("start", right + 4) if ratio >= 1.0 else ("end", left - 4)
            parts.append(f'<text x="{at:.1f}" y="{y + bar - 2}" text-anchor="{anchor}" font-size="9">{ratio:.2f}×</text>')
    one = x(1.0)
    parts.append(f'<line x1="{one:.1f}" y1="{top - 4}" x2="{one:.1f}" y2="{height - bottom}" stroke="black" '
                 'stroke-width="1.5"/>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def json_document(result):
    return {"command": result["command"], "machine": result["machine"], "setup": result["setup"],
            "notes": result["notes"], "parity": result["parity"], "rounds": result["rounds"],
            "seconds": result["seconds"], "quick": result["quick"], "dry_run": bool(result.get("dry_run")),
            "cases": [{"model": c[0], "batch": c[1], "threads": c[2], "calls": result["calls"][c],
                       "samples": result["samples"][c]} for c in result["cases"]]}


def write_all(result, out):
    """Writes serving.{md,svg,json} into `out`; returns their paths."""
    import os
    paths = {kind: os.path.join(out, "serving." + kind) for kind in ("md", "svg", "json")}
    with open(paths["md"], "w") as f:
        f.write(markdown(result))
    with open(paths["svg"], "w") as f:
        f.write(svg_chart(result))
    with open(paths["json"], "w") as f:
        json.dump(json_document(result), f, indent=1)
    return paths


def canned(cases, engines, rounds):
    """Made-up but plausible samples (deterministic), for --dry-run: exercises the writers only."""
    samples, calls = {}, {}
    for n, case in enumerate(cases):
        model, batch, threads = case
        samples[case], calls[case] = {}, {}
        for k, engine in enumerate(engines):
            base = 4000.0 * (0.8 + 0.25 * k) / (1 + 0.1 * n) * (1.0 + 0.8 * (threads - 1)) * (1.0 + math.log2(batch) / 4)
            samples[case][engine] = [{"img_per_s": round(base * (1 + 0.02 * ((r + k) % 3 - 1)), 2),
                                      "p50_ms": round(1e3 * batch / base, 4), "p99_ms": round(1.5e3 * batch / base, 4)}
                                     for r in range(rounds)]
            calls[case][engine] = 100
    return samples, calls

"""Check every zoo entry under ONNX export + ONNX Runtime and OpenVINO against eager PyTorch; write the table.

Writes ``src/segarch/runtimes/runtime_support.json`` (read by ``tests/test_runtime_support.py``) and prints the
Markdown table that the README's "Runtimes" section holds.

Run: ``python scripts/runtime_support.py [--only NAME ...] [--markdown-only]``
"""

from __future__ import annotations

import argparse
import json

import torch

from segarch.runtimes.support import TABLE_FILE, TOLERANCE, check_entry, entries


def markdown(rows: list[dict]) -> str:
    """One line per architecture: its status under ONNX Runtime and OpenVINO in 2D and 3D, and why not."""
    by_name: dict[str, dict[int, dict]] = {}
    for row in rows:
        by_name.setdefault(row["name"], {})[row["dims"]] = row
    lines = ["| architecture | task | ONNX Runtime 2D | 3D | OpenVINO 2D | 3D | why not |",
             "|---|---|---|---|---|---|---|"]
    for name, dims in sorted(by_name.items()):
        ort = [dims[d]["status"] if d in dims else "–" for d in (2, 3)]
        ov = [dims[d].get("openvino", {}).get("status", "?") if d in dims else "–" for d in (2, 3)]
        reasons = {r["reason"] for r in dims.values() if r["status"] != "runs"}
        reasons |= {r["openvino"]["reason"] for r in dims.values() if r.get("openvino", {}).get("status", "runs")
                    != "runs"}
        why = "; ".join(sorted(r.replace("|", "/")[:120] for r in reasons))
        lines.append(f"| {name} | {next(iter(dims.values()))['task']} | {' | '.join(ort)} | {' | '.join(ov)} | {why} |")
    ort_runs = sum(r["status"] == "runs" for r in rows)
    ov_runs = sum(r.get("openvino", {}).get("status") == "runs" for r in rows)
    lines.append(f"\n{len(rows)} (architecture, dims) entries: {ort_runs} run under ONNX Runtime, {ov_runs} under "
                 f"OpenVINO, matching eager PyTorch within {TOLERANCE:g} of the output's scale.")
    return "\n".join(lines)


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="check only these architectures (the table is updated in place)")
    parser.add_argument("--markdown-only", action="store_true", help="print the stored table, check nothing")
    args = parser.parse_args()
    torch.set_num_threads(1)
    stored = json.loads(TABLE_FILE.read_text())["entries"] if TABLE_FILE.exists() else []
    if not args.markdown_only:
        todo = [(n, d) for n, d in entries() if not args.only or n in args.only]
        fresh = {}
        for name, dims in todo:
            row = check_entry(name, dims)
            fresh[(name, dims)] = row
            openvino = row.get("openvino", {}).get("status", "-")
            print(f"{name:<24} {dims}D {row['status']:<10} openvino {openvino:<10} {row['seconds']:>6.1f} s  "
                  f"{row['reason'][:100]}", flush=True)
        kept = {(r["name"], r["dims"]): r for r in stored if (r["name"], r["dims"]) in set(entries())}
        kept.update(fresh)
        stored = [kept[k] for k in entries() if k in kept]
        table = {"about": "zoo entries at the shared tester's sizes under ONNX export + ONNX Runtime vs eager "
                          "PyTorch (scripts/runtime_support.py)", "torch": torch.__version__,
                 "onnxruntime": _version("onnxruntime"), "openvino": _version("openvino"), "entries": stored}
        TABLE_FILE.write_text(json.dumps(table, indent=1) + "\n")
    print(markdown(stored))


if __name__ == "__main__":
    main()

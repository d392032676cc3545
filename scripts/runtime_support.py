"""Check every zoo entry under ONNX export + ONNX Runtime against eager PyTorch; write the table.

Writes ``src/segarch/runtimes/runtime_support.json`` (read by ``tests/test_runtime_support.py``) and prints the
Markdown table that the README's "Runtimes" section holds.

Run: ``python scripts/runtime_support.py [--only NAME ...] [--markdown-only]``
"""

from __future__ import annotations

import argparse
import json

import torch

from segarch.runtimes.support import TABLE_FILE, check_entry, entries


def markdown(rows: list[dict]) -> str:
    by_name: dict[str, dict[int, dict]] = {}
    for row in rows:
        by_name.setdefault(row["name"], {})[row["dims"]] = row
    lines = ["| architecture | task | 2D | 3D | why not |", "|---|---|---|---|---|"]
    for name, dims in sorted(by_name.items()):
        cells = [dims[d]["status"] if d in dims else "–" for d in (2, 3)]
        reasons = sorted({r["reason"].replace("|", "/")[:120] for r in dims.values() if r["status"] != "runs"})
        task = next(iter(dims.values()))["task"]
        lines.append(f"| {name} | {task} | {cells[0]} | {cells[1]} | {'; '.join(reasons)} |")
    runs = sum(r["status"] == "runs" for r in rows)
    lines.append(f"\n{runs} of {len(rows)} (architecture, dims) entries run under ONNX Runtime.")
    return "\n".join(lines)


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
            print(f"{name:<24} {dims}D {row['status']:<10} {row['seconds']:>6.1f} s  {row['reason'][:100]}",
                  flush=True)
        kept = {(r["name"], r["dims"]): r for r in stored if (r["name"], r["dims"]) in set(entries())}
        kept.update(fresh)
        stored = [kept[k] for k in entries() if k in kept]
        table = {"about": "zoo entries at the shared tester's sizes under ONNX export + ONNX Runtime vs eager "
                          "PyTorch (scripts/runtime_support.py)", "torch": torch.__version__,
                 "onnxruntime": __import__("onnxruntime").__version__, "entries": stored}
        TABLE_FILE.write_text(json.dumps(table, indent=1) + "\n")
    print(markdown(stored))


if __name__ == "__main__":
    main()

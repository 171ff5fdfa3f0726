"""Keep each chapter's Jupytext pair (``notebooks/NN-name.md`` + ``.ipynb``) in sync.

    python tools/notebooks.py check   # exit 1 and name every pair that differs
    python tools/notebooks.py sync    # jupytext --sync: the newer file of each pair wins

Edit either file: in JupyterLab (jupytext pairs them on save, see
``notebooks/jupytext.toml``) or the ``.md`` in any editor, then run ``sync``. The
``.ipynb`` is stored without outputs (``make lab`` users: clear outputs before you commit,
or run ``sync`` after editing the ``.md``, which keeps the notebook's cell ids).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def _cells(nb) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source.strip()) for c in nb.cells]


def pair_differences(ipynb: Path) -> list[str]:
    """What differs between a notebook and its ``.md`` twin (empty when in sync).

    Compares the cells' types and sources, in order, as Jupytext reads the two files
    (outputs, execution counts and cell ids are the notebook's own).
    """
    import jupytext

    md = ipynb.with_suffix(".md")
    if not md.exists():
        return [f"{ipynb.name} has no {md.name} (run: jupytext --set-formats ipynb,md:myst {ipynb})"]
    a = _cells(jupytext.read(ipynb))
    b = _cells(jupytext.read(md))
    problems = []
    if len(a) != len(b):
        problems.append(f"{ipynb.name}: {len(a)} cells, {md.name}: {len(b)} cells")
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            first = next((j for j, (p, q) in enumerate(zip(x[1], y[1])) if p != q), min(len(x[1]), len(y[1])))
            problems.append(
                f"cell {i} ({x[0]}/{y[0]}) differs at character {first}: "
                f"ipynb {x[1][first:first + 40]!r} vs md {y[1][first:first + 40]!r}"
            )
            break
    return problems


def unpaired(directory: Path = NOTEBOOKS) -> list[str]:
    """``.md`` chapters without a notebook (a chapter is always a pair)."""
    return [p.name for p in sorted(directory.glob("*.md")) if not p.with_suffix(".ipynb").exists()]


def check(directory: Path = NOTEBOOKS) -> dict[str, list[str]]:
    """Every pair that differs in ``directory``, with what differs."""
    out = {name: ["no paired .ipynb"] for name in unpaired(directory)}
    for nb in sorted(directory.glob("*.ipynb")):
        problems = pair_differences(nb)
        if problems:
            out[nb.name] = problems
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["sync"]:
        files = [str(p) for p in sorted(NOTEBOOKS.glob("*.ipynb"))]
        return subprocess.call([sys.executable, "-m", "jupytext", "--sync", *files])
    if args[:1] in (["check"], []):
        bad = check()
        for name, problems in bad.items():
            print(f"{name}: out of sync: " + "; ".join(problems) + " (run: python tools/notebooks.py sync)")
        return 1 if bad else 0
    print("usage: python tools/notebooks.py [check|sync]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())

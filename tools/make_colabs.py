r"""Writes the Colab notebooks in colabs/ from the cell lists in tools/colab_cells/.

  python tools/make_colabs.py           # (re)write colabs/*.ipynb
  python tools/make_colabs.py --check   # exit 1 if a committed notebook differs from its cells

Edit the cell lists, not the .ipynb files. The notebooks are written without outputs and with
stable cell ids, so regenerating them changes nothing unless a cell did; `tests/test_colabs.py`
checks that and executes every notebook at its tiny size.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import nbformat

TOOLS = pathlib.Path(__file__).resolve().parent
REPO = TOOLS.parent
sys.path.insert(0, str(TOOLS))

from colab_cells import hubert_loop, pretrain_wav2vec2, quickstart, scaling  # noqa: E402

# Notebook name -> its cell list. One explicit entry per notebook.
NOTEBOOKS = {
    "quickstart": quickstart.CELLS,
    "pretrain_wav2vec2": pretrain_wav2vec2.CELLS,
    "hubert_loop": hubert_loop.CELLS,
    "scaling": scaling.CELLS,
}


def build(name: str) -> nbformat.NotebookNode:
  nb = nbformat.v4.new_notebook()
  nb.metadata = {
      "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
      "language_info": {"name": "python"},
      "colab": {"name": f"{name}.ipynb", "provenance": []},
  }
  for index, (kind, source, tags) in enumerate(NOTEBOOKS[name]):
    make = nbformat.v4.new_code_cell if kind == "code" else nbformat.v4.new_markdown_cell
    cell = make(source, id=f"{name[:40]}-{index:02d}")
    if tags:
      cell.metadata["tags"] = list(tags)
    nb.cells.append(cell)
  nbformat.validate(nb)
  return nb


def render(name: str) -> str:
  return nbformat.writes(build(name), version=4) + "\n"


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--out", type=pathlib.Path, default=REPO / "colabs")
  parser.add_argument("--check", action="store_true", help="compare instead of writing")
  args = parser.parse_args(argv)
  stale = []
  for name in NOTEBOOKS:
    path = args.out / f"{name}.ipynb"
    text = render(name)
    if args.check:
      if not path.exists() or path.read_text() != text:
        stale.append(str(path))
    else:
      args.out.mkdir(parents=True, exist_ok=True)
      path.write_text(text)
      print(f"wrote {path} ({len(NOTEBOOKS[name])} cells)")
  if stale:
    print("stale (run python tools/make_colabs.py): " + ", ".join(stale), file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())

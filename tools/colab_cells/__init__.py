"""Cell lists of the Colab notebooks in colabs/, one module per notebook (see make_colabs.py)."""

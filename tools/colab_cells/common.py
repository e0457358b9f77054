"""Cells every notebook starts with: install, the size switch, config loading.

A notebook is a list of `md(...)` / `code(...)` cells; `tools/make_colabs.py` writes it. Cell
sources are dedented, so they can be written as indented triple-quoted strings.
"""

from __future__ import annotations

import textwrap


def md(source: str) -> tuple[str, str, tuple[str, ...]]:
  return ("markdown", textwrap.dedent(source).strip(), ())


def code(source: str, *tags: str) -> tuple[str, str, tuple[str, ...]]:
  return ("code", textwrap.dedent(source).strip(), tuple(tags))


# The same placeholder everywhere; the README says what to put there (a fork's git URL, or a
# local path on a self-hosted runtime).
INSTALL = code("""
    # Install jaxdisco the way a Colab runtime gets it. Where it is already importable (a local
    # checkout after `pip install -e .`), nothing is installed. JAXDISCO_SOURCE: a git URL or a
    # local path of the jaxdisco repository (see the README, "Colab notebooks").
    import os
    import pathlib

    JAXDISCO_SOURCE = os.environ.get("JAXDISCO_SOURCE", "https://github.com/<org>/jaxdisco")
    try:
      import jaxdisco
    except ImportError:
      if not pathlib.Path("jaxdisco-src").exists():
        !git clone -q --depth 1 {JAXDISCO_SOURCE} jaxdisco-src
      %pip install -q ./jaxdisco-src
      import importlib

      importlib.invalidate_caches()  # See the freshly installed package in this process.
      import jaxdisco
    print(f"jaxdisco {jaxdisco.__version__} from {pathlib.Path(jaxdisco.__file__).parent}")
    """)


def size_switch(tiny: str, full: str) -> tuple[str, str, tuple[str, ...]]:
  """The one size switch (tagged `parameters`, papermill style). The test suite sets
  JAXDISCO_COLAB_TINY=1; a person gets the full size by default."""
  return code(
      f"""
      # Size switch (a notebook parameter; set TINY = True for a quick look).
      #   False (default): {full}.
      #   True: {tiny}.
      TINY = os.environ.get("JAXDISCO_COLAB_TINY") == "1"
      print("TINY" if TINY else "full size")
      """,
      "parameters",
  )


LOAD_CONFIG = code("""
    # Configs are Python files in the repository's configs/ (they are not installed with the
    # package): next to the package in a checkout, or in ./jaxdisco-src after the install cell.
    import importlib.util


    def load_config(name):
      \"\"\"configs/<name>.py -> its get_config() (an ml_collections.ConfigDict).\"\"\"
      candidates = [pathlib.Path(jaxdisco.__file__).resolve().parents[1], pathlib.Path("jaxdisco-src")]
      for root in candidates:
        path = root / "configs" / f"{name}.py"
        if path.exists():
          spec = importlib.util.spec_from_file_location(f"configs.{name}", path)
          module = importlib.util.module_from_spec(spec)
          spec.loader.exec_module(module)
          return module.get_config()
      raise FileNotFoundError(
          f"configs/{name}.py not found in {[str(c) for c in candidates]}: clone JAXDISCO_SOURCE "
          "into ./jaxdisco-src"
      )
    """)

SHRINK = code("""
    def shrink(config):
      \"\"\"The smallest model of the same kind (the test suite's size): trains in seconds.\"\"\"
      m = config.model
      m.conv_layers = "[(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32, 2, 2)] * 2"
      m.embed_dim, m.num_layers, m.num_heads, m.ffn_dim = 32, 2, 2, 64
      m.pos_conv_kernel, m.pos_conv_groups = 8, 4
      m.final_dim, m.latent_vars, m.latent_groups, m.latent_dim = 16, 8, 2, 0
      config.data.crop_samples, config.data.min_samples = 16_000, 8_000
      config.data.batch_size = 4
      config.objective.num_negatives = 10
      config.optim.warmup_steps = 2
      config.train.num_steps, config.train.log_every = 6, 1
      config.train.eval_every = config.train.checkpoint_every = 3
      return config
    """)

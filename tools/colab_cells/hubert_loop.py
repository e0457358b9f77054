"""colabs/hubert_loop.ipynb: the HuBERT loop (MFCC k-means -> iteration 1 -> layer k-means ->
iteration 2) on the demo corpus, with the unit-quality table and plots."""

from colab_cells.common import INSTALL, LOAD_CONFIG, SHRINK, code, md, size_switch

CELLS = [
    md("""
        # The HuBERT loop on the demo corpus

        HuBERT learns by predicting cluster ids of masked frames, and gets better targets by
        clustering its own layers:

        1. k-means of 39-d MFCCs (100 Hz) → iteration-1 labels;
        2. train HuBERT iteration 1 on them;
        3. k-means of one of its layers (50 Hz) → iteration-2 labels;
        4. train iteration 2 from scratch on those; cluster its layer too.

        `jaxdisco.train.hubert_loop.run_hubert_loop(config, workdir)` runs all of it, one
        resumable stage per subdirectory, and scores every set of units against the corpus's
        phone alignments (PNMI, phone purity, cluster purity). Full size is
        `configs/hubert_demo.py` (the corpus's extended splits, 26 min of audio; 3000 + 4500
        steps, K = 50; about 28 minutes on 2 CPU cores); `TINY` uses 24 utterances of the
        `train` split, a 32-wide model, 20 steps and K = 8.
        """),
    INSTALL,
    size_switch(
        "24 train utterances, a 32-wide model, 20 steps per iteration, K=8",
        "configs/hubert_demo.py: the extended splits, 3000 + 4500 steps, K=50",
    ),
    LOAD_CONFIG,
    SHRINK,
    code("""
        from jaxdisco.assets import demo_corpus_dir


        def subset_manifest(split, count, path):
          \"\"\"The first `count` utterances of a demo split, as a manifest file at `path`.\"\"\"
          corpus = demo_corpus_dir()
          lines = (corpus / f"{split}.tsv").read_text().splitlines()
          root = str(corpus / lines[0].strip())
          pathlib.Path(path).write_text("\\n".join([root] + lines[1 : count + 1]) + "\\n")
          return os.path.abspath(path)


        config = load_config("hubert_demo")
        if TINY:
          config = shrink(config)
          os.makedirs("runs", exist_ok=True)
          config.data.train_manifest = subset_manifest("train", 24, "runs/train_24.tsv")
          config.data.valid_manifest = subset_manifest("valid", 6, "runs/valid_6.tsv")
          config.data.min_samples = 16_000
          config.optim.warmup_steps = 5
          config.train.eval_every = config.train.checkpoint_every = config.train.log_every = 10
          loop = config.loop
          loop.mfcc_k = loop.layer_k = 8
          loop.layer = 1
          loop.steps = (20, 20)
          loop.kmeans_fraction, loop.kmeans_max_iter, loop.kmeans_n_init = 0.5, 5, 1
        WORKDIR = os.path.abspath("runs/hubert_loop" + ("_tiny" if TINY else ""))
        print(f"K = {config.loop.mfcc_k} (MFCC) / {config.loop.layer_k} (layer "
              f"{config.loop.layer}), steps {tuple(config.loop.steps)}, "
              f"{config.model.num_layers} x {config.model.embed_dim} Transformer")
        """),
    md("""
        ## Run the loop

        Each stage prints its progress and leaves a `done.json` marker; running the cell again
        skips finished stages (and refuses if the config changed what they depend on).
        """),
    code("""
        from jaxdisco.train.hubert_loop import run_hubert_loop

        result = run_hubert_loop(config, WORKDIR)
        print(f"{len(result['stages'])} stages, {result['seconds']:.0f} s")
        """),
    md("""
        ## Unit quality

        One row per set of units and split (also in `units_table.md` / `units_table.json` in
        the workdir). Rows compare fairly only at equal K, which is why the demo config uses
        one K for all stages. PNMI is the share of phone entropy the units explain; phone
        purity, how often a unit's most common phone is right; cluster purity, how often a
        phone's most common unit is right. At `TINY` size the models are barely trained and
        their units carry little.
        """),
    code("""
        from IPython.display import Markdown, display

        display(Markdown(result["table_markdown"]))
        """),
    code("""
        import matplotlib.pyplot as plt
        import numpy as np

        metrics = ("pnmi", "phone_purity", "cluster_purity")
        splits = [s for s in ("train", "valid") if any(r["split"] == s for r in result["table"])]
        fig, axes = plt.subplots(1, len(splits), figsize=(6 * len(splits), 3.4), squeeze=False)
        for ax, split in zip(axes[0], splits):
          rows = [r for r in result["table"] if r["split"] == split]
          x = np.arange(len(metrics))
          for i, row in enumerate(rows):
            ax.bar(x + (i - (len(rows) - 1) / 2) * 0.25, [row["metrics"][m] for m in metrics],
                   width=0.25, label=f"{row['units']} (K={row['k']})")
          ax.set(xticks=x, xticklabels=metrics, ylim=(0, 1), title=f"{split} units vs phones")
          ax.legend(fontsize=8)
        fig.tight_layout()
        plt.show()
        """),
    md("""
        ## Training curves of both iterations

        HuBERT's loss is the cross-entropy of masked frames against the k-means labels;
        accuracy is on masked frames. Chance is 1/K.
        """),
    code("""
        from jaxdisco.train.metrics import read_metrics

        fig, axes = plt.subplots(1, 2, figsize=(12, 3.2))
        for it in (1, 2):
          rows = read_metrics(f"{WORKDIR}/train_it{it}")
          for ax, key in zip(axes, ("loss", "accuracy")):
            for prefix, style in (("", "-"), ("valid_", "o--")):
              points = [(r["step"], r[prefix + key]) for r in rows if prefix + key in r]
              if points:
                ax.plot(*zip(*points), style, label=f"iteration {it} {prefix[:-1] or 'train'}")
        for ax, key in zip(axes, ("loss", "masked accuracy")):
          ax.set(title=key, xlabel="step")
          ax.grid(alpha=0.3)
          ax.legend(fontsize=8)
        fig.tight_layout()
        plt.show()
        """),
    md("""
        ## Which phones do the units stand for?

        p(phone | unit) of the validation frames for the MFCC units and the last model's
        units, drawn by the loop's k-means stages: units grouped by their most likely phone,
        so units that each stand for one phone show as a sharp block diagonal.
        """),
    code("""
        from IPython.display import Image

        for stage in ("kmeans_mfcc", "kmeans_it2" if config.loop.evaluate_iteration2 else "kmeans_it1"):
          plot = pathlib.Path(WORKDIR) / stage / "cooccurrence_valid.png"
          print(plot)
          display(Image(filename=str(plot)))
        """),
]

"""colabs/pretrain_wav2vec2.ipynb: pretrain wav2vec 2.0 on the demo corpus, plot its curves."""

from colab_cells.common import INSTALL, LOAD_CONFIG, SHRINK, code, md, size_switch

CELLS = [
    md("""
        # Pretrain a small wav2vec 2.0 on the demo corpus

        The README's first command, from Python: `configs/demo.py` (conv encoder, pre-LN
        Transformer, gumbel product quantizer, contrastive + diversity loss) trained with
        `jaxdisco.train.pretrain.train_and_evaluate(config, workdir)` on the 144-utterance
        corpus shipped inside the package. At full size this is the README's 2000-step run
        (about 4 minutes on 2 CPU cores); `TINY` is a 6-step
        smoke run of a 2-layer, 32-wide model.
        """),
    INSTALL,
    size_switch("6 steps of a 32-wide model (seconds)", "the README's demo run, 2000 steps"),
    LOAD_CONFIG,
    SHRINK,
    md("""
        ## The config

        An `ml_collections.ConfigDict`: every field is documented in
        `jaxdisco/methods/run_defaults.py` and the method modules and can be changed here before training, exactly like
        `--config.field=value` on the command line.
        """),
    code("""
        config = load_config("demo")
        if TINY:
          config = shrink(config)
        WORKDIR = os.path.abspath("runs/wav2vec2_demo" + ("_tiny" if TINY else ""))
        m = config.model
        print(f"model: {m.num_layers} x {m.embed_dim} Transformer, codebook "
              f"{m.latent_groups} x {m.latent_vars}; batch {config.data.batch_size} x "
              f"{config.data.crop_samples} samples; {config.train.num_steps} steps")
        print(f"train manifest: {config.data.train_manifest}")
        """),
    md("""
        ## Train

        Prints the parameter layout, then one line per `train.log_every` steps and the
        validation metrics every `train.eval_every` steps. The workdir holds checkpoints,
        `metrics.jsonl`, TensorBoard events and `curves.png`. Running this cell again resumes
        from the latest checkpoint (a finished run returns at once); a workdir written with a
        different model config is refused with the mismatched fields named.
        """),
    code("""
        from jaxdisco.train.pretrain import train_and_evaluate

        summary = train_and_evaluate(config, WORKDIR)
        print({k: round(v, 4) for k, v in summary["metrics"].items()})
        """),
    md("""
        ## Curves from `metrics.jsonl`

        One JSON object per logged step; validation rows carry `valid_`-prefixed keys. The
        contrastive loss starts at about ln(1 + negatives) (chance: the true quantized frame
        among the distractors); the total loss adds the weighted diversity loss and feature
        penalty. A code perplexity far below the codebook size would mean collapse.
        """),
    code("""
        import math

        import matplotlib.pyplot as plt
        from jaxdisco.train.metrics import read_metrics

        rows = read_metrics(WORKDIR)
        chance = math.log(1 + config.objective.num_negatives)
        panels = [("contrastive_loss", "contrastive loss per masked frame"),
                  ("accuracy", "contrastive accuracy"),
                  ("code_perplexity", f"code perplexity (of {m.latent_groups * m.latent_vars})")]
        fig, axes = plt.subplots(1, len(panels), figsize=(13, 3.2))
        axes[0].axhline(chance, color="gray", ls=":", label="chance: ln(1 + negatives)")
        for ax, (key, title) in zip(axes, panels):
          for prefix, style in (("", "-"), ("valid_", "o--")):
            points = [(r["step"], r[prefix + key]) for r in rows if prefix + key in r]
            if points:
              ax.plot(*zip(*points), style, label="valid" if prefix else "train")
          ax.set(title=title, xlabel="step")
          ax.grid(alpha=0.3)
          ax.legend()
        fig.tight_layout()
        plt.show()

        train_losses = [r["loss"] for r in rows if "loss" in r]
        valid_rows = [r for r in rows if "valid_loss" in r]
        valid_losses = [r["valid_loss"] for r in valid_rows]
        print(f"{len(train_losses)} logged train steps: total loss {train_losses[0]:.3f} -> "
              f"{train_losses[-1]:.3f}, valid {valid_losses[-1]:.3f}; valid contrastive loss "
              f"{valid_rows[-1]['valid_contrastive_loss']:.3f} against chance {chance:.3f}")
        assert all(math.isfinite(x) for x in train_losses + valid_losses), "non-finite loss"
        """),
    md("""
        ## Use the trained model

        `jaxdisco.load_pretrained` reads a workdir (or a Hugging Face directory) and returns a
        frozen backbone: waveform in, 50 Hz hidden states out. Below, every hidden state of a
        validation utterance.
        """),
    code("""
        import numpy as np
        from jaxdisco.data.audio import read_audio
        from jaxdisco.data.manifest import read_manifest
        from jaxdisco.data.pipeline import normalize_waveform

        model = jaxdisco.load_pretrained(WORKDIR)
        valid = read_manifest(config.data.valid_manifest)
        wav = read_audio(valid.audio_path(0))
        if config.data.normalize:
          wav = normalize_waveform(wav)
        out = model.extract_features(wav)
        hidden = [np.asarray(h[0]) for h in out["hidden_states"]]  # L + 1 x [frames, dim]
        print(f"{valid.utterance_id(0)}: {len(wav) / 16000:.2f} s -> {hidden[-1].shape[0]} "
              f"frames x {hidden[-1].shape[1]} dims, {len(hidden)} hidden states")
        fig, axes = plt.subplots(len(hidden), 1, figsize=(12, 1.6 * len(hidden)), sharex=True)
        for i, (ax, h) in enumerate(zip(axes, hidden)):
          ax.imshow(h.T, aspect="auto", origin="lower", cmap="magma")
          ax.set_ylabel(f"layer {i}")
        axes[-1].set_xlabel("frame (20 ms)")
        fig.tight_layout()
        plt.show()
        """),
]

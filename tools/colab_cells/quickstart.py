"""colabs/quickstart.ipynb: a tokenizer (loaded, or built here), a demo clip tokenized, its
units drawn over the waveform and the spectrogram."""

from colab_cells.common import INSTALL, LOAD_CONFIG, SHRINK, code, md, size_switch

CELLS = [
    md("""
        # Quickstart: speech in, discrete units out

        A jaxdisco tokenizer is a directory (`tokenizer.json`, weights, StableHLO programs)
        that turns 16 kHz audio into unit ids at 50 Hz. This notebook loads one, tokenizes a
        clip of the demo corpus shipped with the package, and draws the units over the
        waveform and the spectrogram next to the phone alignment.

        Without a tokenizer directory it builds one first: pretrain wav2vec 2.0 on the demo
        corpus, k-means one Transformer layer, export.
        """),
    INSTALL,
    size_switch(
        "a 6-step 32-wide model and K=8 (seconds, units are noise)",
        "the README's 2000-step demo model (about 4 min on 2 CPU cores) and K=50",
    ),
    code("""
        # A tokenizer directory to load (written by jaxdisco.export.tokenizer.export_tokenizer);
        # empty: build one below.
        TOKENIZER_DIR = ""
        """),
    LOAD_CONFIG,
    SHRINK,
    md("""
        ## Build a tokenizer (skipped when `TOKENIZER_DIR` is set)

        1. Pretrain (`train_and_evaluate`; the same workdir as `pretrain_wav2vec2.ipynb`, so
           a finished run there is reused).
        2. Dump one layer's features of every train utterance
           (`jaxdisco.clustering.features`) and fit k-means in JAX
           (`jaxdisco.clustering.kmeans.fit_kmeans`).
        3. Export encoder + centroids as a tokenizer
           (`jaxdisco.export.tokenizer.export_tokenizer`).
        """),
    code("""
        import numpy as np
        from jaxdisco.clustering import features as features_lib
        from jaxdisco.clustering import kmeans as kmeans_lib
        from jaxdisco.export.tokenizer import export_tokenizer
        from jaxdisco.train.pretrain import train_and_evaluate

        if not TOKENIZER_DIR:
          config = shrink(load_config("demo")) if TINY else load_config("demo")
          workdir = os.path.abspath("runs/wav2vec2_demo" + ("_tiny" if TINY else ""))
          train_and_evaluate(config, workdir)
          model = jaxdisco.load_pretrained(workdir)
          layer = config.model.num_layers // 2 + 1  # Upper middle (here: the last of 2 layers).
          dump = features_lib.dump_layer_features(
              model, config.data.train_manifest, layer, workdir + f"/features_layer{layer}",
              normalize=config.data.normalize)
          features, _ = features_lib.load_layer_features(dump)
          frames = np.concatenate(features)
          k = 8 if TINY else 50
          print(f"k-means K={k} on {frames.shape[0]} frames x {frames.shape[1]} (layer {layer})")
          fit = kmeans_lib.fit_kmeans(
              frames, kmeans_lib.KMeans(k=k, batch_size=10_000, n_init=2, max_iter=20, seed=0))
          TOKENIZER_DIR = export_tokenizer(
              workdir, workdir + "/tokenizer", layer=layer, centroids=fit.centroids,
              units="kmeans")
        """),
    md("""
        ## Load the tokenizer and tokenize a clip

        `Tokenizer.load` checks every file against the sha256 in `tokenizer.json`. `encode`
        takes a waveform, a file path, or a list of them; `deduplicate=True` merges repeats
        into (units, durations in frames).
        """),
    code("""
        from jaxdisco.assets import demo_corpus_dir
        from jaxdisco.data.audio import read_audio
        from jaxdisco.data.manifest import read_manifest
        from jaxdisco.tokenizer import Tokenizer

        tokenizer = Tokenizer.load(TOKENIZER_DIR)
        print(f"{tokenizer.manifest['units']} units, vocabulary {tokenizer.vocab_size}, "
              f"{tokenizer.frame_rate:g} frames/s, layer {tokenizer.manifest['layer']}")

        corpus = demo_corpus_dir()
        valid = read_manifest(corpus / "valid.tsv")
        clip_id, clip_path = valid.utterance_id(0), valid.audio_path(0)
        wav = read_audio(clip_path)
        ids = tokenizer.encode(wav)
        units, durations = tokenizer.encode(clip_path, deduplicate=True)
        print(f"{clip_id}: {len(wav) / tokenizer.sample_rate:.2f} s -> {len(ids)} frames, "
              f"{len(units)} units after merging repeats")
        print("ids:  ", " ".join(map(str, ids[:40])), "...")
        print("units:", " ".join(map(str, units[:20])), "...")
        assert np.array_equal(np.repeat(units, durations), ids)
        """),
    md("""
        ## Units over the waveform and the spectrogram

        Each run of equal ids is one coloured segment, labelled with its unit id; the bottom
        row is the corpus's phone alignment (espeak-ng's phoneme events).
        """),
    code("""
        import librosa
        import librosa.display
        import matplotlib.pyplot as plt
        from jaxdisco.evaluation.units import read_alignments

        sr, hop = tokenizer.sample_rate, tokenizer.sample_rate / tokenizer.frame_rate
        phones = read_alignments(corpus / "valid.align.jsonl")[clip_id]
        starts = np.concatenate([[0], np.cumsum(durations)[:-1]]) * hop / sr
        ends = np.cumsum(durations) * hop / sr
        colors = plt.get_cmap("tab20")

        fig, (ax_wav, ax_spec, ax_phone) = plt.subplots(
            3, 1, figsize=(14, 7), sharex=True, gridspec_kw={"height_ratios": [2, 3, 0.6]})
        t = np.arange(len(wav)) / sr
        ax_wav.plot(t, wav, lw=0.5, color="black")
        for unit, a, b in zip(units, starts, ends):
          ax_wav.axvspan(a, b, color=colors(unit % 20), alpha=0.35, lw=0)
          if b - a >= 0.03:  # Label segments wide enough to read.
            ax_wav.text((a + b) / 2, 0.9 * np.abs(wav).max(), str(unit), ha="center", fontsize=7)
        ax_wav.set(title=f"{clip_id}: {len(units)} units", ylabel="amplitude")

        mel = librosa.feature.melspectrogram(y=wav, sr=sr, n_fft=400, hop_length=160, n_mels=64)
        librosa.display.specshow(librosa.power_to_db(mel, ref=np.max), sr=sr, hop_length=160,
                                 x_axis="time", y_axis="mel", ax=ax_spec)
        for a in starts[1:]:
          ax_spec.axvline(a, color="white", lw=0.6, alpha=0.7)
        ax_spec.set(title="log-mel spectrogram with unit boundaries", xlabel="")

        for phone, a, b in phones:
          ax_phone.axvspan(a, b, color="lightgray" if phone == "sil" else "lightsteelblue",
                           ec="white")
          ax_phone.text((a + b) / 2, 0.5, phone, ha="center", va="center", fontsize=7)
        ax_phone.set(yticks=[], xlabel="time (s)", ylabel="phones")
        fig.tight_layout()
        plt.show()
        """),
    md("""
        ## How phone-like are the units?

        Frame-level agreement with the phone alignments of the 16 validation utterances
        (`jaxdisco.evaluation.units`): PNMI is the share of phone entropy the units explain
        (0: none, 1: all); phone purity is how often a unit's most common phone is right.
        """),
    code("""
        from jaxdisco.evaluation import units as units_lib

        all_ids = tokenizer.encode([valid.audio_path(i) for i in range(len(valid))], batch_size=16)
        valid_ids = [valid.utterance_id(i) for i in range(len(valid))]
        phone_frames, unit_frames, stats = units_lib.pair_frames(
            read_alignments(corpus / "valid.align.jsonl"), all_ids, valid_ids,
            frame_rate=tokenizer.frame_rate)
        quality = units_lib.unit_quality(phone_frames, unit_frames)
        print(f"valid: {stats['frames']} frames, PNMI {quality['pnmi']:.3f}, phone purity "
              f"{quality['phone_purity']:.3f}, cluster purity {quality['cluster_purity']:.3f}")
        """),
]

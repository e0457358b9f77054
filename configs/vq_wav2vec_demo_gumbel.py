r"""vq-wav2vec, gumbel quantizer, on the shipped demo corpus: ~9 min on 2 busy CPUs.

  jaxdisco pretrain --config configs/vq_wav2vec_demo_gumbel.py --workdir vq-gumbel-demo

`configs/vq_wav2vec_gumbel.py` (depth-2 logit projection, shared codebook, hard
straight-through, no diversity penalty) at the demo size of
`jaxdisco.methods.vq_wav2vec.vq_wav2vec_demo`, which says what differs from the recipe
and why. One more difference: the temperature decays 0.99 per update instead of 0.999995, so
it reaches 0.5 after ~140 of the 1500 updates (the recipe's: after 277k of 400k; at its rate a
demo run would end at 1.99). The hard forward codes do not depend on the temperature, but the
straight-through gradient is the soft sample's, flat at temperature 2; presumably the logits
then grow too slowly for the codes to stop being mostly gumbel noise. Measured: with decay
0.998 and no penalty, train accuracy stayed at chance (0.094-0.096) for 150 updates while the
temperature fell to 1.52; with decay 0.99 it left chance once the temperature was below ~0.6
(valid accuracy 0.40 after 300 updates). A diversity penalty (objective.quantizer_weight 0.002,
the wav2vec 2.0 demo's strength) kept more codes in use but, at decay 0.998 or 0.99, the
accuracy at chance for 300 updates, so it is off, as in the recipe.
The codes export as a tokenizer:

  jaxdisco export-tokenizer --workdir vq-gumbel-demo --out vq-gumbel-tok --units vq_wav2vec
For a 30-second smoke run add `--config.train.num_steps=50`.
"""

from jaxdisco.methods.vq_wav2vec import vq_wav2vec_defaults, vq_wav2vec_demo


def get_config():
  c = vq_wav2vec_defaults()
  vq_wav2vec_demo(c)
  c.objective.gumbel_temperature = (2.0, 0.5, 0.99)
  c.train.num_steps = 1500
  return c

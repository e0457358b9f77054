"""Which tensor `hidden_states[L]` of a pre-LN model is: the two `transformers` conventions.

A backbone returns L + 1 hidden states (see `transformer.TransformerEncoder`); entry i >= 1 is
the output of layer i - 1. For post-LN models every convention agrees. For pre-LN models the
last layer's output still has the encoder's final LayerNorm to go, and releases differ:
  * "transformers5" (the default, and the backbone's own): entry L is taken before the final
    LayerNorm, as transformers >= 5 records it and as fairseq returns a requested layer;
  * "transformers4": entry L is the encoder output after the final LayerNorm
    (= last_hidden_state), as transformers 4.x records it.
k-means centroids and the tokenizer that assigns them must read the same one: feature dumps,
centroid metadata and tokenizer.json record it.
"""

from __future__ import annotations

HIDDEN_STATES_CONVENTIONS = ("transformers5", "transformers4")
DEFAULT_HIDDEN_STATES_CONVENTION = "transformers5"


def check_hidden_states_convention(convention: str) -> str:
  """Returns `convention`; raises ValueError naming the known ones if it is not one."""
  if convention not in HIDDEN_STATES_CONVENTIONS:
    raise ValueError(
        f"hidden_states_convention: expected one of {HIDDEN_STATES_CONVENTIONS}, got "
        f"{convention!r}"
    )
  return convention


def hidden_states_in_convention(
    hidden_states, last_hidden_state, convention: str, num_layers: int
) -> tuple:
  """A backbone's `hidden_states` (its own convention, "transformers5") in `convention`, for a
  model of `num_layers` layers. Only a run through all the layers has an entry L to replace;
  for post-LN models entry L already is `last_hidden_state`."""
  hidden = tuple(hidden_states)
  if check_hidden_states_convention(convention) == "transformers4":
    if len(hidden) == num_layers + 1:
      hidden = hidden[:-1] + (last_hidden_state,)
  return hidden

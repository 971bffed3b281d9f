"""An embedding is one class overriding the hooks of minifope/embedding.py: the model needs no
change to train with a new one (README, "Adding a position embedding")."""

import numpy as np

from helpers import batch, tiny_config
from minifope import GPT, config
from minifope.embedding import PositionEmbedding
from minifope.gradcheck import numerical_gradient


class Doubled(PositionEmbedding):
    """A toy: no position at all, the token embeddings doubled (so its backward matters)."""

    def embed(self, x, positions):
        return 2.0 * x

    def embed_backward(self, dx):
        return 2.0 * dx


def test_a_new_embedding_in_one_class_trains_with_correct_gradients(monkeypatch):
    monkeypatch.setitem(config.EMBEDDINGS, "doubled", Doubled)
    monkeypatch.setattr(config, "POSITION_EMBEDDINGS", tuple(config.EMBEDDINGS))
    cfg = tiny_config(pe="doubled")
    model, nope = GPT(cfg), GPT(tiny_config(pe="nope"))
    idx, targets = batch(cfg, T=6)
    # the same weights as NoPE, with wte doubled, give NoPE's logits exactly
    nope.params["wte"] = 2.0 * model.params["wte"]
    np.testing.assert_allclose(model.forward(idx)[0], nope.forward(idx)[0], rtol=1e-12)
    model.forward(idx, targets)
    grads = {name: g.copy() for name, g in model.backward().items()}
    for name in ("wte", "blocks.0.attn.wqkv", "lm_head"):
        p = model.params[name]
        for i in [(1, 2), (0, 3)]:
            numeric = numerical_gradient(lambda: model.forward(idx, targets)[1], p, i, eps=1e-5)
            assert abs(numeric - grads[name][i]) <= 1e-6 * max(1.0, abs(numeric)), (name, i)

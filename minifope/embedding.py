"""What a position embedding may do to the GPT: the hooks model.py calls, each a no-op here.

A position embedding is a class in its own module (rope.py, fope.py, alibi.py, nope.py,
sinusoidal.py) that overrides the hooks it needs; config.py lists the classes by the name
GPTConfig.pe takes. The GPT (model.py) calls, in order:

    x = wte[idx]                        (B,T,C)
    x = pe.embed(x, positions)          absolute embeddings act here (sinusoidal)
    for each block l:
        COS, SIN = pe.tables(weights_l, positions)   rotary embeddings (RoPE, FoPE) rotate
                                                     q and k by these tables
        attention adds -slope_h * (m - n) to the scores when pe.slopes is not None (ALiBi)

and in the backward, in reverse:

    pe.table_grads(dCOS, dSIN, positions)   gradients of the block's own weights (learnable
                                            FoPE), from those of its tables
    dx = pe.embed_backward(dx)              before the token embedding's backward

weights_l holds the arrays pe.init_block drew for block l, by the names of block_shapes
(stored in the GPT as blocks.{l}.<name>: parameters if pe.learnable, buffers otherwise).

To add an embedding: subclass PositionEmbedding in a module of its own, override the hooks
it needs (with the backward of each forward beside it), add it to config.EMBEDDINGS, and
give the torch path its twin in minifope/torch/.
"""


class PositionEmbedding:
    """The embedding that does nothing: every hook leaves the model as it is (see NoPE)."""

    slopes = None       # (H,) ALiBi's slopes, or None: no bias on the scores
    learnable = False   # whether the block weights are trained (params) or fixed (buffers)

    def __init__(self, config):
        self.config = config

    def block_shapes(self):
        """{name: shape} of the weights every block holds for this embedding."""
        return {}

    def init_block(self, rng):
        """{name: float64 array} of one block's weights, drawn from rng (one call per block,
        in block order)."""
        return {}

    def embed(self, x, positions):
        # x (B,T,C) the token embeddings, positions (T,) -> (B,T,C) what the first block reads
        return x

    def embed_backward(self, dx):
        # dx (B,T,C) gradient of embed's output -> gradient of its input x (embed is linear in x)
        return dx

    def tables(self, weights, positions):
        """COS, SIN for positions (T,): (T,d/2) or (H,T,d/2) in float64, or (None, None)
        for no rotation; weights: this block's arrays by the names of block_shapes."""
        return None, None

    def table_grads(self, dcos, dsin, positions):
        """{name: gradient} of this block's learnable weights, from the tables' gradients."""
        return {}

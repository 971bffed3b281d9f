"""The GPT: an OLMo-style pre-norm decoder with hand-written backward.

    x = wte[idx]
    for each block:  x = x + attn(rmsnorm(x));  x = x + swiglu(rmsnorm(x))
    logits = rmsnorm(x) @ lm_head

No biases, untied embedding and head. The position embedding is config.embedding(), an
object of its own module (rope.py, fope.py, alibi.py, nope.py, sinusoidal.py) whose hooks
(embedding.py) this model calls: on the token embeddings (sinusoidal), on queries and keys
(RoPE, FoPE) or on the scores (ALiBi). The model itself has no branch on config.pe.

Parameter names (the keys of `params` and `grads`), each (shape):
    wte (V,C)
    blocks.{l}.norm1 (C,)   blocks.{l}.attn.wqkv (C,3C)   blocks.{l}.attn.wo (C,C)
    blocks.{l}.norm2 (C,)   blocks.{l}.mlp.w_in (C,2F)    blocks.{l}.mlp.w_out (F,C)
    blocks.{l}.<name> for each name of the embedding's block_shapes(): FoPE's
        blocks.{l}.fope.ccos, blocks.{l}.fope.csin (H,F_w,J), with fope_learnable
    norm_f (C,)   lm_head (C,V)
An embedding's block weights that are not learnable (FoPE's by default) live in `buffers`
under the same names.
"""

import dataclasses
import math

import numpy as np

from .attention import self_attention_forward, self_attention_backward
from .config import GPTConfig
from .layers import (IGNORE_INDEX, cross_entropy_forward, cross_entropy_backward, embedding_forward,
                     embedding_backward, linear_forward, linear_backward, rmsnorm_forward,
                     rmsnorm_backward, swiglu_forward, swiglu_backward)
from .parallel import map_parts, parts_for, split

PE_STREAM = 1  # the second word of the seed of the embedding's own weights, [seed, PE_STREAM]
MIN_PART_TOKENS = 512  # with micro_batches None, a batch is split only into parts this big


class KVCache:
    """Keys and values of the positions seen so far, one (k, v) per block, each (B,H,T,d).

    Pass the same KVCache to successive `GPT.forward` calls to decode incrementally:
    each call appends its positions, and queries attend to everything cached.
    """

    def __init__(self, n_layer):
        self.layers = [None] * n_layer

    @property
    def length(self):
        return 0 if self.layers[0] is None else self.layers[0][0].shape[-2]

    def crop(self, max_len):
        """Keep only the last max_len positions (a sliding attention window)."""
        if self.length > max_len:
            self.layers = [(k[..., -max_len:, :], v[..., -max_len:, :]) for k, v in self.layers]


class GPT:
    def __init__(self, config: GPTConfig):
        config.validate()
        self.config = config
        self.dtype = np.dtype(config.dtype)
        self.pe = config.embedding()
        rng = np.random.default_rng(config.seed)
        # the embedding's weights (FoPE's coefficients) come from a stream of their own, so that
        # one seed gives every embedding the same initial value of every parameter they share
        pe_rng = np.random.default_rng([config.seed, PE_STREAM])
        C, V, L = config.d_model, config.vocab_size, config.n_layer
        std, out_std = config.init_std, config.init_std / math.sqrt(2 * L)

        def normal(shape, s):
            # drawn in float64 so float32 and float64 models start from the same numbers
            return (s * rng.standard_normal(shape)).astype(self.dtype)

        params, buffers = {}, {}
        params["wte"] = normal((V, C), std)
        for l in range(L):
            p = f"blocks.{l}."
            params[p + "norm1"] = np.ones(C, dtype=self.dtype)
            params[p + "attn.wqkv"] = normal((C, 3 * C), std)
            params[p + "attn.wo"] = normal((C, C), out_std)
            params[p + "norm2"] = np.ones(C, dtype=self.dtype)
            params[p + "mlp.w_in"] = normal((C, 2 * config.hidden_dim), std)
            params[p + "mlp.w_out"] = normal((config.hidden_dim, C), out_std)
            store = params if self.pe.learnable else buffers
            store.update({p + name: w.astype(self.dtype) for name, w in self.pe.init_block(pe_rng).items()})
        params["norm_f"] = np.ones(C, dtype=self.dtype)
        params["lm_head"] = normal((C, V), std)
        self.params, self.buffers = params, buffers
        self.grads = {name: np.zeros_like(value) for name, value in params.items()}
        self.slopes = self.pe.slopes  # ALiBi's, passed to attention; None for the others
        self.micro_batches = None  # forward's parts of a batch; None: one per thread (parallel.py),
        # each of at least MIN_PART_TOKENS tokens
        self._cache = None
        self._part_grads = []  # gradients of micro-batches 1, 2, ..., summed into grads

    @staticmethod
    def param_shapes(config: GPTConfig):
        """({name: shape} of the parameters, {name: shape} of the buffers) a GPT(config) holds.

        The shapes listed at the top of this module, computed without allocating a weight
        (only FoPE's frequency set, at most MAX_FOPE_DIM / 2 floats), so that the checkpoint
        loader can check a file against its config before reading it.
        """
        config.validate()
        C, V, F = config.d_model, config.vocab_size, config.hidden_dim
        pe = config.embedding()
        params, buffers = {"wte": (V, C)}, {}
        for l in range(config.n_layer):
            p = f"blocks.{l}."
            params.update({p + "norm1": (C,), p + "attn.wqkv": (C, 3 * C), p + "attn.wo": (C, C),
                           p + "norm2": (C,), p + "mlp.w_in": (C, 2 * F), p + "mlp.w_out": (F, C)})
            store = params if pe.learnable else buffers
            store.update({p + name: shape for name, shape in pe.block_shapes().items()})
        params.update({"norm_f": (C,), "lm_head": (C, V)})
        return params, buffers

    def with_config(self, **changes):
        """A GPT that shares this one's parameters and buffers under a changed config.

        For evaluating the same weights another way: RoPE scaling past the training length
        (rope_scaling, rope_scale), another attention path (attn_impl, attn_chunk). Changes
        that alter a parameter's shape are refused.
        """
        other = GPT(dataclasses.replace(self.config, **changes))
        for mine, theirs in ((self.params, other.params), (self.buffers, other.buffers)):
            if mine.keys() != theirs.keys() or any(mine[n].shape != theirs[n].shape for n in mine):
                raise ValueError(f"with_config({changes}) changes the parameters' shapes")
        other.params, other.buffers = self.params, self.buffers
        other.grads = {name: np.zeros_like(p) for name, p in other.params.items()}
        other.micro_batches = self.micro_batches
        return other

    def num_params(self):
        return sum(p.size for p in self.params.values())

    def coefficient(self, name):
        """An embedding's block weight (a FoPE coefficient tensor), learnable (params) or fixed (buffers)."""
        return self.params[name] if name in self.params else self.buffers[name]

    def rotary_tables(self, l, positions):
        """COS, SIN for block l at `positions`: (T,d/2) for RoPE, (H,T,d/2) for FoPE, None otherwise."""
        weights = {name: self.coefficient(f"blocks.{l}.{name}") for name in self.pe.block_shapes()}
        cos, sin = self.pe.tables(weights, positions)
        if cos is None:
            return None, None
        return cos.astype(self.dtype), sin.astype(self.dtype)

    def _check_tokens(self, name, a, allow_ignore=False):
        a = np.asarray(a)
        if a.ndim != 2 or not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"{name} must be a 2-D integer array (B, T), got shape {a.shape} "
                             f"of {a.dtype}")
        low = -1 if allow_ignore else 0
        if a.size and (a.min() < low or a.max() >= self.config.vocab_size):
            raise ValueError(f"{name} holds values outside [{low}, {self.config.vocab_size})")
        return a

    def forward(self, idx, targets=None, pos_offset=0, kv_cache=None):
        """idx (B,T) ints -> (logits (B,T,V), loss float or None without targets).

        Positions run from pos_offset (plus what kv_cache already holds). With a KVCache the
        call appends to it and cannot be followed by backward(). The rows are computed in
        self.micro_batches parts at once on threads (None: one part per thread, of at least
        MIN_PART_TOKENS tokens each; see parallel.py); the loss is the mean over all counted
        targets either way.
        """
        idx = self._check_tokens("idx", idx)
        if targets is not None:
            targets = self._check_tokens("targets", targets, allow_ignore=True)
            if targets.shape != idx.shape:
                raise ValueError(f"targets shape {targets.shape} differs from idx shape {idx.shape}")
        T = idx.shape[1]
        start = pos_offset + (kv_cache.length if kv_cache is not None else 0)
        positions = start + np.arange(T)
        tables = [self.rotary_tables(l, positions) for l in range(self.config.n_layer)]
        self._cache = None
        if kv_cache is not None:
            logits, loss, _ = self._forward_rows(idx, targets, positions, tables, kv_cache)
            return logits, loss

        # micro-batch i: n_i counted targets, mean loss L_i;  L = sum_i (n_i / n) L_i
        parts = split(len(idx), self.micro_batches or parts_for(idx.size, MIN_PART_TOKENS))
        rows = map_parts(lambda part: self._forward_rows(
            idx[part[0]:part[1]], None if targets is None else targets[part[0]:part[1]], positions,
            tables),
            parts)
        logits = rows[0][0] if len(rows) == 1 else np.concatenate([r[0] for r in rows])
        if targets is None:
            return logits, None
        counts = [int((targets[a:b] != IGNORE_INDEX).sum()) for a, b in parts]
        weights = [c / max(sum(counts), 1) for c in counts]
        loss = float(sum(w * r[1] for w, r in zip(weights, rows)))
        self._cache = ([r[2] for r in rows], weights, positions)
        return logits, loss

    def _forward_rows(self, idx, targets, positions, tables, kv_cache=None):
        # idx, targets (B,T) -> logits (B,T,V), loss (mean over counted targets) or None, cache
        cfg, P = self.config, self.params
        x, emb_cache = embedding_forward(idx, P["wte"])
        x = self.pe.embed(x, positions)
        block_caches = []
        for l in range(cfg.n_layer):
            x, caches = self._block_forward(l, x, tables[l], kv_cache)
            if targets is not None:  # kept for backward; without targets each layer's goes now
                block_caches.append(caches)
        h, nf = rmsnorm_forward(x, P["norm_f"])
        logits, head = linear_forward(h, P["lm_head"])
        if targets is None:
            return logits, None, None
        loss, ce = cross_entropy_forward(logits, targets)
        return logits, loss, (emb_cache, block_caches, nf, head, ce)

    def _block_forward(self, l, x, tables, kv_cache=None):
        # x (B,T,C), tables = (cos, sin) of block l -> x (B,T,C):  x + attn(rmsnorm(x)), then + swiglu(rmsnorm(x))
        cfg, P, p = self.config, self.params, f"blocks.{l}."
        cos, sin = tables
        h, n1 = rmsnorm_forward(x, P[p + "norm1"])
        past = kv_cache.layers[l] if kv_cache is not None else None
        a, attn = self_attention_forward(h, P[p + "attn.wqkv"], P[p + "attn.wo"], cfg.n_head,
                                         cos, sin, self.slopes, past, cfg.attn_impl, cfg.attn_chunk)
        if kv_cache is not None:
            kv_cache.layers[l] = attn["present"]
        x = x + a
        h, n2 = rmsnorm_forward(x, P[p + "norm2"])
        m, mlp = swiglu_forward(h, P[p + "mlp.w_in"], P[p + "mlp.w_out"])
        return x + m, (n1, attn, n2, mlp)

    def attention_inputs(self, idx, layer, pos_offset=0):
        """What block `layer` attends with, for idx (B,T): a dict of (B,H,T,d) arrays.

        q, k, v: the projections before the position embedding; q_rot, k_rot: after it
        (equal to q, k for alibi and nope); cos, sin: the tables used (None without rotation).
        For looking inside a trained model (spectra, attention maps); not for training.
        """
        if not 0 <= layer < self.config.n_layer:
            raise ValueError(f"layer must lie in [0, {self.config.n_layer}), got {layer}")
        for l, inputs in enumerate(self.each_layers_attention_inputs(idx, pos_offset)):
            if l == layer:
                return inputs

    def each_layers_attention_inputs(self, idx, pos_offset=0):
        """attention_inputs(idx, l) for l = 0, 1, ..., yielded in turn from one forward pass
        (where calling attention_inputs for every layer would redo the earlier layers)."""
        idx = self._check_tokens("idx", idx)
        positions = pos_offset + np.arange(idx.shape[1])
        x, _ = embedding_forward(idx, self.params["wte"])
        x = self.pe.embed(x, positions)
        for l in range(self.config.n_layer):
            x, (_, attn, _, _) = self._block_forward(l, x, self.rotary_tables(l, positions))
            k_rot, v = attn["present"]
            yield dict(q=attn["q"], k=attn["k"], v=v, q_rot=attn["q_rot"], k_rot=k_rot,
                       cos=attn["cos"], sin=attn["sin"])

    def backward(self):
        """Fill self.grads with d loss / d param for the last forward that had targets."""
        if self._cache is None:
            raise RuntimeError("backward() needs a forward(idx, targets) without kv_cache first")
        caches, weights, positions = self._cache
        # g = sum_i (n_i / n) g_i: micro-batch i's backward starts from dL/dL_i = n_i / n
        while len(self._part_grads) < len(caches) - 1:
            self._part_grads.append({name: np.zeros_like(g) for name, g in self.grads.items()})
        grads = [self.grads] + self._part_grads[:len(caches) - 1]
        map_parts(lambda part: self._backward_rows(*part, positions),
                  list(zip(caches, weights, grads)))
        for part in grads[1:]:
            for name, g in self.grads.items():
                g += part[name]
        return self.grads

    def _backward_rows(self, cache, dloss, G, positions):
        # the gradients of dloss * (one forward's mean loss), written into the dict G
        cfg = self.config
        emb_cache, block_caches, nf, head, ce = cache
        learn_tables = self.pe.learnable  # the tables depend on trained weights (learnable FoPE)

        (dlogits,) = cross_entropy_backward(dloss, ce)
        dh, G["lm_head"][...] = linear_backward(dlogits, head)
        dx, G["norm_f"][...] = rmsnorm_backward(dh, nf)
        for l in reversed(range(cfg.n_layer)):
            p = f"blocks.{l}."
            n1, attn, n2, mlp = block_caches[l]
            dh, G[p + "mlp.w_in"][...], G[p + "mlp.w_out"][...] = swiglu_backward(dx, mlp)
            dres, G[p + "norm2"][...] = rmsnorm_backward(dh, n2)
            dx += dres  # x feeds both the residual and the MLP branch
            dh, G[p + "attn.wqkv"][...], G[p + "attn.wo"][...], dcos, dsin = \
                self_attention_backward(dx, attn, table_grads=learn_tables)
            for name, g in self.pe.table_grads(dcos, dsin, positions).items():
                G[p + name][...] = g
            dres, G[p + "norm1"][...] = rmsnorm_backward(dh, n1)
            dx += dres
        (G["wte"][...],) = embedding_backward(self.pe.embed_backward(dx), emb_cache)

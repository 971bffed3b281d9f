"""The GPT of minifope/model.py as a torch.nn.Module, parameter for parameter.

    x = wte[idx]   (then the position embedding's embed: sinusoidal)
    for each block:  x = x + attn(rmsnorm(x));  x = x + swiglu(rmsnorm(x))
    logits = rmsnorm(x) @ lm_head

Same parameter names, shapes and layout as the NumPy GPT (weights are (in, out), y = x @ W),
so `state_dict()` holds exactly the NumPy GPT's params and buffers:
    wte (V,C)
    blocks.{l}.norm1 (C,)   blocks.{l}.attn.wqkv (C,3C)   blocks.{l}.attn.wo (C,C)
    blocks.{l}.norm2 (C,)   blocks.{l}.mlp.w_in (C,2F)    blocks.{l}.mlp.w_out (F,C)
    blocks.{l}.fope.ccos, blocks.{l}.fope.csin (H,F_w,J)  with pe='fope'
    norm_f (C,)   lm_head (C,V)
The position embedding is one module per model, EMBEDDINGS[config.pe], whose hooks
(torch/embedding.py) the model calls, as the NumPy GPT calls the NumPy one's. RoPE's
frequencies, ALiBi's slopes and the sinusoidal frequencies are buffers outside the
state_dict (they follow from the config).

Attention is torch.nn.functional.scaled_dot_product_attention, scale 1/sqrt(d): causal
(is_causal=True, which lets a GPU take the flash or memory-efficient kernel) for rope,
fope and nope; ALiBi passes its bias as a float mask (1,H,Tq,Tk), the causal mask folded in. With
a key/value cache the queries are the last Tq of Tk positions, so the mask is built
explicitly (none is needed for a single query, which sees every cached key).
"""

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import IGNORE_INDEX, RMSNORM_EPS
from ..model import GPT as NumpyGPT
from .alibi import ALiBi
from .fope import FoPEBlocks
from .nope import NoPE
from .rope import RoPE
from .sinusoidal import Sinusoidal

# GPTConfig.pe -> the torch twin of config.EMBEDDINGS[pe]
EMBEDDINGS = {"rope": RoPE, "fope": FoPEBlocks, "alibi": ALiBi, "nope": NoPE, "sinusoidal": Sinusoidal}


def rmsnorm(x, g, eps=RMSNORM_EPS):
    # x (..., C), g (C,) -> g * x / sqrt(mean(x^2) + eps)
    return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps) * g


class SwiGLU(nn.Module):
    # x (..., C) -> (silu(x W_gate) * (x W_up)) W_out,  w_in (C, 2F) = [W_gate | W_up]
    def __init__(self, C, hidden, dtype):
        super().__init__()
        self.w_in = nn.Parameter(torch.empty(C, 2 * hidden, dtype=dtype))
        self.w_out = nn.Parameter(torch.empty(hidden, C, dtype=dtype))

    def forward(self, x):
        gate, up = (x @ self.w_in).chunk(2, dim=-1)
        return (F.silu(gate) * up) @ self.w_out


class Attention(nn.Module):
    # x (B,T,C) -> (B,T,C); wqkv (C,3C) = [q | k | v], heads split as reshape(B,T,H,d)
    def __init__(self, C, n_head, dtype):
        super().__init__()
        self.n_head = n_head
        self.wqkv = nn.Parameter(torch.empty(C, 3 * C, dtype=dtype))
        self.wo = nn.Parameter(torch.empty(C, C, dtype=dtype))

    def forward(self, x, positions, rotary=None, mask=None, past=None):
        # rotary: (q, k, positions) -> (q', k') (RoPE, FoPE) or None; mask: ALiBi's (1,H,Tq,Tk) or
        # None; past: cached (k, v)
        # -> out (B,T,C), present = (k, v) (B,H,Tp+T,d), k already rotated
        B, T, C = x.shape
        H = self.n_head
        q, k, v = ((x @ self.wqkv).split(C, dim=-1))
        q, k, v = (t.view(B, T, H, C // H).transpose(1, 2) for t in (q, k, v))
        if rotary is not None:
            q, k = rotary(q, k, positions)
        q_start = 0
        if past is not None:
            q_start = past[0].shape[-2]
            k, v = torch.cat([past[0], k], dim=-2), torch.cat([past[1], v], dim=-2)
        is_causal = mask is None and q_start == 0
        if mask is None and q_start and T > 1:
            rows = q_start + torch.arange(T, device=x.device)
            mask = torch.arange(k.shape[-2], device=x.device)[None, :] <= rows[:, None]
        if mask is not None and mask.dtype != torch.bool:
            mask = mask.to(q.dtype)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal)
        return y.transpose(1, 2).reshape(B, T, C) @ self.wo, (k, v)


class Block(nn.Module):
    def __init__(self, config, dtype, pe):
        super().__init__()
        C = config.d_model
        self.norm1 = nn.Parameter(torch.empty(C, dtype=dtype))
        self.attn = Attention(C, config.n_head, dtype)
        self.norm2 = nn.Parameter(torch.empty(C, dtype=dtype))
        self.mlp = SwiGLU(C, config.hidden_dim, dtype)
        own = pe.block_module()  # what the embedding keeps in each block (FoPE's coefficients)
        if own is not None:
            self.add_module(*own)

    def forward(self, x, positions, rotary=None, mask=None, past=None):
        a, present = self.attn(rmsnorm(x, self.norm1), positions, rotary, mask, past)
        x = x + a
        return x + self.mlp(rmsnorm(x, self.norm2)), present


class GPT(nn.Module):
    """The torch GPT. GPT(config) starts from the weights the NumPy GPT(config) draws;
    GPT(config, source=numpy_gpt) copies source's parameters and buffers (see to_torch)."""

    def __init__(self, config, source=None):
        super().__init__()
        config.validate()
        self.config = config
        dtype = getattr(torch, config.dtype)
        C, V = config.d_model, config.vocab_size
        self.wte = nn.Parameter(torch.empty(V, C, dtype=dtype))
        self.pe = EMBEDDINGS[config.pe].from_config(config)
        self.blocks = nn.ModuleList(Block(config, dtype, self.pe) for _ in range(config.n_layer))
        self.norm_f = nn.Parameter(torch.empty(C, dtype=dtype))
        self.lm_head = nn.Parameter(torch.empty(C, V, dtype=dtype))
        self.load_numpy(source if source is not None else NumpyGPT(config))

    @torch.no_grad()
    def load_numpy(self, model):
        """Copy a NumPy GPT's params and buffers (same names) into this module, cast to its dtype."""
        arrays = {**model.params, **model.buffers}
        state = self.state_dict()
        if arrays.keys() != state.keys():
            raise ValueError(f"the NumPy GPT's tensors {sorted(arrays)} differ from {sorted(state)}")
        for name, t in state.items():
            if tuple(arrays[name].shape) != tuple(t.shape):
                raise ValueError(f"{name}: NumPy shape {arrays[name].shape}, torch shape {tuple(t.shape)}")
            t.copy_(torch.from_numpy(arrays[name]))

    def num_params(self):
        return sum(p.numel() for p in self.parameters())

    def forward(self, idx, targets=None, pos_offset=0, kv_cache=None):
        """idx (B,T) int64 -> (logits (B,T,V), loss (0-d tensor) or None without targets).

        Positions run from pos_offset (plus what kv_cache already holds). kv_cache is a
        minifope.model.KVCache: each call appends its keys and values (torch tensors).
        loss is the mean cross-entropy over targets != -1, as in the NumPy GPT.
        """
        if idx.ndim != 2 or idx.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"idx must be a 2-D integer tensor (B, T), got shape {tuple(idx.shape)} "
                             f"of {idx.dtype}")
        T = idx.shape[1]
        past_len = kv_cache.length if kv_cache is not None else 0
        start = pos_offset + past_len
        positions = torch.arange(start, start + T, device=idx.device)
        k_idx = torch.arange(past_len + T, device=idx.device)  # query i sits at key index past_len + i
        mask = self.pe.mask(k_idx[past_len:], k_idx)  # ALiBi's bias, None for the others
        if mask is not None:
            mask = mask.to(self.wte.dtype)
        x = self.pe.embed(F.embedding(idx, self.wte), positions)
        for l, block in enumerate(self.blocks):
            rotary = self.pe.rotary(block)
            past = kv_cache.layers[l] if kv_cache is not None else None
            x, present = block(x, positions, rotary, mask, past)
            if kv_cache is not None:
                kv_cache.layers[l] = present
        logits = rmsnorm(x, self.norm_f) @ self.lm_head
        loss = None
        if targets is not None:
            loss = cross_entropy(logits, targets)
        return logits, loss


def cross_entropy(logits, targets):
    # logits (B,T,V), targets (B,T) with -1 for no loss -> mean over counted positions
    # (0 when none counts, as on the NumPy side, where F.cross_entropy's mean would be nan)
    total = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX,
                            reduction="sum")
    return total / (targets != IGNORE_INDEX).sum().clamp(min=1)

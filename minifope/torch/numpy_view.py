"""A torch GPT seen as the NumPy GPT: NumPy in, NumPy out, for the NumPy evaluation code.

minifope.lengthgen.loss_by_length calls model.forward(windows); minifope.passkey and
minifope.sample.generate call model.forward(idx, pos_offset=..., kv_cache=KVCache(...)) and
read model.config. NumpyView(module) answers those calls: it moves idx to the module's
device, runs the torch GPT without gradients, and returns the logits as a NumPy array and
the loss as a float. The key/value cache is real: the KVCache that generate creates holds
torch tensors on the device, so decoding costs one position per step, as on the NumPy side.

    view = NumpyView(module)
    loss_by_length(view, data, lengths);  passkey_accuracy(view, tokenizer, ...)
"""

import contextlib

import numpy as np
import torch

from .convert import unwrap


def numpy_logits(logits):
    # float64 stays float64; float32, and bfloat16 from autocast, become float32
    logits = logits.detach()
    return (logits if logits.dtype == torch.float64 else logits.float()).cpu().numpy()


class NumpyView:
    def __init__(self, module, autocast_dtype=None):
        """module: a minifope.torch.GPT (or DDP / torch.compile around one). autocast_dtype:
        e.g. torch.bfloat16 to evaluate under autocast on a GPU; None runs in the weights' dtype."""
        self.module = unwrap(module)
        self.autocast_dtype = autocast_dtype

    @property
    def config(self):
        return self.module.config

    def num_params(self):
        return self.module.num_params()

    def _tokens(self, name, a, low):
        a = np.asarray(a)
        if a.ndim != 2 or not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"{name} must be a 2-D integer array (B, T), got shape {a.shape} of {a.dtype}")
        if a.size and (a.min() < low or a.max() >= self.config.vocab_size):
            raise ValueError(f"{name} holds values outside [{low}, {self.config.vocab_size})")
        return torch.as_tensor(a, dtype=torch.int64, device=self.module.wte.device)

    def forward(self, idx, targets=None, pos_offset=0, kv_cache=None):
        """idx (B,T) ints -> (logits (B,T,V) NumPy array, loss float or None)."""
        idx = self._tokens("idx", idx, 0)
        if targets is not None:
            targets = self._tokens("targets", targets, -1)
        device = idx.device.type
        amp = (torch.autocast(device, dtype=self.autocast_dtype) if self.autocast_dtype
               else contextlib.nullcontext())
        with torch.no_grad(), amp:
            logits, loss = self.module(idx, targets, pos_offset, kv_cache)
        return numpy_logits(logits), None if loss is None else float(loss)

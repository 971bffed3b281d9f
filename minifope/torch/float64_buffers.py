"""Buffers that stay float64 when the model around them is cast to another dtype.

RoPE's and FoPE's frequencies and ALiBi's slopes are float64 on the NumPy side, and the
angles w * m are computed in float64 so that large positions keep their precision.
`model.float()`, `model.to(torch.bfloat16)` and the like cast every floating buffer; a
module derived from Float64Buffers lets its float64 buffers follow the device only.
"""

import torch
from torch import nn


class Float64Buffers(nn.Module):
    def _apply(self, fn, recurse=True):
        exact = {name: b for name, b in self._buffers.items()
                 if b is not None and b.dtype == torch.float64}
        super()._apply(fn, recurse)
        for name, b in exact.items():
            self._buffers[name] = b.to(self._buffers[name].device)
        return self

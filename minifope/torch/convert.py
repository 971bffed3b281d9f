"""NumPy GPT <-> torch GPT, with the same parameters and buffers under the same names.

    to_torch(model, device=None, dtype=None) -> minifope.torch.GPT
    from_torch(module, into=None) -> minifope.GPT

A round trip NumPy -> torch -> NumPy in the same dtype gives back identical arrays.
"""

import dataclasses

import torch

from ..model import GPT as NumpyGPT
from .model import GPT

NUMPY_DTYPES = {torch.float32: "float32", torch.float64: "float64"}


def _dtype_name(dtype):
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    if dtype not in NUMPY_DTYPES:
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype!r} "
                         "(train in bfloat16 with autocast on float32 weights)")
    return NUMPY_DTYPES[dtype]


def to_torch(model, device=None, dtype=None):
    """A torch GPT holding `model`'s parameters and buffers, on `device`, in `dtype`
    (float32 or float64; None keeps the model's dtype)."""
    config = model.config
    if dtype is not None:
        config = dataclasses.replace(config, dtype=_dtype_name(dtype))
    module = GPT(config, source=model)
    return module if device is None else module.to(device)


def unwrap(module):
    """The GPT inside DistributedDataParallel (.module) and torch.compile (._orig_mod)."""
    while not isinstance(module, GPT):
        inner = getattr(module, "module", None) or getattr(module, "_orig_mod", None)
        if inner is None:
            raise TypeError(f"expected a minifope.torch.GPT, got {type(module).__name__}")
        module = inner
    return module


def from_torch(module, into=None):
    """A NumPy GPT holding the torch module's parameters and buffers.

    The NumPy dtype is the module's (float32 for bfloat16 or float16 weights). `into`: a
    NumPy GPT of the same config to copy into instead of building one (the trainer keeps
    one, so a checkpoint does not redraw a fresh init every time).
    """
    module = unwrap(module)
    dtype = NUMPY_DTYPES.get(module.wte.dtype, "float32")
    config = dataclasses.replace(module.config, dtype=dtype)
    model = into if into is not None else NumpyGPT(config)
    if model.config.to_dict() != config.to_dict():
        raise ValueError("from_torch(into=...) needs a NumPy GPT of the module's config")
    state = module.state_dict()
    for store in (model.params, model.buffers):
        for name in store:
            store[name][...] = state[name].detach().to("cpu", getattr(torch, dtype)).numpy()
    return model

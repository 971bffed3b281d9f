"""Training utilities: the AdamW optimiser, global gradient-norm clipping, and the
warmup + cosine learning-rate schedule. All NumPy; parameters are updated in place.
"""

import math

import numpy as np

from .errors import UserError


def no_decay_below_2d(name, param):
    """The default `no_decay` rule: exempt tensors with ndim < 2 (norm scales)."""
    return param.ndim < 2


class AdamW:
    """Adam with decoupled weight decay (Loshchilov & Hutter, 2019), PyTorch's convention.

    With g the gradient and t the step count (1 on the first step), each `step` does

        m     = b1 m + (1 - b1) g
        v     = b2 v + (1 - b2) g^2
        m_hat = m / (1 - b1^t)
        v_hat = v / (1 - b2^t)
        p     = p - lr * wd * p                          (decayed tensors only)
        p     = p - lr * m_hat / (sqrt(v_hat) + eps)

    Order, as in torch.optim.AdamW: the decay comes first and uses the same lr as the
    Adam step, so a schedule scales both. The decay never enters m or v; that is what
    "decoupled" means (L2 regularisation would add wd * p to g instead).

    params    name -> array, updated in place (the model holds these arrays)
    no_decay  no_decay(name, param) -> True to exempt that tensor from weight decay;
              None means `no_decay_below_2d` (decay only tensors with ndim >= 2)

    m and v have the parameters' dtype, as in PyTorch.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1,
                 no_decay=None):
        b1, b2 = betas
        if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
            raise ValueError(f"betas must lie in [0, 1), got {betas!r}")
        self.params = params
        self.lr = lr
        self.betas = (b1, b2)
        self.eps = eps
        self.weight_decay = weight_decay
        exempt = no_decay_below_2d if no_decay is None else no_decay
        self.decayed = {name for name, p in params.items() if not exempt(name, p)}
        self.m = {name: np.zeros_like(p) for name, p in params.items()}
        self.v = {name: np.zeros_like(p) for name, p in params.items()}
        self.t = 0

    def step(self, grads, lr=None):
        """Apply one update from `grads` (name -> array); lr=None uses the constructor's lr."""
        lr = self.lr if lr is None else lr
        b1, b2 = self.betas
        self.t += 1
        bc1 = 1.0 - b1 ** self.t
        bc2 = 1.0 - b2 ** self.t
        for name, p in self.params.items():
            g, m, v = grads[name], self.m[name], self.v[name]
            m *= b1
            m += (1.0 - b1) * g                             # m = b1 m + (1-b1) g
            v *= b2
            v += (1.0 - b2) * (g * g)                       # v = b2 v + (1-b2) g^2
            if name in self.decayed:
                p *= 1.0 - lr * self.weight_decay           # p = p - lr wd p
            denom = np.sqrt(v / bc2)                        # sqrt(v_hat)
            denom += self.eps
            p -= (lr / bc1) * m / denom         # p = p - lr m_hat / (sqrt(v_hat) + eps)

    def state_dict(self):
        """The state, copied, as plain arrays for np.savez: 't' (0-d int64), 'm.<name>', 'v.<name>'.

        The hyperparameters are not included; they come from the training config.
        """
        state = {"t": np.array(self.t, dtype=np.int64)}
        for name in self.params:
            state["m." + name] = self.m[name].copy()
            state["v." + name] = self.v[name].copy()
        return state

    def load_state_dict(self, state):
        """Restore from what `state_dict` returned (a dict, or the NpzFile np.load gives back).

        Raises UserError, before changing anything, if a key is missing or unexpected or an
        array has the wrong shape or dtype.
        """
        arrays = {key: np.asarray(state[key]) for key in state.keys()}
        expected = {"t"} | {f"{k}.{name}" for name in self.params for k in ("m", "v")}
        missing = sorted(expected - arrays.keys())
        if missing:
            raise UserError(f"optimizer state is missing {len(missing)} entries, e.g. "
                            f"{', '.join(missing[:3])}; was it saved for a different model?")
        unexpected = sorted(arrays.keys() - expected)
        if unexpected:
            raise UserError(f"optimizer state has {len(unexpected)} unexpected entries, e.g. "
                            f"{', '.join(unexpected[:3])}; was it saved for a different model?")
        t = arrays["t"]
        if t.shape != () or t.dtype.kind not in "iu" or t < 0:
            raise UserError(f"optimizer state 't' must be a 0-d integer >= 0, "
                            f"got shape {t.shape}, dtype {t.dtype}")
        for name, p in self.params.items():
            for key in ("m." + name, "v." + name):
                a = arrays[key]
                if a.shape != p.shape or a.dtype != p.dtype:
                    raise UserError(f"optimizer state '{key}' is {a.shape} {a.dtype}, "
                                    f"but the parameter is {p.shape} {p.dtype}")
        for name in self.params:
            np.copyto(self.m[name], arrays["m." + name])
            np.copyto(self.v[name], arrays["v." + name])
        self.t = int(t)


def clip_grad_norm(grads, max_norm):
    """Scale all gradients in place so that their global L2 norm is at most max_norm.

        norm = sqrt(sum over tensors of sum(g^2))
        g    = g * max_norm / norm          when norm > max_norm

    Returns the norm before clipping. max_norm None or <= 0 disables the scaling.
    A non-finite norm is returned without touching the gradients: scaling by
    max_norm / inf would zero the finite entries and hide the blow-up from the caller.
    """
    # squares in float64: in float32 they overflow at |g| > 1.8e19, and clipping is for blow-ups
    norm = math.sqrt(sum(float(np.square(g, dtype=np.float64).sum()) for g in grads.values()))
    if max_norm is not None and max_norm > 0 and math.isfinite(norm) and norm > max_norm:
        scale = max_norm / norm
        for g in grads.values():
            g *= scale
    return norm


def lr_schedule(step, max_lr, warmup_steps, total_steps, min_lr=0.0):
    """The learning rate at `step` (counted from 0): linear warmup, then cosine decay.

        step < W:        lr = max_lr * (step + 1) / W
        W <= step < T:   lr = min_lr + (max_lr - min_lr) * (1 + cos(pi * (step - W) / (T - W))) / 2
        step >= T:       lr = min_lr

    with W = warmup_steps, T = total_steps. Step 0 gets max_lr / W (never 0, so the first
    step moves the weights) and step W - 1 reaches max_lr; the cosine starts at max_lr at
    step W, so max_lr is used twice. W = 0 means no warmup.
    """
    if warmup_steps < 0 or total_steps < warmup_steps:
        raise ValueError(f"need 0 <= warmup_steps <= total_steps, "
                         f"got warmup_steps={warmup_steps}, total_steps={total_steps}")
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    if step >= total_steps:
        return float(min_lr)
    progress = (step - warmup_steps) / (total_steps - warmup_steps)
    return min_lr + (max_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))

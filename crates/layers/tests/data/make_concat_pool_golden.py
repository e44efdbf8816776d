"""Golden values for GlobalAvgMaxPool (fastai's AdaptiveConcatPool2d(1)) from PyTorch.

Run: python crates/layers/tests/data/make_concat_pool_golden.py  (needs torch, safetensors)
Writes concat_pool.safetensors beside this script: x, y, dy, dx (float32, computed in float64).
The input has a tie inside one plane to pin down where the gradient of a tied maximum goes.
"""
import pathlib

import torch
from safetensors.torch import save_file

torch.manual_seed(7)
x = torch.randn(2, 3, 4, 5, dtype=torch.float64)
x[0, 1, 1, 2] = x[0, 1, 3, 4] = x[0, 1].abs().max() + 1.0  # tie: the first one gets the gradient
x.requires_grad_(True)
y = torch.cat([torch.nn.AdaptiveMaxPool2d(1)(x), torch.nn.AdaptiveAvgPool2d(1)(x)], dim=1)
dy = torch.randn_like(y)
y.backward(dy)
out = {k: v.detach().float().contiguous() for k, v in {"x": x, "y": y, "dy": dy, "dx": x.grad}.items()}
save_file(out, str(pathlib.Path(__file__).with_name("concat_pool.safetensors")),
          metadata={"torch": torch.__version__, "op": "cat([adaptive_max_pool2d(x,1), adaptive_avg_pool2d(x,1)], 1)"})
print({k: tuple(v.shape) for k, v in out.items()})

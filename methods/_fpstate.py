"""Reading full-precision weights from a file (SLB's ``init_from``): a harness checkpoint, a
deployed.pt or a plain state dict, never executing what it holds."""
from __future__ import annotations

import torch

from harness.errors import UserError, require


def load_fp_state(path: str) -> dict[str, torch.Tensor]:
    """Float weights by parameter name from a harness checkpoint, a deployed.pt or a state dict."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)  # never runs code
    except Exception as e:  # any unreadable file is the user's to fix
        raise UserError("method.init_from", f"cannot read {path!r} ({type(e).__name__}); "
                        "pass a checkpoint.pt or a saved state dict") from None
    if isinstance(blob, dict) and isinstance(blob.get("model"), dict):
        blob = blob["model"]
    elif isinstance(blob, dict) and isinstance(blob.get("state_dict"), dict):
        blob = blob["state_dict"]
    elif isinstance(blob, dict) and isinstance(blob.get("layers"), dict):
        blob = {f"{k}.weight": v["weight"] for k, v in blob["layers"].items() if "weight" in v}
    require(isinstance(blob, dict), "method.init_from",
            f"{path!r} holds no state dict; pass a checkpoint.pt or a saved state dict")
    return {k: v for k, v in blob.items() if torch.is_tensor(v)}

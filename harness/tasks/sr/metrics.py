"""Super-resolution image operations: MATLAB-style bicubic resizing, PSNR and SSIM on Y.

Conventions, and where they come from (the SR literature since SRCNN/VDSR, the EDSR code and
BasicSR follow them; facts recalled, the sources themselves not available offline):

- Degradation: the LR image is MATLAB's ``imresize(HR, 1/s, 'bicubic')`` saved as 8-bit
  (rounded), after cropping HR to a multiple of s ("mod-crop"). :func:`imresize` reproduces
  imresize: Keys' cubic kernel with a = -0.5, widened by s when shrinking (antialiasing),
  output pixel u = x/s + (1 - 1/s)/2 in 1-based input coordinates, kernel weights normalised
  to sum 1, and MATLAB's symmetric border (index 0 reads pixel 1, index -1 reads pixel 2).
  Checked here against the hand-computed x2 kernel and against PIL's bicubic (same kernel) on
  interior pixels; not checked against MATLAB itself (not available offline). Measured on
  the stand-in test set (harness/tasks/sr/data.py), the bicubic floor (downscale, 8 bits, upscale)
  at x2/x3/x4 is 31.644/29.336/28.017 dB here, 31.639/29.334/28.015 with PIL's bicubic (same
  kernel, borders truncated), 31.811/29.459/28.127 with torch's antialiased bicubic (a =
  -0.75) and 31.951/27.968/26.820 with torch's default (no antialiasing): PSNR from a torch
  degradation is not comparable with published tables; this module is what the harness uses
  everywhere.
- PSNR: on the luma Y of ITU-R BT.601 as MATLAB's rgb2ycbcr computes it,
  Y = 16 + 65.481 R + 128.553 G + 24.966 B for R, G, B in [0, 1] (Y in [16, 235]), from the
  8-bit (rounded) output, with ``s`` pixels cropped from every border, peak 255:
  PSNR = 10 log10(255^2 / MSE). A test set's PSNR is the mean of its images' PSNRs.
- SSIM: Wang et al. 2004 on the same cropped Y: 11x11 Gaussian window (sigma 1.5), K1 = 0.01,
  K2 = 0.03, L = 255, the mean over the window positions that fit inside the image (as the
  authors' ssim_index.m, and as skimage's structural_similarity with gaussian_weights=True,
  sigma=1.5, use_sample_covariance=False, data_range=255).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

Y_COEFFS = (65.481, 128.553, 24.966)  # BT.601, MATLAB rgb2ycbcr, RGB in [0, 1]
Y_OFFSET = 16.0
SSIM_WINDOW, SSIM_SIGMA, SSIM_K1, SSIM_K2 = 11, 1.5, 0.01, 0.03
PEAK = 255.0


# --------------------------------------------------------------------------- bicubic resize

def cubic(x: torch.Tensor) -> torch.Tensor:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's 'bicubic')."""
    ax = x.abs()
    ax2, ax3 = ax * ax, ax * ax * ax
    near = (1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2))
    return near + far


def resize_weights(in_len: int, out_len: int, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """MATLAB imresize's taps along one axis for this ``scale`` (out/in): (source indices
    [out_len, taps] (0-based, border already mirrored), float64 weights [out_len, taps])."""
    width = 4.0 / scale if scale < 1 else 4.0
    x = torch.arange(1, out_len + 1, dtype=torch.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = torch.floor(u - width / 2)
    taps = int(math.ceil(width)) + 2
    idx = left[:, None] + torch.arange(taps, dtype=torch.float64)[None, :]   # 1-based
    dist = u[:, None] - idx
    w = scale * cubic(dist * scale) if scale < 1 else cubic(dist)
    w = w / w.sum(dim=1, keepdim=True)
    # MATLAB's symmetric border: aux = [1..L, L..1], index i -> aux(mod(i - 1, 2L) + 1)
    period = 2 * in_len
    k = torch.remainder(idx.long() - 1, period)
    return torch.where(k < in_len, k, period - 1 - k), w


def resize_matrix(in_len: int, out_len: int, scale: float) -> torch.Tensor:
    """The same as a dense [out_len, in_len] matrix M, out = M @ in (for inspection)."""
    src, w = resize_weights(in_len, out_len, scale)
    return torch.zeros(out_len, in_len, dtype=torch.float64).scatter_add_(1, src, w)


def _shrink_axis(x: torch.Tensor, dim: int, out_len: int, factor: int) -> torch.Tensor:
    """:func:`_resize_axis` for scale 1/factor: every output pixel then has the same taps
    (one kernel), so the axis is mirrored (MATLAB's border) and filtered with stride
    ``factor``, without materialising taps x the output."""
    in_len = x.shape[dim]
    src, w = resize_weights(in_len, out_len, 1.0 / factor)
    taps = src.shape[1]
    n_pad = factor * (out_len - 1) + taps                 # input positions the outputs read
    # padded[0] is the first tap of output 1: u(1) = factor + (1 - factor) / 2, minus half
    # the kernel width (2 factor); every position is mirrored into [0, in_len) as MATLAB does
    pos = math.floor(factor + 0.5 * (1 - factor) - 2.0 * factor) + torch.arange(n_pad)
    period = 2 * in_len
    k = torch.remainder(pos - 1, period)
    idx = torch.where(k < in_len, k, period - 1 - k).to(x.device)
    xt = x.index_select(dim, idx).movedim(dim, -1)
    lead = xt.shape[:-1]
    out = torch.nn.functional.conv1d(xt.reshape(-1, 1, n_pad),
                                     w[0].to(x.device, x.dtype).view(1, 1, taps), stride=factor)
    return out.view(*lead, out_len).movedim(-1, dim)


def _resize_axis(x: torch.Tensor, dim: int, out_len: int, scale: float) -> torch.Tensor:
    factor = round(1.0 / scale) if scale < 1 else 0
    if factor > 1 and abs(factor * scale - 1.0) < 1e-12:
        return _shrink_axis(x, dim, out_len, factor)
    src, w = resize_weights(x.shape[dim], out_len, scale)
    taps = src.shape[1]
    picked = x.index_select(dim, src.flatten().to(x.device))          # out_len * taps along dim
    shape = list(x.shape)
    shape[dim:dim + 1] = [out_len, taps]
    wshape = [1] * len(shape)
    wshape[dim:dim + 2] = [out_len, taps]
    return (picked.view(shape) * w.to(x.device, x.dtype).view(wshape)).sum(dim + 1)


def imresize(x: torch.Tensor, scale: float) -> torch.Tensor:
    """MATLAB ``imresize(x, scale, 'bicubic')`` of float images [..., H, W] (no rounding),
    computed in float64 from the taps of :func:`resize_weights` (rows, then columns).

    The output size is ceil(H * scale) x ceil(W * scale), as MATLAB's."""
    h, w = x.shape[-2:]
    oh, ow = int(math.ceil(h * scale - 1e-9)), int(math.ceil(w * scale - 1e-9))
    out = _resize_axis(x.double(), x.dim() - 2, oh, scale)
    return _resize_axis(out, x.dim() - 1, ow, scale).to(x.dtype)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] floats as 8-bit values (rounded, clipped), what saving a PNG does."""
    return (x.clamp(0, 1) * 255.0).round().to(torch.uint8)


def modcrop(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """Crop [..., H, W] at the bottom/right to multiples of ``scale``."""
    h, w = hr.shape[-2:]
    return hr[..., : h - h % scale, : w - w % scale]


def degrade(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """uint8 HR [..., 3, H, W] (H, W multiples of scale) -> uint8 LR [..., 3, H/s, W/s]:
    MATLAB bicubic downscaling, rounded to 8 bits."""
    return to_uint8(imresize(hr.float() / 255.0, 1.0 / scale))


def bicubic_upscale(lr: torch.Tensor, scale: int) -> torch.Tensor:
    """uint8 LR -> float [0, 1] bicubic upscaling by ``scale`` (the floor every SR net beats)."""
    return imresize(lr.float() / 255.0, float(scale)).clamp(0, 1)


# --------------------------------------------------------------------------- metrics

def rgb_to_y(x: torch.Tensor) -> torch.Tensor:
    """Y in [16, 235] (8-bit scale) of RGB floats in [0, 1], shape [..., 3, H, W] -> [..., H, W].
    One-channel input is taken as R = G = B."""
    if x.shape[-3] == 1:
        x = x.expand(*x.shape[:-3], 3, *x.shape[-2:])
    c = torch.tensor(Y_COEFFS, dtype=torch.float64, device=x.device)
    return Y_OFFSET + torch.einsum("...chw,c->...hw", x.double(), c)


def _crop(y: torch.Tensor, border: int) -> torch.Tensor:
    return y[..., border: y.shape[-2] - border, border: y.shape[-1] - border] if border else y


def psnr_y(sr: torch.Tensor, hr: torch.Tensor, border: int) -> float:
    """PSNR (dB) on Y between two RGB images [3, H, W] given as uint8 (or [0, 1] floats),
    ``border`` pixels cropped from every side. inf when they are identical."""
    a, b = (_crop(rgb_to_y(_unit(t)), border) for t in (sr, hr))
    mse = float(((a - b) ** 2).mean())
    return math.inf if mse == 0 else 10.0 * math.log10(PEAK * PEAK / mse)


def _gaussian_filter(x: torch.Tensor) -> torch.Tensor:
    """'valid' filtering of [N, 1, H, W] with the normalised 11-tap Gaussian (sigma 1.5),
    rows then columns (the 2-D window is their product)."""
    r = SSIM_WINDOW // 2
    g = torch.exp(-(torch.arange(-r, r + 1, dtype=torch.float64, device=x.device) ** 2)
                  / (2 * SSIM_SIGMA ** 2))
    g = (g / g.sum()).to(x.dtype)
    return F.conv2d(F.conv2d(x, g.view(1, 1, -1, 1)), g.view(1, 1, 1, -1))


def ssim_y(sr: torch.Tensor, hr: torch.Tensor, border: int) -> float:
    """SSIM on Y (see the module docstring) between two RGB images [3, H, W]."""
    a, b = (_crop(rgb_to_y(_unit(t)), border)[None, None] for t in (sr, hr))
    c1, c2 = (SSIM_K1 * PEAK) ** 2, (SSIM_K2 * PEAK) ** 2
    # the five filtered maps in one call: mean a, mean b, E[a^2], E[b^2], E[ab]
    mu_a, mu_b, aa, bb, ab = _gaussian_filter(torch.cat([a, b, a * a, b * b, a * b]))
    var_a, var_b, cov = aa - mu_a ** 2, bb - mu_b ** 2, ab - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1)
                                                    * (var_a + var_b + c2))
    return float(s.mean())


def _unit(t: torch.Tensor) -> torch.Tensor:
    """uint8 -> [0, 1] floats; floats are taken as already in [0, 1]."""
    return t.double() / 255.0 if t.dtype == torch.uint8 else t.double()

"""SyncNet "S": the audio-visual sync network used to score LSE-C / LSE-D.

This is the evaluation SyncNet of Chung & Zisserman ("Out of time", ACCV 2016 workshops) as
shipped in joonson/syncnet_python (class ``S``, pretrained file ``syncnet_v2.model``) and reused
unchanged by Wav2Lip's ``evaluation/scores_LSE``. It is *not* the 96x96 expert discriminator
Wav2Lip trains with; the two share only the name.

Layout (parameter names and shapes must match the upstream ``state_dict`` exactly so the public
checkpoint loads without renaming; registration order is netcnnaud, netfcaud, netfclip,
netcnnlip):

* ``netcnnaud`` - 2-D conv trunk over MFCC windows shaped (N, 1, 13, 20): 13 cepstral
  coefficients on the height axis, 20 MFCC frames (0.2 s) on the width axis. Output
  (N, 512, 1, 1).
* ``netcnnlip`` - 3-D conv trunk over five-frame clips shaped (N, 3, 5, 224, 224) (channels
  before time). Pixels are raw 0..255 values in **BGR** order (upstream reads frames with
  ``cv2.imread``); there is no normalisation. Output (N, 512, 1, 1, 1) - only at 224x224.
* ``netfcaud`` / ``netfclip`` - Linear-BN-ReLU-Linear heads to the 1024-d embedding.

Embeddings are not L2-normalised; LSE distances are plain Euclidean distances between them.
"""

from __future__ import annotations

from typing import Dict, List, Tuple

import torch
from torch import nn

from ladtalk.errors import CheckpointError

EMBED_DIM = 1024
CLIP_FRAMES = 5          # video frames per lip window
CROP_SIZE = 224          # face crop side the lip trunk is built for
MFCC_COEFFS = 13         # cepstral coefficients per MFCC frame
MFCC_WINDOW = 20         # MFCC frames per audio window (4 per video frame at 100 / 25 fps)


def _conv_bn_relu2d(cin: int, cout: int, kernel, padding) -> List[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel_size=kernel, stride=1, padding=padding),
            nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def _conv_bn_relu3d(cin: int, cout: int, kernel, stride, padding) -> List[nn.Module]:
    return [nn.Conv3d(cin, cout, kernel_size=kernel, stride=stride, padding=padding),
            nn.BatchNorm3d(cout), nn.ReLU(inplace=True)]


def _fc_head(embed_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(),
                         nn.Linear(512, embed_dim))


class SyncNetS(nn.Module):
    """The syncnet_python ``S`` network (13.6 M parameters); see the module docstring."""

    def __init__(self, embed_dim: int = EMBED_DIM) -> None:
        super().__init__()
        # Sequential indices (hence state_dict keys) follow upstream: ReLU and pooling layers
        # occupy indices too, including a no-op 1x1 max-pool after the first audio block.
        self.netcnnaud = nn.Sequential(
            *_conv_bn_relu2d(1, 64, 3, 1),
            nn.MaxPool2d(kernel_size=1, stride=1),
            *_conv_bn_relu2d(64, 192, 3, 1),
            nn.MaxPool2d(kernel_size=3, stride=(1, 2)),
            *_conv_bn_relu2d(192, 384, 3, 1),
            *_conv_bn_relu2d(384, 256, 3, 1),
            *_conv_bn_relu2d(256, 256, 3, 1),
            nn.MaxPool2d(kernel_size=3, stride=2),
            *_conv_bn_relu2d(256, 512, (5, 4), 0),
        )
        self.netfcaud = _fc_head(embed_dim)
        self.netfclip = _fc_head(embed_dim)
        self.netcnnlip = nn.Sequential(
            *_conv_bn_relu3d(3, 96, (5, 7, 7), (1, 2, 2), 0),
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2)),
            *_conv_bn_relu3d(96, 256, (1, 5, 5), (1, 2, 2), (0, 1, 1)),
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
            *_conv_bn_relu3d(256, 256, (1, 3, 3), 1, (0, 1, 1)),
            *_conv_bn_relu3d(256, 256, (1, 3, 3), 1, (0, 1, 1)),
            *_conv_bn_relu3d(256, 256, (1, 3, 3), 1, (0, 1, 1)),
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2)),
            *_conv_bn_relu3d(256, 512, (1, 6, 6), 1, 0),
        )

    # -- trunks (flattened conv features, the fc heads' input) ------------------------------
    def aud_trunk(self, mfcc_windows: torch.Tensor) -> torch.Tensor:
        """(N, 1, 13, 20) MFCC windows -> (N, 512)."""
        return self.netcnnaud(mfcc_windows).flatten(1)

    def lip_trunk(self, clips: torch.Tensor) -> torch.Tensor:
        """(N, 3, 5, 224, 224) raw 0..255 BGR clips -> (N, 512)."""
        return self.netcnnlip(clips).flatten(1)

    # -- embeddings ----------------------------------------------------------------------
    def forward_aud(self, mfcc_windows: torch.Tensor) -> torch.Tensor:
        """Audio embedding (N, 1024)."""
        return self.netfcaud(self.aud_trunk(mfcc_windows))

    def forward_lip(self, clips: torch.Tensor) -> torch.Tensor:
        """Lip embedding (N, 1024)."""
        return self.netfclip(self.lip_trunk(clips))

    def forward(self, clips: torch.Tensor, mfcc_windows: torch.Tensor
                ) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.forward_lip(clips), self.forward_aud(mfcc_windows)


def adapt_state_dict(state: Dict[str, torch.Tensor], model: SyncNetS,
                     source: str = "checkpoint") -> Dict[str, torch.Tensor]:
    """Check an upstream-style state dict against ``model`` and fill what may be missing.

    ``syncnet_v2.model`` predates BatchNorm's ``num_batches_tracked`` buffer (upstream copies
    tensors one by one and never notices); those buffers only matter in training mode, so
    absent ones are filled with 0. A ``module.`` / ``__S__.`` prefix (DataParallel / the
    ``SyncNetInstance`` wrapper) is stripped. Anything else missing, unexpected or mis-shaped
    raises :class:`~ladtalk.errors.CheckpointError` naming ``source``.
    """

    expected = model.state_dict()
    out: Dict[str, torch.Tensor] = {}
    for key, value in state.items():
        plain = key
        for prefix in ("module.", "__S__."):
            if plain.startswith(prefix):
                plain = plain[len(prefix):]
        out[plain] = value
    unexpected = sorted(set(out) - set(expected))
    missing = sorted(k for k in set(expected) - set(out)
                     if not k.endswith("num_batches_tracked"))
    bad_shape = sorted(k for k in set(out) & set(expected)
                       if tuple(out[k].shape) != tuple(expected[k].shape))
    if unexpected or missing or bad_shape:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected),
                            ("wrong shape", bad_shape)):
            if keys:
                parts.append(f"{label}: {', '.join(keys[:5])}" + (" ..." if len(keys) > 5 else ""))
        raise CheckpointError(
            f"{source} is not a syncnet_python SyncNet 'S' state dict ({'; '.join(parts)}); "
            "use the public syncnet_v2.model (or its .safetensors conversion)")
    for key in expected:
        if key not in out:
            out[key] = torch.zeros_like(expected[key])
    return out


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


"""PatchGAN discriminator of taming-transformers (``NLayerDiscriminator``, pix2pix layout).

Layout (module ``main`` is one ``nn.Sequential``, so taming discriminator weights load by
name): ``Conv(in, ndf, 4, s2, p1) -> LeakyReLU(0.2)``; for n = 1..n_layers-1:
``Conv(ndf*min(2^(n-1),8), ndf*min(2^n,8), 4, s2, p1, bias=False) -> norm -> LeakyReLU``;
then ``Conv(.., ndf*min(2^n_layers,8), 4, s1, p1, bias=False) -> norm -> LeakyReLU`` and a
final ``Conv(.., 1, 4, s1, p1)`` giving one logit per receptive-field patch. ``norm`` is
BatchNorm2d as in taming's default (``use_actnorm=False``). Weights are initialised like
taming's ``weights_init``: conv N(0, 0.02), norm weight N(1, 0.02), bias 0.

For the hinge loss and the adaptive weight see :mod:`ladtalk.enrollment.losses`.
"""

from __future__ import annotations

from torch import nn


class NLayerDiscriminator(nn.Module):
    """PatchGAN with ``n_layers`` stride-2 stages and ``ndf`` base channels."""

    def __init__(self, input_nc: int = 3, ndf: int = 64, n_layers: int = 3) -> None:
        super().__init__()
        if n_layers < 1 or ndf < 1:
            raise ValueError("NLayerDiscriminator needs n_layers >= 1 and ndf >= 1")
        kw, pad = 4, 1
        layers = [nn.Conv2d(input_nc, ndf, kw, 2, pad), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2 ** n, 8)
            layers += [nn.Conv2d(ndf * prev, ndf * mult, kw, 2, pad, bias=False),
                       nn.BatchNorm2d(ndf * mult), nn.LeakyReLU(0.2, True)]
        prev, mult = mult, min(2 ** n_layers, 8)
        layers += [nn.Conv2d(ndf * prev, ndf * mult, kw, 1, pad, bias=False),
                   nn.BatchNorm2d(ndf * mult), nn.LeakyReLU(0.2, True),
                   nn.Conv2d(ndf * mult, 1, kw, 1, pad)]
        self.main = nn.Sequential(*layers)
        self.apply(_weights_init)

    def forward(self, x):
        """Patch logits (B, 1, h, w) for images in [-1, 1]."""
        return self.main(x)


def _weights_init(m: nn.Module) -> None:
    if isinstance(m, nn.Conv2d):
        nn.init.normal_(m.weight, 0.0, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


__all__ = ["NLayerDiscriminator"]

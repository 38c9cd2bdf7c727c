"""LaDTalk: lip-synced talking heads with identity-specific high-frequency detail.

Wav2Lip gives lip sync at 96x96; a per-identity vector-quantised autoencoder (SOVQAE) maps
the blurry upsampled face into that person's codebook and decodes it with their own detail.
The parts and how data flows through them: ``docs/architecture.md``.
"""

__version__ = "0.1.0"

# The package's parts, lowest first: a part imports only from parts before it.
LAYERS = ("errors", "_util", "media", "checkpoints", "models", "runtime", "metrics", "face",
          "identities", "generation", "analysis", "evaluation", "enrollment", "batch", "commands",
          "app", "cli", "bench", "__main__", "app.py")

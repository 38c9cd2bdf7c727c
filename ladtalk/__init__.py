"""LaDTalk: lip-synced talking heads with identity-specific high-frequency detail.

Two stages: a pretrained Wav2Lip gives lip sync at 96x96; a per-identity vector-quantised
autoencoder (SOVQAE) maps the blurry upsampled face into that person's codebook and decodes
it with their own detail ("latent denoising").

Modules (one job each):
    audio        decoding any audio/video track to 16 kHz mono, Wav2Lip mel front-end
    video        frame decoding / encoding through ffmpeg
    face         face detection, temporal box smoothing, crop framing
    models       network definitions (Wav2Lip, SyncNet, SOVQAE)
    hub          checkpoint resolution (local / Hugging Face Hub), safe .pth conversion
    lipsync      stage-1 inference API (Wav2Lip on face crops + mel windows)
    pipeline     end-to-end generation
    training     identity enrollment (SOVQAE fine-tuning)
    metrics      PSNR / SSIM / FID / LSE and sliding evaluation
    cli          ``python -m ladtalk ...``
"""

__version__ = "0.1.0"

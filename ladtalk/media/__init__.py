"""Media I/O: the ffmpeg binary and command lines, probe, streamed decode / encode, audio and
the Wav2Lip mel, loop policy, tensor resampling. docs/media.md."""

"""Scoring generated videos: the paper's metrics per pair and per method (``ladtalk eval``,
:mod:`.report`), and LaDTalk against Wav2Lip on held-out frames (:mod:`.quality`)."""

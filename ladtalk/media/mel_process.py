"""The Wav2Lip mel of an audio file, computed early in a second process (:func:`start`).

Decoding the audio (an ffmpeg run for anything but a 16 kHz WAV / FLAC) and the STFT take a
few tenths of a second, and a process's very first mel on a machine also computes librosa's
window and filterbank (librosa's imports: about 1.5 s; later processes read them from
``$LADTALK_HOME/cache/mel``). The CLI starts this child before it imports torch and the
pipeline, so that work runs on the other core; :meth:`MelProcess.result` then hands over the
same numbers :func:`ladtalk.media.mel.melspectrogram` gives in-process (the child runs that
function), or None when the child failed, in which case the caller computes it itself (and
reports the input's real error). Run as a module it writes the mel of ``AUDIO`` to stdout as
``.npy``.
"""

from __future__ import annotations

import io
import logging
import subprocess
import sys
from typing import Optional

import numpy as np

from ladtalk.media.ffmpeg import PathLike

log = logging.getLogger(__name__)
TIMEOUT_S = 600.0


class MelProcess:
    """A running child computing the mel of ``audio`` (see the module doc)."""

    def __init__(self, audio: PathLike) -> None:
        self.audio = str(audio)
        try:
            self.proc: Optional[subprocess.Popen] = subprocess.Popen(
                [sys.executable, "-m", "ladtalk.media.mel_process", self.audio],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        except OSError as exc:  # no child: the caller computes the mel itself
            log.debug("mel child not started (%s)", exc)
            self.proc = None

    def result(self, n_frames: int) -> Optional[np.ndarray]:
        """The child's mel when it succeeded and has ``n_frames`` columns, else None."""
        if self.proc is None:
            return None
        try:
            out, err = self.proc.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.close()
            return None
        if self.proc.returncode != 0:
            log.debug("mel child failed: %s", err.decode(errors="replace")[-500:])
            return None
        try:
            mel = np.load(io.BytesIO(out), allow_pickle=False)
        except ValueError:
            return None
        return mel if mel.ndim == 2 and mel.shape[1] == n_frames else None

    def close(self) -> None:
        """Stop the child if it still runs (an input error ended the run early)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


def start(audio: PathLike) -> MelProcess:
    """Start computing the mel of ``audio`` in a child process."""
    return MelProcess(audio)


def _main(argv) -> int:
    from ladtalk.media.audio import SAMPLE_RATE, load_audio
    from ladtalk.media.mel import melspectrogram
    if len(argv) != 1:
        print("usage: python -m ladtalk.media.mel_process AUDIO", file=sys.stderr)
        return 2
    mel = melspectrogram(load_audio(argv[0], SAMPLE_RATE))
    buf = io.BytesIO()
    np.save(buf, mel, allow_pickle=False)
    sys.stdout.buffer.write(buf.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))

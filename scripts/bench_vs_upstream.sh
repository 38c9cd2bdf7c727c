#!/usr/bin/env bash
# Side-by-side wall time and peak RSS: upstream Wav2Lip `inference.py --box` against
# `python -m ladtalk generate --no-enhance --box` (fp32 and the default precision), same input,
# same box, alternating runs so that both see the same machine load.
#
# Needs a checkout of github.com/Rudrabha/Wav2Lip (not part of this project) and a Python that
# runs it (torch, librosa, opencv, scipy; with librosa >= 0.10 its audio.py needs the
# keyword-argument fix `librosa.filters.mel(sr=..., n_fft=..., ...)`), plus an `ffmpeg` on
# PATH for upstream's final mux (imageio-ffmpeg's binary, symlinked, will do). Upstream gets a
# random-weight checkpoint in its own format and we get the same weights as safetensors:
# speed does not depend on the values.
#
#   UPSTREAM_DIR=~/src/Wav2Lip UPSTREAM_PY=~/w2l-venv/bin/python \
#     bash scripts/bench_vs_upstream.sh [FACE AUDIO Y1 Y2 X1 X2 [REPEATS]]
#
# Default input: ../shared/data/retalking_face2.mp4 (844x844, 25 fps) + retalking_audio1.wav.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${UPSTREAM_DIR:?set UPSTREAM_DIR to a Wav2Lip checkout}"
UPSTREAM_PY=${UPSTREAM_PY:-python3}
FACE=${1:-../shared/data/retalking_face2.mp4}
AUDIO=${2:-../shared/data/retalking_audio1.wav}
BOX=("${3:-223}" "${4:-603}" "${5:-220}" "${6:-568}")
REPEATS=${7:-2}
FACE=$(realpath "$FACE"); AUDIO=$(realpath "$AUDIO")
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT

python - "$TMP" <<'PY'
import sys, torch
from safetensors.torch import save_file
from ladtalk.models.wav2lip import Wav2Lip
torch.manual_seed(0)
sd = {k: v.contiguous() for k, v in Wav2Lip().state_dict().items()}
save_file(sd, f"{sys.argv[1]}/w2l.safetensors")
torch.save({"state_dict": {"module." + k: v for k, v in sd.items()}}, f"{sys.argv[1]}/w2l.pth")
PY

measure() {  # label, command...: prints "label wall_s max_rss_MB"
  local label=$1; shift
  /usr/bin/time -f "%e %M" -o "$TMP/time" "$@" > "$TMP/log" 2>&1 || { cat "$TMP/log"; exit 1; }
  read -r wall rss < "$TMP/time"
  printf '%-22s wall %6.2f s   peak RSS %5d MB   load %s\n' "$label" "$wall" "$((rss / 1024))" \
    "$(cut -d' ' -f1 /proc/loadavg)"
}

for rep in $(seq "$REPEATS"); do
  (cd "$UPSTREAM_DIR" && mkdir -p temp results && measure "upstream inference.py" \
    "$UPSTREAM_PY" inference.py --checkpoint_path "$TMP/w2l.pth" --face "$FACE" \
    --audio "$AUDIO" --box "${BOX[@]}" --outfile "$TMP/upstream.mp4")
  for precision in fp32 auto; do
    rm -f "$TMP/ours.mp4"
    measure "ladtalk ($precision)" python -m ladtalk generate --face "$FACE" --audio "$AUDIO" \
      --out "$TMP/ours.mp4" --no-enhance --box "${BOX[@]}" --wav2lip "$TMP/w2l.safetensors" \
      --device cpu --precision "$precision" --quiet
  done
done
python - "$TMP/upstream.mp4" "$TMP/ours.mp4" <<'PY'
import sys
from ladtalk.media.probe import probe
for label, path in zip(("upstream", "ladtalk"), sys.argv[1:]):
    info = probe(path)
    print(f"{label} output: {info.n_frames} frames, {info.width}x{info.height} @ {info.fps:g} fps")
PY

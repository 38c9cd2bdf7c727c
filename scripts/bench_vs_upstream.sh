#!/usr/bin/env bash
# Side-by-side wall time and peak RSS: upstream Wav2Lip `inference.py --box` against
# `python -m ladtalk generate --no-enhance --box` (the defaults, --precision fp32, and the same
# with --backend torch, what an install without the optional OpenVINO extra runs), same input,
# same box, alternating runs so that all see the same machine load; then a Markdown table of
# medians, speed-ups and peak RSS against upstream.
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
REPEATS=${7:-3}
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

RUNS="$TMP/runs.tsv"; : > "$RUNS"
measure() {  # label, command...: appends "label<TAB>wall_s<TAB>max_rss_kB"
  local label=$1; shift
  /usr/bin/time -f "%e %M" -o "$TMP/time" "$@" > "$TMP/log" 2>&1 || { cat "$TMP/log"; exit 1; }
  read -r wall rss < "$TMP/time"
  printf '%s\t%s\t%s\n' "$label" "$wall" "$rss" >> "$RUNS"
  printf '%-40s wall %6.2f s   peak RSS %5d MB   load %s\n' "$label" "$wall" "$((rss / 1024))" \
    "$(cut -d' ' -f1 /proc/loadavg)"
}

ours() {  # label, extra generate flags...
  local label=$1; shift
  rm -f "$TMP/ours.mp4"
  measure "$label" python -m ladtalk generate --face "$FACE" --audio "$AUDIO" \
    --out "$TMP/ours.mp4" --no-enhance --box "${BOX[@]}" --wav2lip "$TMP/w2l.safetensors" \
    --device cpu --quiet "$@"
}

# one untimed run each first: the runtime choice is measured once per machine and cached
# (as any user's first run), and the OS file cache is warm for both programs
ours warm-up >/dev/null; ours warm-up --precision fp32 >/dev/null
ours warm-up --backend torch >/dev/null
: > "$RUNS"
for rep in $(seq "$REPEATS"); do
  (cd "$UPSTREAM_DIR" && mkdir -p temp results && measure "upstream inference.py" \
    "$UPSTREAM_PY" inference.py --checkpoint_path "$TMP/w2l.pth" --face "$FACE" \
    --audio "$AUDIO" --box "${BOX[@]}" --outfile "$TMP/upstream.mp4")
  ours "ladtalk (default)"
  ours "ladtalk --precision fp32" --precision fp32
  ours "ladtalk --backend torch" --backend torch
  ours "ladtalk --backend torch --precision fp32" --backend torch --precision fp32
done
python - "$RUNS" <<'PY'
import statistics, sys
rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1]) if line.strip()]
by = {}
for label, wall, rss in rows:
    by.setdefault(label, []).append((float(wall), int(rss) / 1024 / 1024))
up = statistics.median(w for w, _ in by["upstream inference.py"])
up_rss = max(r for _, r in by["upstream inference.py"])
print("\n| run | wall time (s) | median | speed-up | peak RSS (GB) | RSS / upstream |")
print("|---|---|---|---|---|---|")
for label, vals in by.items():
    walls = [w for w, _ in vals]
    med, rss = statistics.median(walls), max(r for _, r in vals)
    print(f"| {label} | {', '.join(f'{w:.2f}' for w in walls)} | {med:.2f} | "
          f"{up / med:.2f}x | {rss:.2f} | {rss / up_rss:.2f} |")
PY
python - "$TMP/upstream.mp4" "$TMP/ours.mp4" <<'PY'
import sys
from ladtalk.media.probe import probe
for label, path in zip(("upstream", "ladtalk"), sys.argv[1:]):
    info = probe(path)
    print(f"{label} output: {info.n_frames} frames, {info.width}x{info.height} @ {info.fps:g} fps")
PY

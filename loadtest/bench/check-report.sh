#!/usr/bin/env bash
# Renders a real storm report and checks that a person would see pictures in it:
#
#   bash loadtest/bench/check-report.sh [phones=300]
#
# Builds `uaprof` and `uaprof-storm` (debug; honours CARGO_TARGET_DIR), starts one
# `uaprof --role all` on 127.0.0.1 port 0, runs a small change-storm with `--out` (the phones
# boot over 1 s, then a change spread over 1 s by effective-by, so the plots show both phases
# and the "change published" marker), then takes a headless Chromium screenshot of
# report.html (installs the Debian package `chromium` when it is missing and we are root).
# It fails unless
#   * plot.png is 960×480 (report::PNG_SIZE), not blank, draws every rate series in its colour
#     and has dark text pixels in the title band (top) and the legend band (bottom);
#   * the screenshot has the requested size, is not blank, shows every rate series' legend
#     colour and a fair amount of text.
# The unit tests in loadtest/src/report.rs check where the words are; this checks that a
# browser draws the page. Prints the paths of plot.png and the screenshot: look at them.
# The report is kept in $OUT (default: a temporary directory).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
phones=${1:-300}
# The screenshot's size: wide enough for the 900 px SVG plots and the page margin, tall
# enough to hold the title, both plots and the start of the summary.
shot_w=1000
shot_h=1100

if ! command -v chromium >/dev/null; then
    if [[ $(id -u) == 0 ]]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium \
            > /dev/null
    else
        echo "check-report: chromium is missing; apt-get install chromium (as root)" >&2
        exit 1
    fi
fi

cargo build -q -p uaprof -p loadtest
target=${CARGO_TARGET_DIR:-target}/debug
work=$(mktemp -d)
out=${OUT:-$work/report}
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
field() { tr ' ' '\n' <<< "$1" | sed -n "s/^$2=//p" | sed 's|http://||'; }

"$target/uaprof" --role all --data-dir "$work/all" --http 127.0.0.1:0 --provision 127.0.0.1:0 --sip-udp 127.0.0.1:0 \
    --sip-tcp off --admin 127.0.0.1:0 --fsync false --log warn \
    > "$work/all.out" 2> "$work/all.err" &
pids+=($!)
for _ in $(seq 300); do grep -q "uaprof ready" "$work/all.out" 2>/dev/null && break; sleep 0.1; done
line=$(grep "uaprof ready" "$work/all.out") || { cat "$work/all.out" "$work/all.err"; exit 1; }

"$target/uaprof-storm" change-storm --phones "$phones" --over 1 --effective-by 1 \
    --server "udp://$(field "$line" sip-udp)" --http "http://$(field "$line" http)" \
    --provision "http://$(field "$line" provision)" \
    --max-time 60 --no-progress --out "$out" > "$work/storm"

# Chromium as root needs --no-sandbox; the profile directory keeps it off $HOME.
timeout 120 chromium --headless --no-sandbox --disable-gpu --hide-scrollbars \
    --user-data-dir="$work/chromium" --window-size="$shot_w,$shot_h" \
    --screenshot="$out/report-screenshot.png" "file://$out/report.html" \
    > "$work/chromium.log" 2>&1 || { cat "$work/chromium.log"; exit 1; }

python3 - "$out/plot.png" "$out/report-screenshot.png" "$shot_w" "$shot_h" <<'PY'
import struct, sys, zlib

def read_png(path):
    """8-bit RGB or RGBA, not interlaced: what plot.png and Chromium write."""
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path}: not a PNG"
    pos, idat = 8, b""
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            w, h, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    assert depth == 8 and color in (2, 6) and interlace == 0, f"{path}: {depth=} {color=}"
    bpp = 3 if color == 2 else 4
    raw, stride = zlib.decompress(idat), w * bpp
    rows, prev = [], bytearray(stride)
    for y in range(h):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if f == 1: line[i] = (line[i] + a) & 255
            elif f == 2: line[i] = (line[i] + b) & 255
            elif f == 3: line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append([tuple(line[x * bpp:x * bpp + 3]) for x in range(w)])
        prev = line
    return w, h, rows

# The rate series' colours (report.rs rate_series) and the text ink.
series = {"SUBSCRIBE/s": (31, 119, 180), "NOTIFY/s": (255, 127, 14), "fetches/s": (44, 160, 44),
          "provisioned/s": (148, 103, 189), "failed + retransmitted/s": (214, 39, 40)}
dark = lambda p: max(p) < 80
problems = []

def check(path, want_w, want_h, min_series_px, bands):
    w, h, rows = read_png(path)
    if (w, h) != (want_w, want_h):
        problems.append(f"{path}: {w}×{h}, want {want_w}×{want_h}")
        return
    flat = [p for r in rows for p in r]
    colours = len(set(flat))
    inked = sum(p != (255, 255, 255) for p in flat) / len(flat)
    print(f"{path}: {w}×{h}, {colours} colours, {100 * inked:.1f} % not white")
    if colours < 8 or inked < 0.01:
        problems.append(f"{path}: blank ({colours} colours, {100 * inked:.2f} % ink)")
    for name, c in series.items():
        n = sum(p == c for p in flat)
        if n < min_series_px:
            problems.append(f"{path}: {n} pixels of {name}'s colour {c}")
    for label, ys, min_dark in bands:
        n = sum(dark(p) for y in ys for p in rows[y])
        print(f"  {label}: {n} dark pixels")
        if n < min_dark:
            problems.append(f"{path}: {label} has {n} dark pixels, want {min_dark}")

# plot.png: the title sits in the top 30 rows, the legend in the bottom 60.
check(sys.argv[1], 960, 480, 100, [("title band", range(0, 30), 300),
                                   ("legend band", range(420, 480), 300)])
# The screenshot: every legend swatch is a 10×10 square in its exact colour; text everywhere.
check(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), 60, [("whole page", range(int(sys.argv[4])), 5000)])
if problems:
    print("check-report: FAILED\n  " + "\n  ".join(problems))
    sys.exit(1)
print("check-report: ok")
PY
grep -E "^result:|provisioned  " "$work/storm"
echo "look at: $out/plot.png $out/report-screenshot.png"

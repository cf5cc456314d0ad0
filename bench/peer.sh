# Sourced by the *_vs_torch.sh scripts: finds the PyTorch interpreter and the peer script
# PEER_NAME, checks them, and builds `bda` unless BDA names a prebuilt one. Sets ROOT,
# PYTHON, PEER, BDA and BDA_RUN (the command line that runs `bda`); exits 2 with one line when
# something is missing. BDA_LD_LIBRARY_PATH (optional) is put in front of LD_LIBRARY_PATH for
# the `bda` runs only: the peer keeps the environment's library path, so PyTorch loads the
# cuBLAS/NVRTC/nvJitLink it was built with, not the ones chosen for `bda`.
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=$(command -v "${PYTHON:-python3}" || true)
PEERS=${PEERS:-$ROOT/../shared/peers}
PEER=${PEER:-$PEERS/$PEER_NAME}
[ -n "$PYTHON" ] || { echo "no python interpreter found (set PYTHON to one with torch)" >&2; exit 2; }
[ -f "$PEER" ] || { echo "no peer at $PEER (set PEERS or PEER)" >&2; exit 2; }
if [ -z "${BDA:-}" ]; then
  (cd "$ROOT" && cargo build --release -q -p bda-host)
  BDA="${CARGO_TARGET_DIR:-$ROOT/target}/release/bda"
fi
if [ -n "${BDA_LD_LIBRARY_PATH:-}" ]; then
  BDA_RUN=(env "LD_LIBRARY_PATH=$BDA_LD_LIBRARY_PATH${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$BDA")
else
  BDA_RUN=("$BDA")
fi

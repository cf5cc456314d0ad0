# Sourced by the *_vs_torch.sh scripts: finds the PyTorch interpreter and the peer script
# PEER_NAME, checks them, and builds `bda` unless BDA names a prebuilt one. Sets ROOT,
# PYTHON, PEER and BDA; exits 2 with one line when something is missing.
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

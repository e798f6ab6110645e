#!/usr/bin/env bash
# VOID for Nuke: one-command set-up.
#
#   ./install.sh                 server + client in .venv, client libraries vendored for Nuke, plugin registered
#   ./install.sh --dev           also the test tools
#   ./install.sh --no-nuke       leave ~/.nuke alone
#   ./install.sh --nuke-dir DIR  register the plugin in DIR/init.py instead of ~/.nuke/init.py
#   ./install.sh --client-only   only what a compositor's workstation needs (no torch, no server)
#
# Nothing is ever installed into Nuke's own Python: the few pure-Python libraries the node needs (requests and
# its dependencies, versions that still run on Nuke 13's Python 3.7) go into nuke_void/_vendor.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${VOID_VENV:-$here/.venv}"
python="${PYTHON:-python3}"
dev=0; nuke=1; nuke_dir="${HOME}/.nuke"; client_only=0

while [ $# -gt 0 ]; do
  case "$1" in
    --dev) dev=1 ;;
    --no-nuke) nuke=0 ;;
    --nuke-dir) nuke_dir="$2"; shift ;;
    --client-only) client_only=1 ;;
    --venv) venv="$2"; shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done

say() { printf '\033[1m[void]\033[0m %s\n' "$*"; }

# 1. Client libraries for Nuke's Python (3.7 .. 3.11): pure-Python wheels only, into the plugin folder.
vendor="$here/nuke_void/_vendor"
say "vendoring requests for Nuke's Python into $vendor"
rm -rf "$vendor.tmp"
"$python" -m pip install --quiet --disable-pip-version-check --target "$vendor.tmp" --no-deps \
  --only-binary=:all: --platform any --python-version 3.7 --implementation py --abi none \
  -r "$here/nuke_void/vendor-requirements.txt"
rm -rf "$vendor.tmp/bin" && rm -rf "$vendor" && mv "$vendor.tmp" "$vendor"

# 2. The virtual environment with the `void` and `void-server` commands.
if [ ! -x "$venv/bin/python" ]; then
  say "creating $venv"
  "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip install --disable-pip-version-check)
"${pip[@]}" --quiet --upgrade pip setuptools wheel

extras="client"
if [ "$client_only" = 0 ]; then
  extras="client,server"
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    say "NVIDIA GPU found: installing the CUDA build of torch"
    "${pip[@]}" torch torchvision
  else
    # The CPU build is far smaller; where PyTorch's own index is out of reach, PyPI's build runs on the CPU too.
    # Asked only when the index answers: pip's configured find-links/extra indexes would otherwise still resolve
    # (a torch/torchvision pair that may not import together, installed only to be replaced below).
    cpu_index="https://download.pytorch.org/whl/cpu"
    if "$python" -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + '/', timeout=10)" \
        "$cpu_index" >/dev/null 2>&1; then
      say "no NVIDIA GPU: installing a CPU build of torch"
      "${pip[@]}" torch torchvision --index-url "$cpu_index" 2>/dev/null || true
    else
      say "no NVIDIA GPU, and $cpu_index is out of reach: taking torch from PyPI (it runs on the CPU too)"
    fi
  fi
  # A torch/torchvision pair built against each other (RAFT needs torchvision): else take PyPI's latest pair.
  torch_ok() { "$venv/bin/python" -c "import torch, torchvision.models.optical_flow" >/dev/null 2>&1; }
  torch_ok || "${pip[@]}" --upgrade torch torchvision
  torch_ok || { echo "install.sh: torch and torchvision do not import together; see the pip output above" >&2; exit 1; }
  # FlashAttention-4 on Hopper (9.x) and Blackwell (10.x): ~10% faster jobs, the same output to bf16 rounding
  # (docs/performance.md). Optional: without it the server runs SDPA, so a failed install is only a note.
  cap="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n 1 | cut -d. -f1 || true)"
  if [ "$cap" = 9 ] || [ "$cap" = 10 ]; then
    # the CuTe DSL's CUDA 12 libraries come by default; a CUDA 13 torch also needs its cu13 extra
    dsl="$("$venv/bin/python" -c 'import torch; print("[cu13]" if (torch.version.cuda or "").startswith("13") else "")')"
    say "Hopper/Blackwell GPU: installing FlashAttention-4 (optional)"
    "${pip[@]}" --quiet "flash-attn-4>=4.0.0b36" "nvidia-cutlass-dsl$dsl>=4.8" \
      || say "FlashAttention-4 did not install; the server runs SDPA attention (void-server doctor says which)"
  fi
fi
[ "$dev" = 1 ] && extras="$extras,dev"
say "installing void-for-nuke[$extras]"
"${pip[@]}" --quiet -e "$here[$extras]"

# 3. Register the plugin path with Nuke, once (a marked block, replaced on re-install).
if [ "$nuke" = 1 ]; then
  mkdir -p "$nuke_dir"
  init="$nuke_dir/init.py"
  touch "$init"
  begin="# >>> VOID for Nuke >>>"; end="# <<< VOID for Nuke <<<"
  tmp="$(mktemp)"
  awk -v b="$begin" -v e="$end" '$0==b{skip=1} !skip{print} $0==e{skip=0}' "$init" > "$tmp"
  { cat "$tmp"; printf '%s\nimport nuke\nnuke.pluginAddPath(%s)\n%s\n' "$begin" "'$here'" "$end"; } > "$init"
  rm -f "$tmp"
  say "registered the plugin in $init"
fi

say "done. Start a server:  $venv/bin/void-server serve --pipeline preview"

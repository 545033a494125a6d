#!/usr/bin/env bash
# The peer environments of bench/encode.py: sentence-transformers' OpenVINO and ONNX backends, each in
# its own virtual environment beside the main .venv (their pins cannot share it).
#
#   bash bench/peers.sh            # both; an environment that is already complete is kept
#   bash bench/peers.sh openvino   # only .venv-openvino (or: onnx)
#
# .venv-openvino: the main environment's sentence-transformers and torch with optimum-intel[openvino]
#                 (+ datasets, for the int8 calibration set). Not the main transformers pin: every
#                 optimum-intel release so far caps it (2.2.0: transformers<5.6, huggingface-hub<1.22;
#                 the main set pins 5.24.0 and 2.4.0), so pip takes the newest transformers 5 below the cap.
# .venv-onnx:     sentence-transformers[onnx], whose optimum-onnx (0.1.0) needs transformers<4.58, so pip
#                 picks the newest sentence-transformers release that allows transformers 4; torch stays
#                 at the main pin.
# optimum-intel requires torchvision, and PyPI's torchvision is built for PyPI's CUDA torch: beside the CPU torch
# it fails to load (`operator torchvision::nms does not exist`), and transformers then cannot import
# AutoProcessor, so no optimum-intel import works. Nothing here needs torchvision: a torchvision that does not
# load is uninstalled, and `pip check` then ignores only that one missing requirement.
# Each ends with `pip check`; what it installed is in <venv>/freeze.txt. A failed one is removed, and
# bench/encode.py then skips its contenders and says why.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
ST_VERSION=$(sed -n 's/^sentence-transformers==//p' requirements.txt)
TORCH_PIN=$(grep '^torch==' requirements-runtime.txt)

drop_broken_torchvision() {  # drop_broken_torchvision VENV
  if "$1/bin/python" -c "import torchvision" >/dev/null 2>&1 || ! "$1/bin/python" -m pip show -q torchvision 2>/dev/null; then
    return 0
  fi
  echo "$1: torchvision does not load beside this torch (CUDA build); uninstalling it" >&2
  "$1/bin/python" -m pip uninstall -y -q torchvision
}

check() {  # check VENV: pip check, less the torchvision requirement dropped above
  local out
  out=$("$1/bin/python" -m pip check 2>&1) && return 0
  out=$(grep -v "requires torchvision, which is not installed" <<<"$out" || true)
  [ -z "$out" ] || { echo "$out" >&2; return 1; }
}

make_env() {  # make_env NAME pip-args...
  local venv=".venv-$1"; shift
  if [ -f "$venv/.installed" ]; then echo "$venv: present (rm -r $venv to rebuild)"; return 0; fi
  rm -rf "$venv"
  "$PYTHON" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip
  if ! "$venv/bin/python" -m pip install -q "$@" || ! drop_broken_torchvision "$venv" || ! check "$venv"; then
    echo "$venv: FAILED (see the pip output above); removed" >&2
    rm -rf "$venv"
    return 1
  fi
  "$venv/bin/python" -m pip freeze > "$venv/freeze.txt"
  touch "$venv/.installed"
  echo "$venv: $(grep -i -E '^(sentence-transformers|transformers|torch|openvino|optimum-intel|optimum-onnx|onnxruntime)==' \
    "$venv/freeze.txt" | tr '\n' ' ')"
}

status=0
for which in "${@:-openvino onnx}"; do
  for env in $which; do
    case "$env" in
      openvino) make_env openvino "sentence-transformers[openvino]==$ST_VERSION" datasets "$TORCH_PIN" || status=1 ;;
      onnx) make_env onnx "sentence-transformers[onnx]" "transformers<5" "$TORCH_PIN" || status=1 ;;
      *) echo "unknown peer environment $env (openvino, onnx)" >&2; exit 2 ;;
    esac
  done
done
exit $status

# Sourced by main.sh and test.sh: create or reuse .venv and install the package with its dev extras.
# Safe to run again: the install is skipped while settings.ini, setup.py and this script are unchanged.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ ! -x .venv/bin/python ]; then
  echo "creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
. .venv/bin/activate
stamp=.venv/.vlm_rlaif_install_stamp
want=$(cat settings.ini setup.py scripts/setup.sh | sha256sum | cut -d' ' -f1)   # this script too: what it installs is part of the set-up
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  python -m pip install -q --upgrade pip
  # torch first, pinned: on a CPU machine this takes the CPU build; an unpinned torch pulled in by the
  # package's requirements would fetch a multi-GB CUDA build.
  python -m pip install -q torch==2.13.0
  python -m pip install -q -e ".[dev]"
  # Triton's CPU interpreter runs the skinny product kernel in tests/test_model.py. A CUDA torch brings its own Triton
  # (left as it is: torch.compile needs that one); a CPU torch none. Pinned: the interpreter changes between releases
  # (3.6's rejects the kernel). Linux wheels only.
  if [ "$(uname -s)" = Linux ] && ! python -c "import triton" 2>/dev/null; then python -m pip install -q triton==3.9.0; fi
  # the notebooks' kernel, registered inside the venv so that papermill and nbdev_test use this Python
  python -m ipykernel install --sys-prefix --name python3 --display-name python3 >/dev/null
  echo "$want" > "$stamp"
fi
# nothing in the default run needs the network; a hub lookup without one hangs before failing
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} HF_DATASETS_OFFLINE=${HF_DATASETS_OFFLINE:-1}

# Sourced by the setup scripts: pip_install PYTHON ARGS... installs into PYTHON's environment.
# pip's output stays visible (less one known harmless warning about this machine's local package
# indexes); the status is pip's own (the scripts set pipefail), so a failed install stops them.
pip_install() { "$1" -m pip install -q --disable-pip-version-check "${@:2}" 2>&1 | { grep -v "is ignored: it is neither" || true; }; }

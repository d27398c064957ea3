# Sourced by the setup scripts (before they change to the repository's folder, so that a relative
# PYTHON names a file from where the user ran the script).
caller_dir="$PWD"
# absolute_python NAME: a path with a slash made absolute against the caller's folder; a bare
# command name (python3.11) is left to PATH.
absolute_python() {
    case "$1" in
        "" | /*) echo "$1" ;;
        */*) echo "$caller_dir/${1#./}" ;;
        *) echo "$1" ;;
    esac
}
works() { [ -n "$1" ] && "$1" -c "import sys; sys.exit(sys.version_info[:2] != ($2))" >/dev/null 2>&1; }
# find_python X.Y CANDIDATE...: the first candidate that is Python X.Y, else pyenv's own install of it
# (python3.X may be a pyenv shim that is not active here); prints nothing when there is none.
find_python() {
    local want="$1" candidate
    shift
    for candidate in "$@" "python$want" "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$want".*/bin/"python$want"; do
        if works "$candidate" "${want/./, }"; then echo "$candidate"; return; fi
    done
}

# Sourced by scripts that need the real Procrastinate library: creates (or
# refreshes, when the requirements changed) the virtual environment in .venv
# from the compatibility tests' pinned requirements. Run from the repository
# root.
ensure_venv() {
    local requirements=crates/dawdle/tests/python/requirements.txt
    if [ ! -x .venv/bin/python ] || ! cmp -s "$requirements" .venv/requirements.installed; then
        printf '==> %s\n' "creating the Python virtual environment in .venv (procrastinate $(grep -o 'procrastinate==[^ ]*' "$requirements" | cut -d= -f3))" >&2
        python3 -m venv .venv
        .venv/bin/pip install --quiet --disable-pip-version-check -r "$requirements"
        cp "$requirements" .venv/requirements.installed
    fi
}

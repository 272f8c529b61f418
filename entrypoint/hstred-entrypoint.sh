#!/usr/bin/env bash
# Entrypoint of the hstred container images (Dockerfile, apptainer.def).
#
#   (no arguments)                  hstred --help
#   OUTNAME [OPTIONS]               hstred run OUTNAME [OPTIONS]
#   SUBCOMMAND [ARGS]               hstred SUBCOMMAND [ARGS]   (simulate, calibrate, run, ...)
#   -h | --help | --version ...     hstred -h | --help | --version ...
#   hstred [ARGS]                   hstred [ARGS]
#
# A first word that names an hstred subcommand is that subcommand; to reduce into a product
# stem spelled like a subcommand, say `run NAME`.
#
# Started as root (`docker run --user 0`), the command runs as the owner of the data directory
# ($HSTRED_DATA, default /data, else the working directory) so that the products belong to
# whoever owns the mounted directory on the host. Set HSTRED_KEEP_ROOT=1 to stay root.
#
# Environment: HSTRED_DATA, HSTRED_KEEP_ROOT, HSTRED_PYTHON (the interpreter hstred is
# installed in; default: python on PATH).
set -euo pipefail

readonly PROG=hstred-entrypoint

die() {
    printf '%s: error: %s\n' "$PROG" "$1" >&2
    exit "${2:-1}"
}

warn() {
    printf '%s: warning: %s\n' "$PROG" "$*" >&2
}

# The data directory whose owner the command runs as when started as root.
data_dir() {
    local dir=${HSTRED_DATA:-/data}
    if [[ -d $dir ]]; then
        printf '%s\n' "$dir"
    else
        printf '%s\n' "$PWD"
    fi
}

# hstred's subcommand names, one a line, read from the installed command line itself so new
# subcommands need no change here.
list_subcommands() {
    "${HSTRED_PYTHON:-python}" -c 'import typer.main, hstred.cli
print(*sorted(typer.main.get_command(hstred.cli.app).commands), sep="\n")' 2>/dev/null ||
        die "cannot list hstred's subcommands with ${HSTRED_PYTHON:-python}; is hstred installed?"
}

# Exits (through list_subcommands) when the names cannot be read, even inside a condition.
is_subcommand() {
    local names
    names=$(list_subcommands) || exit
    [[ $'\n'$names$'\n' == *$'\n'"$1"$'\n'* ]]
}

# Sets HSTRED_ARGS to the arguments for hstred.
map_arguments() {
    if (($# == 0)); then
        HSTRED_ARGS=(--help)
    elif [[ $1 == hstred ]]; then
        shift
        if (($# == 0)); then HSTRED_ARGS=(--help); else HSTRED_ARGS=("$@"); fi
    elif [[ $1 == -* ]] || is_subcommand "$1"; then
        HSTRED_ARGS=("$@")
    else
        HSTRED_ARGS=(run "$@")
    fi
}

# Started as root: re-run this script as the owner of the data directory (root-owned: stay).
drop_root() {
    [[ $(id -u) == 0 && ${HSTRED_KEEP_ROOT:-0} != 1 ]] || return 0
    local dir uid gid
    dir=$(data_dir)
    uid=$(stat -c %u "$dir")
    gid=$(stat -c %g "$dir")
    [[ $uid != 0 ]] || return 0
    command -v setpriv >/dev/null || die "setpriv (util-linux) is needed to run as uid $uid"
    exec setpriv --reuid="$uid" --regid="$gid" --clear-groups -- \
        "${BASH:-bash}" "${BASH_SOURCE[0]}" "$@"
}

# A uid without a passwd entry (--user 1234:1234, or after drop_root) gets a private HOME so
# astropy, matplotlib and CRDS have somewhere to keep their configuration.
ensure_home() {
    if [[ -z ${HOME:-} || ! -d $HOME || ! -w $HOME ]]; then
        local home
        home=${TMPDIR:-/tmp}/hstred-home-$(id -u)
        if mkdir -p "$home" 2>/dev/null; then
            export HOME=$home
        fi
    fi
}

wants_only_help() {
    local arg
    for arg in "$@"; do
        case $arg in -h | --help | --version) return 0 ;; esac
    done
    return 1
}

main() {
    drop_root "$@"
    ensure_home
    map_arguments "$@"
    if ! wants_only_help "${HSTRED_ARGS[@]}" && [[ ! -w $PWD ]]; then
        warn "$PWD is not writable by uid $(id -u); mount a directory you own there: docker run" \
            "--user \"\$(id -u):\$(id -g)\" -v \"\$PWD\":/data ... or apptainer run --bind" \
            "\"\$PWD\":/data ..."
    fi
    exec hstred "${HSTRED_ARGS[@]}"
}

main "$@"

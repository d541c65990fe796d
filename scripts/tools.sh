# need_tools, shared by every script here and in image/ (issue #11: each script installs the
# tools it needs, idempotently). Sourced, not run.
# shellcheck shell=bash

# need_tools CMD:PACKAGE ...: installs the Debian packages of the commands that are missing
# (not on PATH, /usr/sbin or /sbin; a CMD starting with / is a file that must exist, e.g. a
# ROM qemu loads), with apt-get as root or through `sudo -n`; does nothing when everything is
# there. Fails with the apt-get line to run when it cannot install.
need_tools() {
    local missing=() cp c p m have
    for cp in "$@"; do
        c=${cp%%:*}
        p=${cp#*:}
        case $c in
            /*) [ -e "$c" ] && continue ;;
            *) { command -v "$c" || [ -x "/usr/sbin/$c" ] || [ -x "/sbin/$c" ]; } >/dev/null 2>&1 && continue ;;
        esac
        have=false
        for m in "${missing[@]}"; do [ "$m" = "$p" ] && have=true; done
        $have || missing+=("$p")
    done
    [ ${#missing[@]} -gt 0 ] || return 0
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
            sudo=(sudo -n)
        else
            printf '%s: ERROR: needs %s: sudo apt-get install %s\n' "${PROG:-${0##*/}}" \
                "${missing[*]}" "${missing[*]}" >&2
            return 1
        fi
    fi
    printf '%s: installing %s\n' "${PROG:-${0##*/}}" "${missing[*]}" >&2
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        "${missing[@]}" >&2 || {
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
            "${missing[@]}" >&2
    }
}

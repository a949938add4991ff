# Every pty script starts with this (src/copy/transport/pty.rs puts it first, then the
# script's data, then the script). `fail CLASS MESSAGE` undoes what the script staged
# (the `cleanup` function each script defines) and reports on the terminal.
set -u
fail() { cleanup; printf '\036SSMCP-PTY FAIL %s %s\n' "$1" "$2"; exit 1; }
trap 'cleanup; exit 1' HUP INT TERM

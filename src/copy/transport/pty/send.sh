# A download's data (src/copy/transport/pty.rs, `send_script`): each file as a marker
# `F I`, its base64 on one line, then its SHA-256.
#
# The data, written before this by ssmcp:
#   "$@"     the sources as typed (no trailing /), top I being the I-th
#   files()  `f I TOP REL` per file, REL its path below its top
# shellcheck disable=SC2154

cleanup() { :; }
i=0
for p do
  eval "P$i=\$p"
  i=$((i + 1))
done
f() {
  eval "p=\$P$2"
  [ -z "$3" ] || p=$p/$3
  printf '\036%s\n' "SSMCP-PTY F $1"
  base64 -w0 < "$p" || fail source "cannot read a file"
  printf '\n'
  sha256sum < "$p"
}
files
printf '\036%s\n' 'SSMCP-PTY OK'

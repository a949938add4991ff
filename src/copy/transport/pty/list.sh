# A download's listing (src/copy/transport/pty.rs, `list_script`): check every source,
# then list them all with find, base64-encoded (terminal output must stay ASCII).
#
# The data, written before this by ssmcp:
#   RECURSIVE  1 with -r
#   sources()  `src CONTENTS PATH` per source as typed (CONTENTS=1 for `dir/`)
# shellcheck disable=SC2154

cleanup() { :; }
src() {
  case $PHASE in
    check)
      [ -e "$2" ] || fail source "$2: No such file or directory"
      [ "$RECURSIVE" = 1 ] || [ ! -d "$2" ] || fail usage "$2 is a directory (use -r to copy directories)"
      [ "$1" = 0 ] || [ -d "$2" ] || fail usage "$2 is not a directory" ;;
    list)
      # A top marker, then entries: type mode mtime size relpath NUL linktarget NUL.
      printf 'T%s\0' "$1"
      basename "$2" | tr -d '\n'
      printf '\0'
      find -H "$2" -printf '%y %m %T@ %s %P\0%l\0' ;;
  esac
}
PHASE=check
sources
printf '\036%s\n' 'SSMCP-PTY LIST'
{ PHASE=list; sources; } | base64 -w0 || fail source "listing failed"
printf '\n\036%s\n' 'SSMCP-PTY OK'

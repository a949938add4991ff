# An upload over the terminal (src/copy/transport/pty.rs, `upload_script`): resolve the
# destination with the receiver's rules, make the directories the plan needs, decode the
# data into temporaries, check every SHA-256, then rename everything into place.
#
# The data, written before this by ssmcp as plain assignments and calls with quoted words:
#   D            the destination (no trailing /)
#   SLASH        1 when the destination was typed with a trailing /
#   SINGLE_FILE  1 when the only source is one file
#   TAG B64 PRESERVE NFILES TOTAL
#                temporaries' tag, base64 characters to read, -p, the summary
#   "$@"         the sources' top names (. for a source's contents)
#   plan()       `mk N t|d TOP REL` for each directory to make, parents first;
#                `file TOP PARENT NAME SIZE MODE MTIME` and
#                `link TOP PARENT NAME TARGET MTIME` in data order;
#                `dir TOP REL MODE MTIME` deepest first (only with -p)
#   unmade()     `unmk N TOP REL` for the same directories, children first
# SC2154: the data above is assigned outside this file; SC2317: cleanup runs from fail and
# from the trap, which shellcheck does not follow.
# shellcheck disable=SC2154,SC2317

MADE=
cleanup() { :; }
if [ -d "$D" ]; then
  INTO=1
elif [ -e "$D" ] || [ -L "$D" ]; then
  { [ "$SINGLE_FILE" = 1 ] && [ "$SLASH" = 0 ]; } || fail usage "$D exists and is not a directory"
  INTO=0
else
  [ -d "$(dirname "$D")" ] || fail usage "the destination directory $(dirname "$D") does not exist"
  if [ "$#" = 1 ] && [ "$SLASH" = 0 ]; then
    INTO=0
  elif [ "$SLASH" = 1 ]; then
    mkdir "$D" || fail permission "cannot create directory $D"
    MADE=$D
    INTO=1
  else
    fail usage "$D is not a directory (several sources need one; end it with / to create it)"
  fi
fi
# R<i>: where top i lands.
i=0
for name do
  if [ "$INTO" = 1 ] && [ "$name" != . ]; then eval "R$i=\$D/\$name"; else eval "R$i=\$D"; fi
  i=$((i + 1))
done

# P: the path REL below top TOP's root.
at() { eval "P=\$R$1"; [ -z "$2" ] || P=$P/$2; }
# F and T: an entry's final path and its temporary beside it. A single-file top lands at
# its root itself; its temporary is named for the top, since several may share a directory.
names() {
  at "$1" "$2"
  if [ -z "$3" ]; then F=$P; T="${P%/*}/.R$1.ssmcp-$TAG.$4"
  else F=$P/$3; T="$P/.$3.ssmcp-$TAG.$4"; fi
}

# A directory the plan needs: `t` is a top's root (an existing directory there, or a link
# to one, is used as scp does), `d` anything below it (a symlink there is refused). Each
# one made is noted (C<N>=1) so that cleanup removes exactly those, whatever their names.
mk() {
  [ "$PHASE" = dirs ] || return 0
  at "$3" "$4"
  if [ "$2" = d ] && [ -L "$P" ]; then fail protocol "refusing to write through the symlink $P"; fi
  if [ -d "$P" ]; then
    :
  elif [ -e "$P" ] || [ -L "$P" ]; then
    fail usage "$P exists and is not a directory"
  else
    mkdir "$P" || fail permission "cannot create directory $P"
    eval "C$1=1"
  fi
}
unmk() {
  eval "made=\${C$1:-}"
  [ -z "$made" ] || { at "$2" "$3"; rmdir "$P" 2>/dev/null; }
  return 0
}

file() {
  names "$1" "$2" "$3" tmp
  case $PHASE in
    clean) rm -f "$T" ;;
    data) [ -n "$W" ] || head -c "$4" > "$T" || W=1 ;;
    verify)
      IFS= read -r h
      { [ -f "$T" ] && [ "$(sha256sum < "$T" | cut -c1-64)" = "$h" ]; } || BAD=1 ;;
    meta)
      if [ "$PRESERVE" = 1 ]; then
        chmod "$5" "$T" || fail permission "cannot set a mode"
        touch -h -d "@$6" "$T"
      else
        chmod "$(printf %o $((0$5 & ~0$U)))" "$T" || fail permission "cannot set a mode"
      fi ;;
    check) moveable ;;
    move) mv -fT "$T" "$F" || fail write "cannot put a file in place" ;;
  esac
}

link() {
  names "$1" "$2" "$3" lnk
  case $PHASE in
    clean) rm -f "$T" ;;
    meta)
      ln -s -- "$4" "$T" || fail permission "cannot create a symlink"
      [ "$PRESERVE" = 0 ] || touch -h -d "@$5" "$T" ;;
    check) moveable ;;
    move) mv -fT "$T" "$F" || fail write "cannot put a file in place" ;;
  esac
}

# No directory may sit where a file or link goes; all are checked before the first rename.
moveable() {
  if [ -d "$F" ] && [ ! -L "$F" ]; then fail usage "cannot overwrite a directory with a file"; fi
}

dir() {
  [ "$PHASE" = dirmeta ] || return 0
  at "$1" "$2"
  chmod "$3" "$P"
  touch -h -d "@$4" "$P"
}

# Cleanup removes the temporaries and the directories made, deepest first; it is in force
# before the first directory is made.
cleanup() {
  PHASE=clean
  plan
  unmade
  [ -z "$MADE" ] || rmdir "$MADE" 2>/dev/null
  :
}
PHASE=dirs
plan

# The data: exactly B64 characters of base64 on the terminal, decoded and cut into the
# files in order. Nothing may write to the terminal meanwhile.
printf '\036%s\n' 'SSMCP-PTY SEND'
W=
head -c "$B64" | base64 -d | { PHASE=data; plan; [ -z "$W" ]; } 2>/dev/null || W=1
[ -z "$W" ] || fail write "writing the files failed (disk full or not permitted?)"
# The digests follow the data, one line per file.
BAD=
PHASE=verify
plan
[ -z "$BAD" ] || fail integrity "a SHA-256 did not match"
# Modes and times on the temporaries, links made beside their final names.
U=$(umask)
PHASE=meta
plan
PHASE=check
plan
PHASE=move
plan
cleanup() { :; }
PHASE=dirmeta
plan
printf '\036%s\n' "SSMCP-PTY OK $NFILES $TOTAL"

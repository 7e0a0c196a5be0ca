#!/usr/bin/env bash
# fetch_ck_source.sh — Debian's Concurrency Kit source, for the TSan build.
#
# Why: the TSan build compiles ck_epoch.c and ck_hs.c itself, instrumented
# and with the ck_pr overlay (cmake/ck_tsan_sources.cmake), because the
# stock libck.so is invisible to ThreadSanitizer (shared TSAN.md).  The
# source is Debian's own (`apt-get source ck`), the same release as the
# installed libck-dev, so the objects match the installed headers.
#
# Run as root on Debian 12.  Idempotent and cheap once cached:
#   - adds a deb-src entry for bookworm main (same archive URI and
#     Signed-By as the machine's deb entry: the Debian archive keyring) if
#     none exists, and runs `apt-get update` only then (or when the source
#     index is missing), removing the entry again if that fails;
#   - installs dpkg-dev (apt-get source unpacks with dpkg-source) if missing;
#   - runs `apt-get source ck` into the cache directory, default
#     /var/cache/ftmem/ck-src, or $FTMEM_CK_SOURCE_DIR; nothing is
#     downloaded when an unpacked tree is already there.
# Prints, as the only line on stdout, the directory holding ck's src/ and
# include/ (e.g. /var/cache/ftmem/ck-src/ck-0.7.1); messages go to stderr.
set -euo pipefail

cache=${FTMEM_CK_SOURCE_DIR:-/var/cache/ftmem/ck-src}
sources_file=/etc/apt/sources.list.d/ftmem-bookworm-src.sources
keyring=/usr/share/keyrings/debian-archive-keyring.gpg

say() { echo "fetch_ck_source: $*" >&2; }

# The installed libck-dev's Debian version (e.g. 0.7.1-10) and upstream
# version (0.7.1): the source must be that release, its tree ck-<upstream>.
ver=""
installed=$(dpkg-query -W -f='${db:Status-Abbrev} ${source:Version}' libck-dev 2>/dev/null || true)
[[ $installed != ii* ]] || ver=${installed##* }
upstream=${ver#*:}
upstream=${upstream%-*}

# The unpacked tree, if a previous run left a complete one.
find_tree() {
  local d
  for d in "$cache"/ck-${upstream:-*}/; do
    d=${d%/}
    if [ -f "$d/src/ck_epoch.c" ] && [ -f "$d/src/ck_hs.c" ] && [ -d "$d/include" ]; then
      echo "$d"
      return 0
    fi
  done
  return 1
}

if tree=$(find_tree); then
  echo "$tree"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  say "not cached in $cache, and fetching needs root (apt sources, dpkg-dev, the cache directory)"
  exit 1
fi

mkdir -p "$cache"
# One fetch at a time (two CI variants configuring at once, say); the loser
# finds the tree the winner unpacked.
exec 9>"$cache/.lock"
flock 9
if tree=$(find_tree); then
  echo "$tree"
  exit 0
fi

# Every apt source file: one-line style and deb822 style.
list_files=()
sources_files=()
[ -f /etc/apt/sources.list ] && list_files+=(/etc/apt/sources.list)
for f in /etc/apt/sources.list.d/*.list; do [ -f "$f" ] && list_files+=("$f"); done
for f in /etc/apt/sources.list.d/*.sources; do [ -f "$f" ] && sources_files+=("$f"); done

# Prints "URI<TAB>SIGNED-BY" (SIGNED-BY possibly empty) of the first enabled
# entry of type $1 for suite bookworm, component main (deb822 stanzas first,
# then one-line entries).
find_entry() {
  local type=$1
  {
    [ ${#sources_files[@]} -eq 0 ] || awk -v want="$type" '
      BEGIN { RS = ""; FS = "\n" }
      {
        types = ""; uris = ""; suites = ""; comps = ""; signed = ""; enabled = "yes"
        for (i = 1; i <= NF; i++) {
          line = $i
          if (line ~ /^[ \t]*#/) continue
          key = tolower(line); sub(/:.*/, "", key)
          val = line; sub(/^[^:]*:[ \t]*/, "", val)
          if (key == "types") types = " " val " "
          else if (key == "uris") uris = val
          else if (key == "suites") suites = " " val " "
          else if (key == "components") comps = " " val " "
          else if (key == "signed-by") signed = val
          else if (key == "enabled") enabled = tolower(val)
        }
        if (enabled != "no" && types ~ (" " want " ") && suites ~ / bookworm / &&
            comps ~ / main /) { split(uris, u, /[ \t]+/); print u[1] "\t" signed; exit }
      }' "${sources_files[@]}"
    [ ${#list_files[@]} -eq 0 ] || awk -v want="$type" '
      $1 == want {
        i = 2; signed = ""
        if ($i ~ /^\[/) {
          for (; i <= NF; i++) {
            o = $i; gsub(/[][]/, "", o)
            if (o ~ /^signed-by=/) { sub(/^signed-by=/, "", o); signed = o }
            if ($i ~ /\]$/) break
          }
          i++
        }
        uri = $i; suite = $(i + 1)
        for (j = i + 2; j <= NF; j++)
          if (suite == "bookworm" && $j == "main") { print uri "\t" signed; exit }
      }' "${list_files[@]}"
  } | sed -n 1p # (not head: its early exit would fail the pipeline)
}

export DEBIAN_FRONTEND=noninteractive
need_update=false
added=false
if [ -n "$(find_entry deb-src)" ]; then
  say "a deb-src entry for bookworm main exists"
else
  IFS=$'\t' read -r uri signed <<<"$(find_entry deb)" || true
  if [ -z "$uri" ]; then
    uri=http://deb.debian.org/debian signed=$keyring
    say "no deb entry for bookworm main found; using $uri"
  fi
  # apt refuses two entries for one URI and suite with different Signed-By
  # (deb and deb-src alike), so the deb entry's value is taken: on Debian 12
  # the archive keyring.  An entry without one (keys in trusted.gpg.d) gets
  # a deb-src without one.
  [ -z "$signed" ] || [ -f "$signed" ] || { say "$signed missing (install debian-archive-keyring)"; exit 1; }
  say "adding $sources_file (deb-src $uri bookworm main${signed:+, signed by $signed})"
  {
    echo "# Added by ftmem's .ci/fetch_ck_source.sh: Debian source packages (ck), for"
    echo "# the ThreadSanitizer build."
    echo "Types: deb-src"
    echo "URIs: $uri"
    echo "Suites: bookworm"
    echo "Components: main"
    [ -z "$signed" ] || echo "Signed-By: $signed"
  } >"$sources_file"
  need_update=true added=true
fi
# Also when the entry was there but its index was never fetched.  (The
# output is captured before grep reads it: grep -q stopping early would fail
# the pipeline under pipefail.)
if ! $need_update && ! grep -q '^Package: ck$' <<<"$(apt-cache showsrc ck 2>/dev/null || true)"; then
  need_update=true
fi
if $need_update; then
  say "apt-get update"
  if ! apt-get update -q >&2; then
    # Leave apt as it was: a bad entry would break every later apt command.
    if $added; then rm -f "$sources_file"; say "apt-get update failed: $sources_file removed"; fi
    exit 1
  fi
fi

if ! command -v dpkg-source >/dev/null 2>&1; then
  say "installing dpkg-dev"
  apt-get install -y -q --no-install-recommends dpkg-dev >&2
fi

# The same Debian version as the installed libck-dev when the archive still
# has it (another release's deb-src, e.g. trixie's for liburcu, may list a
# newer ck); else the newest ck of bookworm.
want=ck/bookworm
if [ -n "$ver" ]; then
  if grep -qx "Version: $ver" <<<"$(apt-cache showsrc ck 2>/dev/null || true)"; then
    want="ck=$ver"
  else
    say "ck $ver (installed libck-dev) is not in the archive any more; fetching $want"
  fi
fi

# Unpack in a scratch directory and move the tree into place only when
# complete, so an interrupted run never leaves a half tree that looks cached.
# The _apt user must be able to write there (apt drops root to download).
tmp=$(mktemp -d "$cache/.fetch.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
chmod 0755 "$tmp"
chown _apt "$tmp" 2>/dev/null || true
say "apt-get source $want into $cache"
(cd "$tmp" && apt-get source -q "$want" >&2)
got=$(find "$tmp" -mindepth 1 -maxdepth 1 -type d -name 'ck-*' | sed -n 1p)
if [ -z "$got" ] || [ ! -f "$got/src/ck_epoch.c" ]; then
  say "apt-get source gave no ck-*/src/ck_epoch.c in $tmp"
  exit 1
fi
rm -rf "${cache:?}/${got##*/}" # an incomplete tree left by someone else
mv "$got" "$cache/"
tree=$(find_tree) || { say "apt-get source gave ${got##*/}, not ck-$upstream (libck-dev's release)"; exit 1; }
say "ck source in $tree"
echo "$tree"

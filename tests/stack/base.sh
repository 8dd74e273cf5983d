#!/usr/bin/env bash
# Build the stack test's base image (no image can be pulled here): Debian bookworm from
# `debootstrap --variant=minbase` with Python 3.11 and the host's extra CA certificates, imported as
# $BASE_TAG. Skipped when an image with the same recipe hash exists. Needs DOCKER_HOST set and
# STACK_CACHE (a folder outside the repo). Test-only: the user's images keep their upstream bases.
set -euo pipefail
: "${STACK_CACHE:?}" "${BASE_TAG:?}"
MIRROR=${COTD_STACK_MIRROR:-http://deb.debian.org/debian}
PACKAGES=python3,python3-venv,ca-certificates
RECIPE_VERSION=1 # bump when the steps below change
recipe=$( (echo "$RECIPE_VERSION $PACKAGES $MIRROR"; ls /usr/local/share/ca-certificates/ 2>/dev/null; cat /usr/local/share/ca-certificates/*.crt 2>/dev/null) | sha256sum | cut -c1-16)
if [ "$(docker image inspect -f '{{index .Config.Labels "cotd.recipe"}}' "$BASE_TAG" 2>/dev/null)" = "$recipe" ]; then
  echo "base image $BASE_TAG is current (recipe $recipe)"
  exit 0
fi
root="$STACK_CACHE/rootfs-$recipe"
if [ ! -e "$root/.complete" ]; then
  rm -rf "$root"
  echo "debootstrap bookworm into $root (about 3 min)"
  debootstrap --variant=minbase --include="$PACKAGES" bookworm "$root" "$MIRROR" >"$STACK_CACHE/debootstrap.log" 2>&1 \
    || { tail -20 "$STACK_CACHE/debootstrap.log"; echo "stack: debootstrap failed" >&2; exit 1; }
  # Extra CA certificates of this machine (pip over HTTPS goes through them here).
  if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
    chroot "$root" update-ca-certificates >/dev/null
  fi
  chroot "$root" apt-get clean
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/log/* "$root"/usr/share/doc/* "$root"/usr/share/man/*
  touch "$root/.complete"
fi
tar --exclude=./.complete -C "$root" -c . | docker import \
  -c "LABEL cotd.recipe=$recipe" -c 'ENV LANG=C.UTF-8' -c 'CMD ["/bin/bash"]' - "$BASE_TAG" >/dev/null
rm -rf "$root"
echo "imported $BASE_TAG ($(docker image inspect -f '{{.Size}}' "$BASE_TAG" | numfmt --to=iec))"

#!/bin/sh
# Like the official image's entrypoint: with no --protected-mode given, turn protected mode off, so
# that other containers can connect (the container's network is the boundary, not Redis).
set -e
if [ "$1" = "redis-server" ]; then
  case " $* " in *" --protected-mode "*) ;; *) set -- "$@" --protected-mode no ;; esac
fi
exec "$@"

#!/bin/sh
# Resolves the digest of the builder image that containers/Dockerfile names by tag, so that
# builds use exactly that image from now on (a tag can be moved by its publisher; a digest
# cannot). Needs Docker with buildx and access to the registry.
#
#   containers/pin-builder.sh           prints the --build-arg to pass to docker build
#   containers/pin-builder.sh --write   writes the digest into containers/Dockerfile
set -eu
dockerfile="$(dirname "$0")/Dockerfile"
image=$(sed -n 's/^ARG RUST_IMAGE=\([^@]*\).*/\1/p' "$dockerfile")
[ -n "$image" ] || { echo "no 'ARG RUST_IMAGE=' line in $dockerfile" >&2; exit 1; }
# The first "Digest:" line is the index's (all platforms), which is what a pin must name.
digest=$(docker buildx imagetools inspect "$image" | awk '/^Digest:/ { print $2; exit }')
case "$digest" in
    sha256:*) ;;
    *) echo "could not read the digest of $image" >&2; exit 1 ;;
esac
if [ "${1:-}" = "--write" ]; then
    sed -i "s|^ARG RUST_IMAGE=.*|ARG RUST_IMAGE=$image@$digest|" "$dockerfile"
    echo "pinned $image@$digest in $dockerfile"
else
    echo "--build-arg RUST_IMAGE=$image@$digest"
fi

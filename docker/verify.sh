#!/usr/bin/env bash
# Build a container image of sim2real_fast with podman and run the test suite inside it.
#   docker/verify.sh          Dockerfile (CPU): build, then `pytest -m "not slow"` in the image
#   docker/verify.sh cuda     Dockerfile.cuda: build (S2R_CUDA=ON), then the same tests (CUDA cases skip
#                             without a GPU; the build-info test checks that the CUDA kernels were built)
# Environment:
#   BASE=IMAGE        the base image (default: the Dockerfile's). For the CPU image, when the default
#                     cannot be pulled and this runs as root with debootstrap installed, a Debian 12
#                     base is made from Debian's packages (DEBIAN_MIRROR) and imported as
#                     localhost/debian:bookworm-debootstrap.
#   TORCH=REQ, TORCH_INDEX=URL   passed to the build (TORCH_INDEX= empty: PyPI, or WHEELS below)
#   WHEELS=DIR        a folder of wheels that pip also looks in during the build (e.g. a local torch)
#   CA_BUNDLE=FILE    the CA certificates pip trusts during the build (behind a TLS-intercepting proxy)
#   TESTS="FILES..."  test paths relative to the repository root (default: python_tests)
#   PYTEST_ARGS=...   more pytest arguments; IMAGE=NAME the image's name
#   RUN_ARGS=...      more `podman run` options for the tests, e.g. --device nvidia.com/gpu=all (CDI)
#                     for the CUDA cases of the cuda image
#   SHARED_DATA=DIR   the real ROOT/HDF5 files some tests read (the checkout's ../shared/data), mounted
#                     read-only for the tests; without it those tests skip
# WHEELS and CA_BUNDLE reach the build through a mounted pip configuration: none of it is baked in.
# Builds run under nice; the tests run without network.
set -euo pipefail
cd "$(dirname "$0")/.."

flavour=${1:-cpu}
case "$flavour" in
  cpu) dockerfile=Dockerfile; expect_cuda=0 ;;
  cuda) dockerfile=Dockerfile.cuda; expect_cuda=1 ;;
  *) echo "docker/verify.sh: flavour must be cpu or cuda, got '$flavour'" >&2; exit 2 ;;
esac
IMAGE=${IMAGE:-sim2real-fast:$flavour}
TESTS=${TESTS:-python_tests}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
LOCAL_BASE=localhost/debian:bookworm-debootstrap
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

default_base=$(sed -n 's/^ARG BASE=//p' "$dockerfile")
base=${BASE:-$default_base}

# A Debian 12 base from Debian's packages, laid out like the official image (main, updates, security).
make_local_base() {
  if ! command -v debootstrap >/dev/null || [ "$(id -u)" != 0 ]; then
    echo "docker/verify.sh: cannot pull $base, and making a local base needs root and debootstrap" >&2; exit 1
  fi
  echo "=== $base cannot be pulled: making $LOCAL_BASE with debootstrap from $DEBIAN_MIRROR ==="
  nice -n 10 debootstrap --variant=minbase bookworm "$work/rootfs" "$DEBIAN_MIRROR" >"$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log" >&2; exit 1; }
  rm -f "$work/rootfs/etc/apt/sources.list"
  cat >"$work/rootfs/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $DEBIAN_MIRROR
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${DEBIAN_MIRROR%/debian}/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  rm -rf "$work"/rootfs/var/cache/apt/archives/*.deb "$work"/rootfs/var/lib/apt/lists/*
  tar -C "$work/rootfs" -c . | podman import - "$LOCAL_BASE" >/dev/null
  rm -rf "$work/rootfs"
}

if ! podman image exists "$base" && ! podman pull -q "$base" >/dev/null; then
  if [ "$flavour" = cpu ] && [ -z "${BASE:-}" ]; then
    podman image exists "$LOCAL_BASE" || make_local_base
    base=$LOCAL_BASE
  else
    echo "docker/verify.sh: cannot pull the base image $base" >&2; exit 1
  fi
fi

# podman's defaults (crun; open files and processes limits far above a normal shell's) fail to start a
# container in sandboxes without CAP_SYS_RESOURCE or with hybrid cgroups (v1 and v2 at once): there, runc
# and this shell's own hard limits are used.
podman=(podman)
limits=()
if ! podman run --rm --network=none "$base" true 2>"$work/trial.log"; then
  nproc=$(ulimit -Hu) pid_max=$(cat /proc/sys/kernel/pid_max)
  if [ "$nproc" = unlimited ] || [ "$nproc" -gt "$pid_max" ]; then nproc=$pid_max; fi
  podman=(podman --runtime runc)
  limits=(--ulimit "nofile=$(ulimit -Hn):$(ulimit -Hn)" --ulimit "nproc=$nproc:$nproc")
  "${podman[@]}" run --rm --network=none "${limits[@]}" "$base" true || {
    echo "docker/verify.sh: podman cannot start a container here: $(tail -1 "$work/trial.log")" >&2; exit 1; }
  echo "=== podman's defaults fail here ($(tail -1 "$work/trial.log")): runc, ${limits[*]} ==="
fi

build_args=(--build-arg "BASE=$base" "${limits[@]}")
if [ -n "${TORCH+set}" ]; then build_args+=(--build-arg "TORCH=$TORCH"); fi
if [ -n "${TORCH_INDEX+set}" ]; then build_args+=(--build-arg "TORCH_INDEX=$TORCH_INDEX"); fi
# pip's site configuration folder, mounted for the build only (an empty /etc/xdg/pip stays in the image).
mkdir -p "$work/pip/wheels"
echo "[global]" >"$work/pip/pip.conf"
build_args+=(-v "$work/pip:/etc/xdg/pip:ro")
if [ -n "${WHEELS:-}" ]; then
  echo "find-links = /etc/xdg/pip/wheels" >>"$work/pip/pip.conf"
  build_args+=(-v "$(realpath "$WHEELS"):/etc/xdg/pip/wheels:ro")
fi
if [ -n "${CA_BUNDLE:-}" ]; then
  cp "$CA_BUNDLE" "$work/pip/ca.crt"
  echo "cert = /etc/xdg/pip/ca.crt" >>"$work/pip/pip.conf"
fi

echo "=== building $IMAGE from $dockerfile on $base ==="
start=$SECONDS
nice -n 10 "${podman[@]}" build --network=host -f "$dockerfile" -t "$IMAGE" "${build_args[@]}" .
build_s=$((SECONDS - start))
size=$(podman image inspect --format '{{.Size}}' "$IMAGE")

tests=()
for t in $TESTS; do tests+=("/opt/sim2real_fast/$t"); done
data=()
if [ -n "${SHARED_DATA:-}" ]; then data=(-v "$(realpath "$SHARED_DATA"):/opt/shared/data:ro"); fi
echo "=== pytest ${tests[*]} -m \"not slow\" in $IMAGE ==="
start=$SECONDS
# shellcheck disable=SC2086
nice -n 10 "${podman[@]}" run --rm --network=none "${limits[@]}" "${data[@]}" ${RUN_ARGS:-} \
  -e S2R_EXPECT_CUDA=$expect_cuda --entrypoint pytest "$IMAGE" \
  "${tests[@]}" -m "not slow" -p no:cacheprovider --durations=15 ${PYTEST_ARGS:-}
test_s=$((SECONDS - start))
echo "$IMAGE: built in ${build_s} s on $base, $((size / 1000000)) MB; tests ${test_s} s"

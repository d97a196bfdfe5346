#!/usr/bin/env bash
# Creates everything the platform needs in a GCP project (billing on, T4 quota granted):
# a regional GKE cluster whose GPU node pool spans >= 2 zones and scales from 0, an Artifact
# Registry repository, a GCS bucket, and Workload Identity from the `dagster` Kubernetes
# service account to a Google service account that may use the bucket. No key files.
#
#   PROJECT_ID=my-project bash k8s/gke-setup.sh          # DRY_RUN=1 prints the commands only
#
# Re-running it skips what already exists. Every setting below can be overridden by env.
set -euo pipefail

: "${PROJECT_ID:?set PROJECT_ID to the GCP project id}"
REGION="${REGION:-asia-east1}"
NODE_LOCATIONS="${NODE_LOCATIONS:-asia-east1-a,asia-east1-c}"  # zones with T4s; >= 2
CLUSTER="${CLUSTER:-image-search}"
CPU_MACHINE_TYPE="${CPU_MACHINE_TYPE:-e2-standard-8}"
CPU_MAX_NODES="${CPU_MAX_NODES:-6}"
GPU_TYPE="${GPU_TYPE:-nvidia-tesla-t4}"  # must match default_gpu_type in platform.yaml
GPU_POOL="${GPU_POOL:-gpu-t4}"
GPU_MACHINE_TYPE="${GPU_MACHINE_TYPE:-n1-standard-16}"
GPUS_PER_NODE="${GPUS_PER_NODE:-4}"  # the largest category (tops) needs 4 on one node
GPU_MAX_NODES="${GPU_MAX_NODES:-5}"  # total over all zones: 5 x 4 = 20 >= the budget of 17
GPU_SPOT="${GPU_SPOT:-false}"  # true: Spot VMs (cheaper; preemption is retried per step)
BUCKET="${BUCKET:-${PROJECT_ID}-image-search}"
AR_REPO="${AR_REPO:-image-search}"
NAMESPACE="${NAMESPACE:-dagster}"
KSA="${KSA:-dagster}"  # global.serviceAccountName in k8s/helm/values.yaml
GSA="${GSA:-image-search}"
GSA_EMAIL="${GSA}@${PROJECT_ID}.iam.gserviceaccount.com"

IFS=, read -r -a ZONES <<< "${NODE_LOCATIONS}"
if (( ${#ZONES[@]} < 2 )); then
  echo "NODE_LOCATIONS must list at least two zones of ${REGION}, got '${NODE_LOCATIONS}'" >&2
  exit 1
fi

run() {  # runs a command, or prints it under DRY_RUN=1
  if [[ -n "${DRY_RUN:-}" ]]; then printf '%q ' "$@"; echo; else "$@"; fi
}

exists() {  # true if the describe command succeeds (never under DRY_RUN)
  [[ -z "${DRY_RUN:-}" ]] && "$@" > /dev/null 2>&1
}

run gcloud config set project "${PROJECT_ID}"
run gcloud services enable container.googleapis.com artifactregistry.googleapis.com \
  storage.googleapis.com iamcredentials.googleapis.com secretmanager.googleapis.com

exists gcloud artifacts repositories describe "${AR_REPO}" --location "${REGION}" ||
  run gcloud artifacts repositories create "${AR_REPO}" --repository-format docker \
    --location "${REGION}"

exists gcloud storage buckets describe "gs://${BUCKET}" ||
  run gcloud storage buckets create "gs://${BUCKET}" --location "${REGION}" \
    --uniform-bucket-level-access

# Regional cluster: its control plane and default (CPU) pool span the same zones as the GPUs.
exists gcloud container clusters describe "${CLUSTER}" --location "${REGION}" ||
  run gcloud container clusters create "${CLUSTER}" \
    --location "${REGION}" \
    --node-locations "${NODE_LOCATIONS}" \
    --release-channel regular \
    --workload-pool "${PROJECT_ID}.svc.id.goog" \
    --enable-ip-alias \
    --machine-type "${CPU_MACHINE_TYPE}" \
    --num-nodes 1 \
    --enable-autoscaling --total-min-nodes 1 --total-max-nodes "${CPU_MAX_NODES}"

# GPU pool: from 0 nodes, in any of its zones that has T4s (location policy ANY: a stock-out in
# one zone is served from the other), tainted so only pods that tolerate the taint land here.
spot=()
[[ "${GPU_SPOT}" == "true" ]] && spot=(--spot)
exists gcloud container node-pools describe "${GPU_POOL}" --cluster "${CLUSTER}" \
  --location "${REGION}" ||
  run gcloud container node-pools create "${GPU_POOL}" \
    --cluster "${CLUSTER}" \
    --location "${REGION}" \
    --node-locations "${NODE_LOCATIONS}" \
    --machine-type "${GPU_MACHINE_TYPE}" \
    --accelerator "type=${GPU_TYPE},count=${GPUS_PER_NODE},gpu-driver-version=default" \
    --num-nodes 0 \
    --enable-autoscaling --total-min-nodes 0 --total-max-nodes "${GPU_MAX_NODES}" \
    --location-policy ANY \
    --node-taints nvidia.com/gpu=present:NoSchedule \
    --node-labels image-search/pool=gpu \
    --workload-metadata GKE_METADATA \
    --disk-size 200 \
    "${spot[@]}"

# Workload Identity: pods running as ${NAMESPACE}/${KSA} act as ${GSA_EMAIL}.
exists gcloud iam service-accounts describe "${GSA_EMAIL}" ||
  run gcloud iam service-accounts create "${GSA}" --display-name "image-search platform"
run gcloud storage buckets add-iam-policy-binding "gs://${BUCKET}" \
  --member "serviceAccount:${GSA_EMAIL}" --role roles/storage.objectAdmin
run gcloud iam service-accounts add-iam-policy-binding "${GSA_EMAIL}" \
  --role roles/iam.workloadIdentityUser \
  --member "serviceAccount:${PROJECT_ID}.svc.id.goog[${NAMESPACE}/${KSA}]"

# Nodes pull the image with the project's default compute service account.
if [[ -n "${DRY_RUN:-}" ]]; then
  project_number=PROJECT_NUMBER
else
  project_number="$(gcloud projects describe "${PROJECT_ID}" --format 'value(projectNumber)')"
fi
run gcloud artifacts repositories add-iam-policy-binding "${AR_REPO}" --location "${REGION}" \
  --member "serviceAccount:${project_number}-compute@developer.gserviceaccount.com" \
  --role roles/artifactregistry.reader

# The Dagster Postgres password lives in Secret Manager, not in any file.
if ! exists gcloud secrets describe dagster-pg-password; then
  if [[ -n "${DRY_RUN:-}" ]]; then
    echo "openssl rand -hex 24 | gcloud secrets create dagster-pg-password --data-file -"
  else
    openssl rand -hex 24 | tr -d '\n' |
      gcloud secrets create dagster-pg-password --replication-policy automatic --data-file -
  fi
fi

run gcloud container clusters get-credentials "${CLUSTER}" --location "${REGION}"
if [[ -z "${DRY_RUN:-}" ]]; then
  kubectl create namespace "${NAMESPACE}" --dry-run=client -o yaml | kubectl apply -f -
fi
echo "Cluster ${CLUSTER} is ready in ${REGION} (${NODE_LOCATIONS}); bucket gs://${BUCKET}."

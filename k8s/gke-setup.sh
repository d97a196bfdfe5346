#!/usr/bin/env bash
# Creates everything the platform needs in a GCP project (billing on, T4 quota granted):
# a regional GKE cluster whose GPU node pool spans >= 2 zones and scales from 0, an Artifact
# Registry repository, GCS buckets, and Workload Identity: each pod kind's Kubernetes service
# account maps to a Google service account of its own, with only the access it uses. No keys.
#
#   PROJECT_ID=my-project bash k8s/gke-setup.sh          # DRY_RUN=1 prints the commands only
#
# Also: Dataplane V2 (NetworkPolicy enforcement), private nodes, authorized control-plane
# networks, a minimal node service account, Cloud SQL on a private IP, Cloud NAT, and Google
# APIs on a private range (Private Google Access + a private DNS zone).
# Re-running it skips what already exists. Every setting below can be overridden by env.
set -euo pipefail

: "${PROJECT_ID:?set PROJECT_ID to the GCP project id}"
REGION="${REGION:-asia-east1}"
NODE_LOCATIONS="${NODE_LOCATIONS:-asia-east1-a,asia-east1-c}"  # zones with T4s; >= 2
CLUSTER="${CLUSTER:-image-search}"
CPU_MACHINE_TYPE="${CPU_MACHINE_TYPE:-e2-standard-8}"
CPU_MAX_NODES="${CPU_MAX_NODES:-6}"
# GPU_CLASSES=true (platform.yaml lists GPU options): no fixed GPU pool; GKE creates the node
# pools of the ComputeClasses in k8s/gpu/ (GKE >= 1.33.3-gke.1136000) and the script checks the
# quota of every option. false (a single default_gpu_type): the one GPU node pool below.
GPU_CLASSES="${GPU_CLASSES:-true}"
GPU_TYPE="${GPU_TYPE:-nvidia-tesla-t4}"  # GPU_CLASSES=false: must match default_gpu_type
GPU_POOL="${GPU_POOL:-gpu-t4}"
GPU_MACHINE_TYPE="${GPU_MACHINE_TYPE:-n1-standard-16}"
GPUS_PER_NODE="${GPUS_PER_NODE:-4}"  # the largest category (tops) needs 4 on one node
GPU_MAX_NODES="${GPU_MAX_NODES:-5}"  # total over all zones: 5 x 4 = 20 >= the budget of 17
GPU_SPOT="${GPU_SPOT:-false}"  # true: Spot VMs (cheaper; preemption is retried per step)
BUCKET="${BUCKET:-${PROJECT_ID}-image-search}"
AR_REPO="${AR_REPO:-image-search}"
NAMESPACE="${NAMESPACE:-dagster}"
CATALOG_BUCKET="${CATALOG_BUCKET:-${PROJECT_ID}-image-search-catalog}"  # catalog + checkpoints
# Control plane reachable only from these networks (your office/VPN); private nodes.
AUTHORIZED_NETWORKS="${AUTHORIZED_NETWORKS:-203.0.113.0/24}"  # replace: documentation range
MASTER_CIDR="${MASTER_CIDR:-172.16.0.0/28}"  # k8s/policy/network-policies.yaml allows it
PG_RANGE="${PG_RANGE:-10.100.0.0/16}"  # Cloud SQL private range; network-policies.yaml too
# private.googleapis.com: pods reach GCS here and nowhere else (network-policies.yaml too).
GOOGLE_APIS_RANGE="${GOOGLE_APIS_RANGE:-199.36.153.8/30}"
NODE_SA="image-search-node@${PROJECT_ID}.iam.gserviceaccount.com"
sa() { echo "image-search-$1@${PROJECT_ID}.iam.gserviceaccount.com"; }

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
  storage.googleapis.com iamcredentials.googleapis.com secretmanager.googleapis.com \
  sqladmin.googleapis.com servicenetworking.googleapis.com dns.googleapis.com

exists gcloud artifacts repositories describe "${AR_REPO}" --location "${REGION}" ||
  run gcloud artifacts repositories create "${AR_REPO}" --repository-format docker \
    --location "${REGION}"

# Two buckets: artefacts (indexes, logs: steps write) and inputs (catalog, checkpoints: read-only
# for every pod). Separate buckets, because IAM conditions on prefixes do not cover listing.
for b in "${BUCKET}" "${CATALOG_BUCKET}"; do
  exists gcloud storage buckets describe "gs://${b}" ||
    run gcloud storage buckets create "gs://${b}" --location "${REGION}" \
      --uniform-bucket-level-access --public-access-prevention
done

# A minimal node service account (logging, metrics, image pulls), not the default compute one.
exists gcloud iam service-accounts describe "${NODE_SA}" ||
  run gcloud iam service-accounts create image-search-node --display-name "image-search nodes"
for role in roles/logging.logWriter roles/monitoring.metricWriter roles/monitoring.viewer \
  roles/stackdriver.resourceMetadata.writer; do
  run gcloud projects add-iam-policy-binding "${PROJECT_ID}" --condition None \
    --member "serviceAccount:${NODE_SA}" --role "${role}"
done

# Regional cluster: its control plane and default (CPU) pool span the same zones as the GPUs.
exists gcloud container clusters describe "${CLUSTER}" --location "${REGION}" ||
  run gcloud container clusters create "${CLUSTER}" \
    --location "${REGION}" \
    --node-locations "${NODE_LOCATIONS}" \
    --release-channel regular \
    --workload-pool "${PROJECT_ID}.svc.id.goog" \
    --enable-ip-alias \
    --enable-dataplane-v2 \
    --enable-private-nodes --master-ipv4-cidr "${MASTER_CIDR}" \
    --enable-master-authorized-networks --master-authorized-networks "${AUTHORIZED_NETWORKS}" \
    --enable-shielded-nodes --shielded-secure-boot \
    --service-account "${NODE_SA}" \
    --workload-metadata GKE_METADATA \
    --machine-type "${CPU_MACHINE_TYPE}" \
    --num-nodes 1 \
    --enable-autoscaling --total-min-nodes 1 --total-max-nodes "${CPU_MAX_NODES}"

# GPU options: each one's regional quota must cover the day's GPU budget, since any one of
# them may have to carry the whole day (k8s/gpu/quotas.tsv, from platform.yaml).
if [[ "${GPU_CLASSES}" == "true" ]]; then
  while IFS=$'\t' read -r metric needed; do
    if [[ -n "${DRY_RUN:-}" ]]; then
      echo "quota check: ${metric} >= ${needed} in ${REGION}"
      continue
    fi
    limit=$(gcloud compute regions describe "${REGION}" --flatten quotas \
      --filter "quotas.metric=${metric}" --format 'value(quotas.limit)')
    if [[ -z "${limit}" ]] || (( ${limit%.*} < needed )); then
      echo "quota ${metric} in ${REGION} is '${limit}', the GPU options need ${needed}" >&2
      exit 1
    fi
  done < "$(dirname "$0")/gpu/quotas.tsv"
fi

# GPU pool (GPU_CLASSES=false): from 0 nodes, in any of its zones that has T4s (location policy
# ANY: a stock-out in one zone is served from the other), tainted so only pods that tolerate
# the taint land here.
spot=()
[[ "${GPU_SPOT}" == "true" ]] && spot=(--spot)
[[ "${GPU_CLASSES}" == "true" ]] ||
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
    --service-account "${NODE_SA}" \
    --shielded-secure-boot \
    --disk-size 200 \
    "${spot[@]}"

# Private nodes have no public IP: Cloud NAT for egress to image hosts.
exists gcloud compute routers describe image-search --region "${REGION}" ||
  run gcloud compute routers create image-search --network default --region "${REGION}"
exists gcloud compute routers nats describe image-search --router image-search \
  --region "${REGION}" ||
  run gcloud compute routers nats create image-search --router image-search --region "${REGION}" \
    --auto-allocate-nat-external-ips --nat-all-subnet-ip-ranges

# Google APIs over a private range: Private Google Access on the subnet, and a private DNS
# zone that answers every *.googleapis.com name with private.googleapis.com. The pods' network
# policies then allow GOOGLE_APIS_RANGE on 443 instead of the internet.
run gcloud compute networks subnets update default --region "${REGION}" \
  --enable-private-ip-google-access
exists gcloud dns managed-zones describe googleapis ||
  run gcloud dns managed-zones create googleapis --dns-name googleapis.com. \
    --visibility private --networks default --description "Google APIs on ${GOOGLE_APIS_RANGE}"
vip_base="${GOOGLE_APIS_RANGE%.*}"; vip_last="${GOOGLE_APIS_RANGE##*.}"; vip_last="${vip_last%/*}"
vips=$(for i in 0 1 2 3; do printf '%s.%s,' "${vip_base}" $((vip_last + i)); done)
exists gcloud dns record-sets describe private.googleapis.com. --zone googleapis --type A ||
  run gcloud dns record-sets create private.googleapis.com. --zone googleapis --type A \
    --ttl 300 --rrdatas "${vips%,}"
exists gcloud dns record-sets describe '*.googleapis.com.' --zone googleapis --type CNAME ||
  run gcloud dns record-sets create '*.googleapis.com.' --zone googleapis --type CNAME \
    --ttl 300 --rrdatas private.googleapis.com.

# Workload Identity, one Google account per pod kind (docs/security.md, "Identity"):
#   control (dagster-webserver): reads compute logs (the daemon, dagster, has none);
#   run (dagster-run-worker): reads and writes compute logs;
#   code (dagster-code-server): reads inputs and artefacts;
#   step (dagster-step): reads inputs, writes artefacts;
#   serving (image-search-serving): reads inputs and artefacts, writes nothing.
grant() {  # grant ROLE BUCKET KIND [CONDITION_EXPRESSION CONDITION_TITLE]
  local condition=(--condition None)
  [[ $# -gt 3 ]] && condition=(--condition "expression=$4,title=$5")
  run gcloud storage buckets add-iam-policy-binding "gs://$2" \
    --member "serviceAccount:$(sa "$3")" --role "$1" "${condition[@]}"
}
for kind in control run code step serving; do
  exists gcloud iam service-accounts describe "$(sa "${kind}")" ||
    run gcloud iam service-accounts create "image-search-${kind}" --display-name "image-search ${kind}"
done
grant roles/storage.objectViewer "${CATALOG_BUCKET}" code
grant roles/storage.objectViewer "${BUCKET}" code
grant roles/storage.objectViewer "${CATALOG_BUCKET}" step
grant roles/storage.objectUser "${BUCKET}" step
# Serving reads indexes, items tables and stored images, and for image queries a checkpoint.
grant roles/storage.objectViewer "${CATALOG_BUCKET}" serving
grant roles/storage.objectViewer "${BUCKET}" serving
# Prefix-limited accounts (IAM conditions on the object name).
prefix() { echo "resource.name.startsWith(\"projects/_/buckets/${BUCKET}/objects/$1\")"; }
logs=$(prefix dagster-compute-logs/)
grant roles/storage.objectViewer "${BUCKET}" control "${logs}" compute-logs-only
grant roles/storage.objectViewer "${BUCKET}" run "${logs}" compute-logs-only
grant roles/storage.objectCreator "${BUCKET}" run "${logs}" compute-logs-only
for pair in control:dagster-webserver run:dagster-run-worker code:dagster-code-server step:dagster-step \
  serving:image-search-serving; do
  run gcloud iam service-accounts add-iam-policy-binding "$(sa "${pair%%:*}")" \
    --role roles/iam.workloadIdentityUser \
    --member "serviceAccount:${PROJECT_ID}.svc.id.goog[${NAMESPACE}/${pair#*:}]"
done

# Cloud SQL for Postgres on a private IP in PG_RANGE (the chart's bundled Postgres cannot pass
# the namespace's "restricted" profile). Its password is made once, into Secret Manager.
exists gcloud compute addresses describe image-search-sql --global ||
  run gcloud compute addresses create image-search-sql --global --purpose VPC_PEERING \
    --addresses "${PG_RANGE%/*}" --prefix-length "${PG_RANGE#*/}" --network default
run gcloud services vpc-peerings connect --service servicenetworking.googleapis.com \
  --ranges image-search-sql --network default
exists gcloud sql instances describe image-search ||
  run gcloud sql instances create image-search --database-version POSTGRES_16 \
    --region "${REGION}" --tier db-custom-2-7680 --network default --no-assign-ip \
    --availability-type REGIONAL

# Nodes pull the image with their own minimal account.
run gcloud artifacts repositories add-iam-policy-binding "${AR_REPO}" --location "${REGION}" \
  --member "serviceAccount:${NODE_SA}" --role roles/artifactregistry.reader

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
  # The namespace with its Pod Security labels, then the Postgres password as a Kubernetes
  # Secret (read by every pod through a secretKeyRef; never a --set-string or plain env).
  kubectl apply -f "$(dirname "$0")/policy/namespace.yaml"
  [[ "${GPU_CLASSES}" == "true" ]] && kubectl apply -f "$(dirname "$0")/gpu/compute-classes.yaml"
  gcloud secrets versions access latest --secret dagster-pg-password |
    kubectl -n "${NAMESPACE}" create secret generic dagster-postgresql-secret \
      --from-file=postgresql-password=/dev/stdin --dry-run=client -o yaml | kubectl apply -f -
fi
echo "Cluster ${CLUSTER} is ready in ${REGION} (${NODE_LOCATIONS}); bucket gs://${BUCKET}."

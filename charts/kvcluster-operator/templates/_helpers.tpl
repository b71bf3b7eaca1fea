{{/* Chart name, truncated for label values. */}}
{{- define "kvop.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: <release>-<chart>, or the release name when it already holds the chart name. */}}
{{- define "kvop.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "kvop.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "kvop.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kvop.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "kvop.labels" -}}
helm.sh/chart: {{ include "kvop.chart" . }}
{{ include "kvop.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: kvcluster
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "kvop.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kvop.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "kvop.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "kvop.peeringName" -}}
{{- default (include "kvop.fullname" .) .Values.peering.name }}
{{- end }}

{{/* Namespaces watched in the namespaced scope: the list, or the release namespace. */}}
{{- define "kvop.watchNamespaces" -}}
{{- if .Values.watch.namespaces }}
{{- join "," (uniq .Values.watch.namespaces) }}
{{- else }}
{{- .Release.Namespace }}
{{- end }}
{{- end }}

{{/*
The KVCluster CRD is the file crds/kvclusters.yaml (a copy of operator/kvoperator/crd.yaml):
group, plural and served version come from it, so RBAC and the example follow the CRD.
*/}}
{{- define "kvop.crd" -}}
{{- $crd := .Files.Get "crds/kvclusters.yaml" | fromYaml }}
{{- if not $crd.spec }}
{{- fail "crds/kvclusters.yaml is missing or not a CRD: run scripts/render-install.sh" }}
{{- end }}
{{- toJson $crd }}
{{- end }}

{{- define "kvop.crdGroup" -}}
{{- (include "kvop.crd" . | fromJson).spec.group }}
{{- end }}

{{- define "kvop.crdPlural" -}}
{{- (include "kvop.crd" . | fromJson).spec.names.plural }}
{{- end }}

{{- define "kvop.crdKind" -}}
{{- (include "kvop.crd" . | fromJson).spec.names.kind }}
{{- end }}

{{/* group/version of the storage version. */}}
{{- define "kvop.crdApiVersion" -}}
{{- $crd := include "kvop.crd" . | fromJson }}
{{- $version := "" }}
{{- range $crd.spec.versions }}
{{- if .storage }}{{ $version = .name }}{{ end }}
{{- end }}
{{- printf "%s/%s" $crd.spec.group $version }}
{{- end }}

{{/*
What the operator does to the objects of one watched scope. Granted by a ClusterRole
(scope cluster) or by a Role in each watched namespace (scope namespaced).
*/}}
{{- define "kvop.workloadRules" -}}
# The KVCluster resources: watch them, keep kopf's finalizer and progress annotations,
# write the status. `kvclusters/finalizers: update` lets the owner references of the
# objects below block the owner's deletion (OwnerReferencesPermissionEnforcement).
- apiGroups: [{{ include "kvop.crdGroup" . | quote }}]
  resources: [{{ include "kvop.crdPlural" . | quote }}]
  verbs: [get, list, watch, patch]
- apiGroups: [{{ include "kvop.crdGroup" . | quote }}]
  resources: [{{ printf "%s/status" (include "kvop.crdPlural" .) | quote }}]
  verbs: [get, patch]
- apiGroups: [{{ include "kvop.crdGroup" . | quote }}]
  resources: [{{ printf "%s/finalizers" (include "kvop.crdPlural" .) | quote }}]
  verbs: [update]
# What a KVCluster is made of. The operator reads, creates and patches them; it never
# deletes: they carry owner references and the garbage collector removes them.
- apiGroups: [apps]
  resources: [statefulsets]
  verbs: [get, create, patch]
- apiGroups: [""]
  resources: [services, configmaps]
  verbs: [get, create, patch]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [get, create, patch]
# The auth Secret is generated once and never changed.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, create]
# Volumes grow with spec.storage.size.
- apiGroups: [""]
  resources: [persistentvolumeclaims]
  verbs: [get, patch]
# Scheduled backups (a CronJob) and restore-on-create (a Job); their pods' termination
# messages carry each run's result.
- apiGroups: [batch]
  resources: [cronjobs]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, watch, create]
# A rolling upgrade deletes one node pod at a time (the StatefulSet uses OnDelete).
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch, delete]
# kopf and the operator report progress and errors as events.
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
{{- end }}

{{/*
The labels the operator puts on every KVCluster's headless Service (kvoperator/resources.py,
services.py): tests/deploy/test_monitoring.py builds that Service and checks this selector.
*/}}
{{- define "kvop.nodeServiceSelector" -}}
app.kubernetes.io/name: kvcluster
app.kubernetes.io/component: peers
app.kubernetes.io/managed-by: kvcluster-operator
{{- end }}

{{/* Where the ServiceMonitor looks for KVClusters: the list, the watched namespaces, or all. */}}
{{- define "kvop.monitorNamespaceSelector" -}}
{{- if .Values.metrics.serviceMonitor.namespaces }}
matchNames:
  {{- toYaml (uniq .Values.metrics.serviceMonitor.namespaces) | nindent 2 }}
{{- else if eq .Values.watch.scope "namespaced" }}
matchNames:
  {{- toYaml (splitList "," (include "kvop.watchNamespaces" .)) | nindent 2 }}
{{- else }}
any: true
{{- end }}
{{- end }}

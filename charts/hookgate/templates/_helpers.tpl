{{/* Name of the chart, for labels. */}}
{{- define "hookgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: the prefix of every object of the release. */}}
{{- define "hookgate.fullname" -}}
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

{{- define "hookgate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "hookgate.labels" -}}
helm.sh/chart: {{ include "hookgate.chart" . }}
app.kubernetes.io/name: {{ include "hookgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: hookgate
{{- end }}

{{/* Selector of the operator's pods (never changes across upgrades). */}}
{{- define "hookgate.operatorSelectorLabels" -}}
app.kubernetes.io/name: {{ include "hookgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "hookgate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "hookgate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "hookgate.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "hookgate.redisName" -}}
{{- printf "%s-redis" (include "hookgate.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Namespace for an optional monitoring object: its own value or the release namespace. */}}
{{- define "hookgate.namespaceOr" -}}
{{- default .root.Release.Namespace .namespace }}
{{- end }}

{{/*
What the operator may do in a namespace it watches: read its resources and write their
status; own the children of each gateway; post Events. Shared by the ClusterRole
(cluster-wide mode) and the Role in each watched namespace.
*/}}
{{- define "hookgate.namespacedRules" -}}
- apiGroups: [hookgate.io]
  resources: [webhookgateways, webhookendpoints, subscriptions, webhooksources]
  verbs: [get, list, watch, patch]
- apiGroups: [hookgate.io]
  resources: [webhookgateways/status, webhookendpoints/status, subscriptions/status, webhooksources/status]
  verbs: [get, patch, update]
# Children of each gateway. The operator lists and watches all of these (keeping in memory
# only its children and the Secrets objects refer to); it writes the gateway's config shards
# (keys in Secrets) and generated endpoint secrets, and deletes the shards of old versions.
- apiGroups: [""]
  resources: [configmaps, secrets, services, serviceaccounts]
  verbs: [get, list, watch, create, patch, update, delete]
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch, update, delete]
- apiGroups: [apps]
  resources: [deployments/scale]
  verbs: [get, patch, update]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [get, list, watch, create, patch, update, delete]
# The deliverers' Role (read their gateway's ConfigMap and Secret) and its binding. RBAC
# lets the operator grant that only because it holds the same rights above.
- apiGroups: [rbac.authorization.k8s.io]
  resources: [roles, rolebindings]
  verbs: [get, list, watch, create, patch, update, delete]
# Gateways with autoscaling.mode KEDA; harmless where KEDA is not installed.
- apiGroups: [keda.sh]
  resources: [scaledobjects, triggerauthentications]
  verbs: [get, list, watch, create, patch, update, delete]
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end }}

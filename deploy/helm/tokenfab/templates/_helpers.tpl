{{/* Names, labels and shared fragments. */}}

{{- define "tokenfab.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tokenfab.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "tokenfab.labels" -}}
app.kubernetes.io/name: {{ include "tokenfab.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "tokenfab.selector" -}}
app.kubernetes.io/name: {{ include "tokenfab.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "tokenfab.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "tokenfab.agentImage" -}}
{{- $repo := default .Values.image.repository .Values.agents.image.repository -}}
{{- $tag := default (default .Chart.AppVersion .Values.image.tag) .Values.agents.image.tag -}}
{{- printf "%s:%s" $repo $tag -}}
{{- end -}}

{{- define "tokenfab.serviceAccount" -}}
{{- if .Values.serviceAccount.create -}}{{ include "tokenfab.fullname" . }}{{- else -}}default{{- end -}}
{{- end -}}

{{- define "tokenfab.etcdEndpoint" -}}
{{- if .Values.etcd.bundled.enabled -}}
{{- printf "%s-etcd:2379" (include "tokenfab.fullname" .) -}}
{{- else -}}
{{- join "," .Values.etcd.external.endpoints -}}
{{- end -}}
{{- end -}}

{{- define "tokenfab.tlsSecret" -}}
{{- if .Values.tls.existingSecret -}}{{ .Values.tls.existingSecret }}{{- else -}}{{ include "tokenfab.fullname" . }}-tls{{- end -}}
{{- end -}}

{{- define "tokenfab.grpcAddress" -}}
{{- printf "%s:%d" (include "tokenfab.fullname" .) (int .Values.controlPlane.grpcPort) -}}
{{- end -}}

{{/* The container securityContext of every Tokenfab container that needs no host device. */}}
{{- define "tokenfab.restricted" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
{{- end -}}

{{- define "tokenfab.rayClusters" -}}
{{- $clusters := list -}}
{{- range .Values.ray.clusters -}}
{{- $clusters = append $clusters (dict "name" .name "address" .address) -}}
{{- end -}}
{{- if .Values.ray.kuberay.enabled -}}
{{- $clusters = append $clusters (dict "name" .Values.cluster.name "address" (printf "%s-ray-head-svc:6379" (include "tokenfab.fullname" .))) -}}
{{- end -}}
{{- toJson $clusters -}}
{{- end -}}

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

{{/*
Where certificates come from: "off" (tls.enabled=false: plaintext, servers run with --insecure),
"certManager" (tls.source=certManager, or auto and the cert-manager.io/v1 API is installed) or
"generate" (the chart's pre-install/pre-upgrade Job, files/certgen.py).
*/}}
{{- define "tokenfab.tlsMode" -}}
{{- if not .Values.tls.enabled -}}off
{{- else if eq .Values.tls.source "certManager" -}}certManager
{{- else if eq .Values.tls.source "generate" -}}generate
{{- else if .Capabilities.APIVersions.Has "cert-manager.io/v1" -}}certManager
{{- else -}}generate
{{- end -}}
{{- end -}}

{{/*
Every certificate of the release, one per component (JSON list), so that the cert-manager
Certificates, the generating Job and the pods that mount them agree on names and identities:
  secret      the Secret holding tls.crt, tls.key and ca.crt (mounted by that component only)
  component   controlplane | executor | agent | gateway | etcd | etcd-client (the control plane's
              and the gateway's etcd clients: one certificate and key each, by subject)
              | client (a transport certificate for people's tools, mounted by no pod: the CLI
              through kubectl port-forward; rights come from the bearer token)
  ca          workload (Tokenfab's gRPC identities) | etcd (a separate CA: a workload certificate
              is never an etcd credential)
  uris, dns, ips, usages, commonName, subject (cluster or node name where one applies)
Identities (docs/design/security.md): spiffe://tokenfab/controlplane/<release fullname>,
spiffe://tokenfab/executor/<cluster>, spiffe://tokenfab/node/<node>,
spiffe://tokenfab/gateway/<release fullname>.
*/}}
{{- define "tokenfab.certificates" -}}
{{- $full := include "tokenfab.fullname" . -}}
{{- $ns := .Release.Namespace -}}
{{- $certs := list -}}
{{- $svc := list $full (printf "%s.%s" $full $ns) (printf "%s.%s.svc" $full $ns) (printf "%s.%s.svc.cluster.local" $full $ns) -}}
{{- $certs = append $certs (dict "secret" (printf "%s-controlplane-tls" $full) "component" "controlplane" "subject" $full "ca" "workload" "commonName" $full "uris" (list (printf "spiffe://tokenfab/controlplane/%s" $full)) "dns" $svc "ips" list "usages" (list "server auth" "client auth")) -}}
{{- range (include "tokenfab.rayClusters" . | fromJsonArray) -}}
{{- $name := printf "%s-executor-%s" $full .name -}}
{{- $dns := list $name (printf "%s.%s" $name $ns) (printf "%s.%s.svc" $name $ns) (printf "%s.%s.svc.cluster.local" $name $ns) -}}
{{- $certs = append $certs (dict "secret" (printf "%s-tls" $name) "component" "executor" "subject" .name "ca" "workload" "commonName" $name "uris" (list (printf "spiffe://tokenfab/executor/%s" .name)) "dns" $dns "ips" list "usages" (list "server auth")) -}}
{{- end -}}
{{- if eq .Values.agents.identity.source "nodes" -}}
{{- range $vendor := list "nvidia" "ascend" "metax" "biren" -}}
{{- $v := index $.Values.agents $vendor -}}
{{- if $v.enabled -}}
{{- range $v.nodes -}}
{{- $certs = append $certs (dict "secret" (printf "%s-node-%s-tls" $full .) "component" "agent" "subject" . "ca" "workload" "commonName" . "uris" (list (printf "spiffe://tokenfab/node/%s" .)) "dns" list "ips" list "usages" (list "client auth")) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if .Values.gateway.enabled -}}
{{- $gw := printf "%s-gateway" $full -}}
{{- $gwDNS := list $gw (printf "%s.%s" $gw $ns) (printf "%s.%s.svc" $gw $ns) (printf "%s.%s.svc.cluster.local" $gw $ns) -}}
{{- with .Values.gateway.publicUrl -}}
{{- $host := (urlParse .).host | splitList ":" | first -}}
{{- if and $host (not (has $host $gwDNS)) -}}{{- $gwDNS = append $gwDNS $host -}}{{- end -}}
{{- end -}}
{{- $certs = append $certs (dict "secret" (printf "%s-tls" $gw) "component" "gateway" "subject" $full "ca" "workload" "commonName" $gw "uris" (list (printf "spiffe://tokenfab/gateway/%s" $full)) "dns" $gwDNS "ips" list "usages" (list "server auth")) -}}
{{- end -}}
{{- range .Values.tls.clients -}}
{{- $certs = append $certs (dict "secret" (printf "%s-client-%s-tls" $full .) "component" "client" "subject" . "ca" "workload" "commonName" . "uris" (list (printf "spiffe://tokenfab/client/%s" .)) "dns" list "ips" list "usages" (list "client auth")) -}}
{{- end -}}
{{- if .Values.etcd.bundled.enabled -}}
{{- $etcd := printf "%s-etcd" $full -}}
{{- $peer := printf "%s-etcd-peer" $full -}}
{{- $dns := list $etcd (printf "%s.%s" $etcd $ns) (printf "%s.%s.svc" $etcd $ns) (printf "%s.%s.svc.cluster.local" $etcd $ns) (printf "*.%s.%s.svc" $peer $ns) (printf "*.%s.%s.svc.cluster.local" $peer $ns) "localhost" -}}
{{- $certs = append $certs (dict "secret" (printf "%s-tls" $etcd) "component" "etcd" "subject" $etcd "ca" "etcd" "commonName" $etcd "uris" list "dns" $dns "ips" (list "127.0.0.1") "usages" (list "server auth" "client auth")) -}}
{{- $certs = append $certs (dict "secret" (printf "%s-client-tls" $etcd) "component" "etcd-client" "subject" $full "ca" "etcd" "commonName" "tokenfab-controlplane" "uris" (list (printf "spiffe://tokenfab/controlplane/%s" $full)) "dns" list "ips" list "usages" (list "client auth")) -}}
{{- if .Values.gateway.enabled -}}
{{- $certs = append $certs (dict "secret" (printf "%s-gateway-client-tls" $etcd) "component" "etcd-client" "subject" (printf "%s-gateway" $full) "ca" "etcd" "commonName" "tokenfab-gateway" "uris" (list (printf "spiffe://tokenfab/gateway/%s" $full)) "dns" list "ips" list "usages" (list "client auth")) -}}
{{- end -}}
{{- end -}}
{{- toJson $certs -}}
{{- end -}}

{{/* The Secret of one component's certificate: (dict "root" $ "component" C "subject" S). */}}
{{- define "tokenfab.certSecret" -}}
{{- $found := "" -}}
{{- range (include "tokenfab.certificates" .root | fromJsonArray) -}}
{{- if and (eq .component $.component) (eq .subject $.subject) -}}{{ $found = .secret }}{{- end -}}
{{- end -}}
{{- required (printf "no certificate for %s %s" .component .subject) $found -}}
{{- end -}}

{{/* The base URL tenants are told (capacity requests' endpoint): gateway.publicUrl, or the
gateway Service inside the cluster. */}}
{{- define "tokenfab.gatewayUrl" -}}
{{- $gw := .Values.gateway -}}
{{- default (printf "https://%s-gateway.%s.svc:%d/v1" (include "tokenfab.fullname" .) .Release.Namespace (int $gw.port)) $gw.publicUrl -}}
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

{{/* The KubeRay head's ports: Ray's defaults, and fixed ports for the head's own raylet so that
its NetworkPolicy can name every port it admits. */}}
{{- define "tokenfab.rayHeadPorts" -}}
{{- toJson (dict "gcs" 6379 "dashboard" 8265 "client" 10001 "nodeManager" 6380 "objectManager" 6381 "metrics" 8080) -}}
{{- end -}}

{{/* Every Ray cluster with its executor: ray.clusters and the KubeRay one (named cluster.name).
A name given twice would render two executors (Deployment, Service, certificate) of one name. */}}
{{- define "tokenfab.rayClusters" -}}
{{- $clusters := list -}}
{{- $seen := dict -}}
{{- range .Values.ray.clusters -}}
{{- if hasKey $seen .name -}}
{{- fail (printf "ray.clusters: the name %q is given twice (each Ray cluster has one executor)" .name) -}}
{{- end -}}
{{- $_ := set $seen .name true -}}
{{- $clusters = append $clusters (dict "name" .name "address" .address) -}}
{{- end -}}
{{- if .Values.ray.kuberay.enabled -}}
{{- if hasKey $seen .Values.cluster.name -}}
{{- fail (printf "ray.clusters: %q is also cluster.name, whose Ray cluster ray.kuberay renders; remove it from ray.clusters or disable ray.kuberay" .Values.cluster.name) -}}
{{- end -}}
{{- $clusters = append $clusters (dict "name" .Values.cluster.name "address" (printf "%s-ray-head-svc:6379" (include "tokenfab.fullname" .))) -}}
{{- end -}}
{{- range $clusters -}}
{{- $svc := printf "%s-executor-%s" (include "tokenfab.fullname" $) .name -}}
{{- if gt (len $svc) 63 -}}
{{- fail (printf "ray.clusters / cluster.name: the executor Service of Ray cluster %q would be named %q, longer than the 63 characters a Service name may have; shorten the cluster name or the release name" .name $svc) -}}
{{- end -}}
{{- end -}}
{{- toJson $clusters -}}
{{- end -}}

{{- define "cnflow.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "cnflow.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "cnflow.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "cnflow.labels" -}}
app.kubernetes.io/name: {{ include "cnflow.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "cnflow.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "cnflow.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "cnflow.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Render a map of env vars, skipping empty values so the binary's defaults apply. */}}
{{- define "cnflow.envMap" -}}
{{- range $k, $v := . }}
{{- if ne (toString $v) "" }}
- name: {{ $k }}
  value: {{ toString $v | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/*
"true" when the gateway counts the service graph from joined pairs
(gateway.env.CNFLOW_GATEWAY_SERVICE_GRAPH=true): agents then leave cross-node
edges to it (CNFLOW_SERVICE_GRAPH_METRICS=gateway). Fails on settings that
would count edges twice or never.
*/}}
{{- define "cnflow.gatewayServiceGraph" -}}
{{- $gw := .Values.gateway.env | default dict -}}
{{- if and .Values.gateway.enabled (eq (toString (get $gw "CNFLOW_GATEWAY_SERVICE_GRAPH")) "true") -}}
{{- if has (toString (get $gw "CNFLOW_GATEWAY_STITCH_WINDOW_MS")) (list "" "0") -}}
{{- fail "gateway.env.CNFLOW_GATEWAY_SERVICE_GRAPH=true needs gateway.env.CNFLOW_GATEWAY_STITCH_WINDOW_MS (the edges come from the joined pairs)" -}}
{{- end -}}
{{- $agent := toString (get (.Values.agent.env | default dict) "CNFLOW_SERVICE_GRAPH_METRICS") -}}
{{- if not (has $agent (list "" "gateway")) -}}
{{- fail (printf "gateway.env.CNFLOW_GATEWAY_SERVICE_GRAPH=true needs agent.env.CNFLOW_SERVICE_GRAPH_METRICS unset or \"gateway\" (got %q: true would count cross-node edges twice, false would leave the gateway nothing to count)" $agent) -}}
{{- end -}}
true
{{- end -}}
{{- end -}}

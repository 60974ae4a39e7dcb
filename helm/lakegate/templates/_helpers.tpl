{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "lakegate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name of the release's resources. */}}
{{- define "lakegate.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "lakegate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels that select the pods (never change them on upgrade: selectors are immutable). */}}
{{- define "lakegate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lakegate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "lakegate.labels" -}}
helm.sh/chart: {{ include "lakegate.chart" . }}
{{ include "lakegate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: proxy
app.kubernetes.io/part-of: lakegate
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "lakegate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "lakegate.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "lakegate.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* Fixed paths inside the pod. */}}
{{- define "lakegate.dataDir" -}}/var/lib/lakegate{{- end -}}
{{- define "lakegate.policyDir" -}}/etc/lakegate/policies{{- end -}}
{{- define "lakegate.auditDir" -}}/var/lib/lakegate-audit{{- end -}}
{{- define "lakegate.tlsDir" -}}/etc/lakegate/tls{{- end -}}

{{- define "lakegate.policiesConfigMap" -}}
{{- default (printf "%s-policies" (include "lakegate.fullname" .)) .Values.policies.existingConfigMap -}}
{{- end -}}

{{/* Whether a listener ("control", "s3", "sql") serves TLS. Renders "true" or nothing. */}}
{{- define "lakegate.tlsOn" -}}
{{- if and .root.Values.tls.enabled (index .root.Values.tls.listeners .listener) -}}true{{- end -}}
{{- end -}}

{{/*
A value as a TOML literal: strings (JSON escapes are valid TOML basic-string escapes), booleans, integers
(YAML numbers arrive as float64; whole ones are written without a fraction, as Lakegate's integer keys need),
arrays and inline tables (keys sorted). Anything else fails the render.
*/}}
{{- define "lakegate.toml" -}}
{{- $v := . -}}
{{- if kindIs "string" $v -}}
{{- toJson $v -}}
{{- else if kindIs "bool" $v -}}
{{- $v -}}
{{- else if kindIs "float64" $v -}}
{{- if eq $v (floor $v) }}{{ int64 $v }}{{ else }}{{ $v }}{{ end -}}
{{- else if or (kindIs "int" $v) (kindIs "int64" $v) -}}
{{- $v -}}
{{- else if kindIs "slice" $v -}}
[{{ range $i, $e := $v }}{{ if $i }}, {{ end }}{{ include "lakegate.toml" $e }}{{ end }}]
{{- else if kindIs "map" $v -}}
{{ "{" }}{{ range $i, $k := keys $v | sortAlpha }}{{ if $i }},{{ end }} {{ toJson $k }} = {{ include "lakegate.toml" (index $v $k) }}{{ end }} {{ "}" }}
{{- else -}}
{{- fail (printf "lakegate: cannot write %v (%s) as TOML" $v (kindOf $v)) -}}
{{- end -}}
{{- end -}}
